"""A marker in Redis.

Key layout: `{prefix}:{network}:{date}:{window_days}:{step}`, for example
`sot_ingestion:ethereum:2024-10-30:195:cleanup`; the validation steps add the
worker's host, `…:validate:{host}`, as they vouch for that host's download.
The value is the token the marker vouches for (for the validation steps, the
id of the download they checked), so a marker whose token no longer matches
counts as absent."""
import datetime as dt
from collections.abc import Sequence
from typing import cast

import luigi
from redis import Redis

DEFAULT_PREFIX = "sot_ingestion"


def marker_key(network: str, date: dt.date, window_days: int, step: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:{network}:{date.isoformat()}:{int(window_days)}:{step}"


class RedisMarkerTarget(luigi.Target):
    def __init__(self, redis: Redis, key: str, token: str | None = "done") -> None:
        self.redis = redis
        self.key = key
        self.token = token

    def exists(self) -> bool:
        # bytes: the client does not decode responses (redis-py types them bytes | str)
        return self._vouches(cast("bytes | None", self.redis.get(self.key)) if self.token is not None else None)

    def _vouches(self, value: bytes | None) -> bool:
        # a token of None: what the marker vouches for is gone
        return self.token is not None and value is not None and value.decode() == self.token

    @staticmethod
    def exist_all(targets: Sequence["RedisMarkerTarget"]) -> list[bool]:
        """exists() of several markers on one server, in one round trip."""
        if not targets:
            return []
        values = cast("list[bytes | None]", targets[0].redis.mget([t.key for t in targets]))  # not decoded
        return [t._vouches(v) for t, v in zip(targets, values)]

    def touch(self) -> None:
        # a token of None (the download gone meanwhile) is left to redis-py to refuse, with a DataError (a RedisError)
        self.redis.set(self.key, self.token)  # type: ignore[arg-type]

    def remove(self) -> bool:
        """Returns whether there was a marker to remove."""
        return bool(self.redis.delete(self.key))

    def __repr__(self) -> str:
        return f"RedisMarkerTarget({self.key!r})"
