"""Settings: every variable of the contract's section 3, read from the
environment and a `.env` file, validated before any I/O."""
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from dotenv import load_dotenv
from redis.connection import parse_url as parse_redis_url

NETWORK_NAME = re.compile(r"[a-z0-9_]+")

DEFAULTS = {
    "REDIS_URL": "",
    "REDIS_HOST": "localhost",
    "REDIS_PORT": "6379",
    "REDIS_DB": "0",
    "CLICKHOUSE_HOST": "localhost",
    "CLICKHOUSE_PORT": "",  # 9000, or 9440 with CLICKHOUSE_SECURE=1
    "CLICKHOUSE_USER": "default",
    "CLICKHOUSE_PASSWORD": "",
    "CLICKHOUSE_DATABASE": "risk_assessment_{network}",
    "CLICKHOUSE_SECURE": "0",
    "CLICKHOUSE_CA_CERTS": "",
    "CLICKHOUSE_VERIFY": "1",
    "CLICKHOUSE_CLUSTER": "",  # none: one server, plain MergeTree
    "SOT_URL": "",
    "SOT_LABELS_URL": "",  # address-labels/ beside SOT_URL's folder
    "SOT_S3_ENDPOINT": "",  # AWS
    "SOT_S3_REGION": "us-east-1",
    "SOT_S3_ANONYMOUS": "0",
    "SOT_RETRY_DELAY": "1",  # seconds before the first retry of a failed read from the store, doubled each time
    "SOT_HOST": "localhost",
    "SOT_PORT": "",  # 9000, or 9440 with SOT_SECURE=1
    "SOT_DATABASE": "sot_{network}",
    "SOT_USER": "default",
    "SOT_PASSWORD": "",
    "SOT_SECURE": "0",
    "SOT_DOWNLOAD_DIR": "/tmp/sot_data",
    "INGESTION_WORKER_HOST": "",  # this machine's host name
    "INGESTION_NETWORKS": "ethereum,bitcoin,torus",
    "INGESTION_WINDOW_DAYS": "195",
    "INGESTION_RETRY_ATTEMPTS": "3",
    "INGESTION_RETRY_DELAY": "300",
    "INGESTION_ALLOW_EMPTY_DAY": "0",
    "INGESTION_CONNECT_TIMEOUT": "10",
    "INGESTION_COMPRESSION": "auto",
    "ALERT_WEBHOOK_URL": "",
    "INGESTION_METRICS_TEXTFILE": "",  # none
    "PROMETHEUS_PUSHGATEWAY_URL": "",  # none
}


LUIGI_DEFAULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "luigi.cfg")

# luigi settings that the environment gives when the variable is set, and
# what they are when it is not (luigi's defaults, or the package's luigi.cfg)
LUIGI_FROM_ENVIRONMENT = {
    ("core", "scheduler_url"): ("LUIGI_SCHEDULER_URL", "http://localhost:8082/"),
    ("scheduler", "retry_delay"): ("INGESTION_RETRY_DELAY", DEFAULTS["INGESTION_RETRY_DELAY"]),
    ("core", "log_level"): ("INGESTION_LOG_LEVEL", "INFO"),
    ("email", "receiver"): ("ALERT_EMAIL_TO", ""),
    ("email", "sender"): ("ALERT_EMAIL_FROM", "sot-ingestion@localhost"),
    ("smtp", "host"): ("SMTP_HOST", "localhost"),
    ("smtp", "port"): ("SMTP_PORT", "25"),
}


class ConfigError(ValueError):
    """A setting has a value the pipeline cannot run with; the message names it."""


def require_sot_url(settings: "Settings") -> None:
    """The steps read the SOT store; commands that only look or write elsewhere do not need it."""
    if not settings.sot_url:
        raise ConfigError("SOT_URL is not set: give the SOT snapshot store as a path, file://, s3:// or"
                          " clickhouse:// URL")


@dataclass(frozen=True)
class Settings:
    redis_url: str
    clickhouse_replicas: tuple  # ((host, port), ...): the first, then the others in turn when it is down
    clickhouse_user: str
    clickhouse_password: str
    clickhouse_database: str
    clickhouse_secure: bool
    clickhouse_ca_certs: str
    clickhouse_verify: bool
    clickhouse_cluster: str
    sot_url: str
    sot_labels_url: str
    sot_s3_endpoint: str
    sot_s3_region: str
    sot_s3_anonymous: bool
    sot_retry_delay: float
    sot_host: str
    sot_port: int
    sot_database: str
    sot_user: str
    sot_password: str
    sot_secure: bool
    download_dir: str
    worker_host: str
    networks: tuple
    window_days: int
    retry_attempts: int
    retry_delay: int
    allow_empty_day: bool
    connect_timeout: int
    compression: str | None
    alert_webhook_url: str
    metrics_textfile: str
    pushgateway_url: str

    @property
    def clickhouse_port(self) -> int:
        return self.clickhouse_replicas[0][1]

    @property
    def clickhouse_address(self) -> str:
        """The replicas as host:port, for messages."""
        return ", ".join(f"{host}:{port}" for host, port in self.clickhouse_replicas)

    def database_for(self, network: str) -> str:
        return self.clickhouse_database.replace("{network}", check_network(network))

    def sot_database_for(self, network: str) -> str:
        return self.sot_database.replace("{network}", check_network(network))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Reads `environ` (default: the process environment after loading
        `.env` from the working directory, which never overrides it). SOT_URL
        may be unset here: only the steps read the store (require_sot_url)."""
        if environ is None:
            load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)
            environ = os.environ
        env = {name: environ.get(name, default).strip() for name, default in DEFAULTS.items()}
        networks = tuple(n.strip() for n in env["INGESTION_NETWORKS"].split(",") if n.strip())
        if not networks:
            raise ConfigError("INGESTION_NETWORKS is empty")
        for network in networks:
            check_network(network, variable="INGESTION_NETWORKS")
        _one_database_per_network(env["CLICKHOUSE_DATABASE"], networks)
        _check_scheduler_url(environ)
        secure, sot_secure = _flag(env, "CLICKHOUSE_SECURE"), _flag(env, "SOT_SECURE")
        return cls(
            redis_url=_redis_url(env) if env["REDIS_URL"] else _redis_url_from_parts(env),
            clickhouse_replicas=_replicas(env, _integer(env, "CLICKHOUSE_PORT", 1, 65535) if env["CLICKHOUSE_PORT"]
                                          else (9440 if secure else 9000)),
            clickhouse_user=env["CLICKHOUSE_USER"],
            clickhouse_password=env["CLICKHOUSE_PASSWORD"],
            clickhouse_database=_database_template(env, "CLICKHOUSE_DATABASE"),
            clickhouse_secure=secure,
            clickhouse_ca_certs=env["CLICKHOUSE_CA_CERTS"],
            clickhouse_verify=_flag(env, "CLICKHOUSE_VERIFY"),
            clickhouse_cluster=_name(env, "CLICKHOUSE_CLUSTER"),
            sot_url=_store_url(env, "SOT_URL"),
            sot_labels_url=_store_url(env, "SOT_LABELS_URL"),
            sot_s3_endpoint=_http_url(env, "SOT_S3_ENDPOINT"),
            sot_s3_region=env["SOT_S3_REGION"],
            sot_s3_anonymous=_flag(env, "SOT_S3_ANONYMOUS"),
            sot_retry_delay=_seconds(env, "SOT_RETRY_DELAY", 0.01, 600),
            sot_host=env["SOT_HOST"],
            sot_port=_integer(env, "SOT_PORT", 1, 65535) if env["SOT_PORT"] else (9440 if sot_secure else 9000),
            sot_database=_database_template(env, "SOT_DATABASE"),
            sot_user=env["SOT_USER"],
            sot_password=env["SOT_PASSWORD"],
            sot_secure=sot_secure,
            download_dir=env["SOT_DOWNLOAD_DIR"],
            worker_host=_name(env, "INGESTION_WORKER_HOST") or socket.gethostname(),
            networks=networks,
            window_days=_integer(env, "INGESTION_WINDOW_DAYS", 1, 65535),
            retry_attempts=_integer(env, "INGESTION_RETRY_ATTEMPTS", 1, 1000),
            retry_delay=_integer(env, "INGESTION_RETRY_DELAY", 0, 86400),
            allow_empty_day=_flag(env, "INGESTION_ALLOW_EMPTY_DAY"),
            connect_timeout=_integer(env, "INGESTION_CONNECT_TIMEOUT", 1, 3600),
            compression=_compression(env),
            alert_webhook_url=_http_url(env, "ALERT_WEBHOOK_URL"),
            metrics_textfile=env["INGESTION_METRICS_TEXTFILE"],
            pushgateway_url=_server_url(env, "PROMETHEUS_PUSHGATEWAY_URL"),
        )


def known_network(name: str, settings: "Settings", remedy: str = "") -> str:
    """A network of INGESTION_NETWORKS: a typo must not be taken for a new
    network (and a new database). `remedy` ends the message."""
    check_network(name)
    if name not in settings.networks:
        raise ConfigError(f"network {name!r} is not in INGESTION_NETWORKS ({', '.join(settings.networks)}){remedy}")
    return name


def network_of_its_own(name: str, settings: "Settings") -> str:
    """A network whose day replaces no other network's rows: one of
    INGESTION_NETWORKS, or any where each network has its database."""
    check_network(name)
    _one_database_per_network(settings.clickhouse_database, tuple(dict.fromkeys((*settings.networks, name))))
    return name


def _one_database_per_network(template: str, networks: tuple[str, ...]) -> None:
    """Each network's day replaces the rows of its (processing_date,
    window_days) slice, which carries no network: two networks in one
    table would replace each other's day. Refused, not kept apart."""
    if "{network}" not in template and len(networks) > 1:
        raise ConfigError(f"CLICKHOUSE_DATABASE: {template!r} would put {' and '.join(networks)} into the same"
                          " tables, where each network's day replaces the other's; give {network} in the name")


def check_network(name: str, variable: str = "network") -> str:
    if not isinstance(name, str) or not NETWORK_NAME.fullmatch(name):
        raise ConfigError(f"{variable}: {name!r} is not a network name ([a-z0-9_]+)")
    return name


def _integer(env: dict[str, str], name: str, low: int, high: int) -> int:
    return int(_number(env, name, int, (low, high), "a whole number"))


def _seconds(env: dict[str, str], name: str, low: float, high: float) -> float:
    return _number(env, name, float, (low, high), "a number of seconds")


def _number(env: dict[str, str], name: str, parse: Callable[[str], float], bounds: tuple[float, float],
            kind: str) -> float:
    """`parse` of the variable's text, within `bounds`, or one line naming it."""
    text = env[name]
    try:
        value = parse(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not {kind}") from None
    low, high = bounds
    if not low <= value <= high:
        raise ConfigError(f"{name}: {value:g} is outside {low:g}..{high:g}")
    return value


def _flag(env: dict[str, str], name: str) -> bool:
    text = env[name].lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no", ""):
        return False
    raise ConfigError(f"{name}: {env[name]!r} is not 0 or 1")


def _compression(env: dict[str, str]) -> str | None:
    """lz4, auto (lz4 unless the server is this machine: clients.wire_compression) or None."""
    text = env["INGESTION_COMPRESSION"].lower()
    if text not in ("auto", "lz4", "none"):
        raise ConfigError(f"INGESTION_COMPRESSION: {env['INGESTION_COMPRESSION']!r} is not auto, lz4 or none")
    return None if text == "none" else text


def _replicas(env: dict[str, str], default_port: int) -> tuple[tuple[str, int], ...]:
    """CLICKHOUSE_HOST: host[:port], comma-separated; a host without a port has CLICKHOUSE_PORT's."""
    replicas = []
    for entry in (e.strip() for e in env["CLICKHOUSE_HOST"].split(",")):
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?::([0-9]{1,5}))?", entry)
        if not match or not 0 < int(match[2] or default_port) < 65536:
            shown = NOT_SHOWN if "@" in entry else repr(entry)
            raise ConfigError(f"CLICKHOUSE_HOST: an entry is not host or host:port ({shown})")
        replicas.append((match[1], int(match[2] or default_port)))
    return tuple(replicas)


def _name(env: dict[str, str], variable: str) -> str:
    """A cluster or host name, or empty."""
    name = env[variable]
    if name and not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"{variable}: {name!r} is not a name (letters, digits, _ . -)")
    return name


def _database_template(env: dict[str, str], name: str) -> str:
    template = env[name]
    probe = template.replace("{network}", "x")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", probe):
        raise ConfigError(f"{name}: {template!r} is not a database name (letters, digits, _ and {{network}})")
    return template


NOT_SHOWN = "the value is not shown: it may hold a password or token"


def _redis_url(env: dict[str, str]) -> str:
    """REDIS_URL as redis-py will read it, or one line that shows no part of
    it: a password with an unencoded '/', '@' or ':' moves the host into the
    password, and the URL would show it."""
    url = env["REDIS_URL"]
    parsed = urlsplit(url)
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"REDIS_URL: not a redis://, rediss:// or unix:// URL ({NOT_SHOWN})")
    try:
        parse_redis_url(url)
        parsed.port  # noqa: B018 (raises ValueError when the port is not a number)
        parses = parsed.scheme == "unix" or parsed.hostname is not None
    except ValueError:
        parses = False
    if not parses:
        raise ConfigError("REDIS_URL: does not parse as redis://[:password@]host[:port]/db; percent-encode '/',"
                          f" '@' and ':' in the password ({NOT_SHOWN})")
    return url


def _store_url(env: dict[str, str], name: str) -> str:
    """A snapshot store: a path, file://, s3://bucket/prefix (no credentials
    in it) or, for SOT_URL, clickhouse://."""
    url = env[name]
    parsed = urlsplit(url)
    stores = ("", "file", "s3", "clickhouse") if name == "SOT_URL" else ("", "file", "s3")
    if parsed.scheme not in stores:
        raise ConfigError(f"{name}: {parsed.scheme}:// is not a snapshot store; use a path, file://, s3://"
                          + (" or clickhouse://" if name == "SOT_URL" else ""))
    if parsed.scheme == "s3" and ("@" in parsed.netloc or not parsed.hostname):
        raise ConfigError(f"{name}: give s3://bucket/prefix; credentials go in AWS_ACCESS_KEY_ID and"
                          " AWS_SECRET_ACCESS_KEY (or the AWS credential chain), not in the URL")
    return url


def _http_url(env: dict[str, str], name: str) -> str:
    """An http(s):// URL with a host, or empty."""
    url = env[name]
    if url:
        parsed = urlsplit(url)
        try:
            parsed.port
        except ValueError:
            parsed = parsed._replace(scheme="")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"{name}: not an http:// or https:// URL with a host ({NOT_SHOWN})")
    return url


def _server_url(env: dict[str, str], name: str) -> str:
    """An http(s):// server that may take user:password@ (luigid, a
    Pushgateway), or empty. A password with an unencoded '/', '?', '#' or
    '@' would leave part of it outside the host part, where messages would
    show it: refused, naming the variable alone."""
    url = _http_url(env, name)
    if _at_outside_host_part(url):
        raise ConfigError(f"{name}: does not parse as http(s)://[user:password@]host[:port]/; percent-encode '/',"
                          f" '?', '#' and '@' in the user and password ({NOT_SHOWN})")
    return url


def _check_scheduler_url(environ: Mapping[str, str]) -> None:
    """luigi reads LUIGI_SCHEDULER_URL itself (pipeline.apply_luigi_config);
    checked here too, so that a bad one is one line naming it before luigi
    or scheduler.check_reachable print it."""
    name = "LUIGI_SCHEDULER_URL"
    _server_url({name: environ.get(name, "").strip()}, name)


def _at_outside_host_part(url: str) -> bool:
    """More than one '@', or one past the host part: the user or password
    holds an unencoded '/', '?', '#' or '@'."""
    return url.count("@") > 1 or url.count("@") > urlsplit(url).netloc.count("@")


def without_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """`url` without its user:password@, and them percent-decoded, for an
    Authorization header: left in the URL, urllib takes them for the host,
    and its errors show them."""
    parsed = urlsplit(url)
    userinfo, at, address = parsed.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    return parsed._replace(netloc=address).geturl(), (unquote(user), unquote(password))


def redacted_url(url: str) -> str:
    """`url` as messages show it: its user kept; its password, query and
    fragment (which may hold a token) left out. A URL whose credentials do
    not parse is not shown at all: any part of it may be the password."""
    try:
        parsed = urlsplit(url)
    except ValueError:  # e.g. an unclosed '[' in the host
        return f"(a URL that does not parse; {NOT_SHOWN})"
    if _at_outside_host_part(url):
        return f"(a URL whose credentials do not parse; {NOT_SHOWN})"
    userinfo, at, address = parsed.netloc.rpartition("@")
    return urlunsplit((parsed.scheme, userinfo.partition(":")[0] + at + address, parsed.path, "", ""))


def _redis_url_from_parts(env: dict[str, str]) -> str:
    port = _integer(env, "REDIS_PORT", 1, 65535)
    db = _integer(env, "REDIS_DB", 0, 1_000_000)
    return f"redis://{quote(env['REDIS_HOST'])}:{port}/{db}"
