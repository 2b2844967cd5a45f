"""Marker targets: small classes with exists() and touch(), after
luigi.contrib.redis_store and luigi.contrib.postgres."""
from .clickhouse_marker import ClickHouseMarkerTarget
from .redis_marker import RedisMarkerTarget

__all__ = ["ClickHouseMarkerTarget", "RedisMarkerTarget"]
