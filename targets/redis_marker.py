"""A marker in Redis.

Key layout: `{prefix}:{network}:{date}:{window_days}:{step}`, for example
`sot_ingestion:ethereum:2024-10-30:195:cleanup`; the validation steps add the
worker's host, `…:validate:{host}`, as they vouch for that host's download.
The value is the token the marker vouches for (for the validation steps, the
id of the download they checked), so a marker whose token no longer matches
counts as absent."""
import luigi

DEFAULT_PREFIX = "sot_ingestion"


def marker_key(network, date, window_days, step, prefix=DEFAULT_PREFIX):
    return f"{prefix}:{network}:{date.isoformat()}:{int(window_days)}:{step}"


class RedisMarkerTarget(luigi.Target):
    def __init__(self, redis, key, token="done"):
        self.redis = redis
        self.key = key
        self.token = token

    def exists(self):
        return self._vouches(self.redis.get(self.key) if self.token is not None else None)

    def _vouches(self, value):
        # a token of None: what the marker vouches for is gone
        return self.token is not None and value is not None and value.decode() == self.token

    @staticmethod
    def exist_all(targets):
        """exists() of several markers on one server, in one round trip."""
        if not targets:
            return []
        values = targets[0].redis.mget([t.key for t in targets])
        return [t._vouches(v) for t, v in zip(targets, values)]

    def touch(self):
        self.redis.set(self.key, self.token)

    def remove(self):
        """Returns whether there was a marker to remove."""
        return bool(self.redis.delete(self.key))

    def __repr__(self):
        return f"RedisMarkerTarget({self.key!r})"
