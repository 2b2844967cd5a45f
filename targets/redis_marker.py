"""A marker in Redis.

Key layout: `{prefix}:{network}:{date}:{window_days}:{step}`, for example
`sot_ingestion:ethereum:2024-10-30:195:validate`. The value is the token the
marker vouches for (for the validation steps, the id of the download they
checked), so a marker whose token no longer matches counts as absent."""
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
        if self.token is None:  # what it vouches for is gone
            return False
        value = self.redis.get(self.key)
        return value is not None and value.decode() == self.token

    def touch(self):
        self.redis.set(self.key, self.token)

    def remove(self):
        self.redis.delete(self.key)

    def __repr__(self):
        return f"RedisMarkerTarget({self.key!r})"
