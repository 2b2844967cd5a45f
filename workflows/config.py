"""Settings: every variable of the contract's section 3, read from the
environment and a `.env` file, validated before any I/O."""
import os
import re
from dataclasses import dataclass
from urllib.parse import quote

from dotenv import load_dotenv

NETWORK_NAME = re.compile(r"[a-z0-9_]+")

DEFAULTS = {
    "REDIS_URL": "",
    "REDIS_HOST": "localhost",
    "REDIS_PORT": "6379",
    "REDIS_DB": "0",
    "CLICKHOUSE_HOST": "localhost",
    "CLICKHOUSE_PORT": "9000",
    "CLICKHOUSE_USER": "default",
    "CLICKHOUSE_PASSWORD": "",
    "CLICKHOUSE_DATABASE": "risk_assessment_{network}",
    "CLICKHOUSE_SECURE": "0",
    "SOT_URL": "",
    "SOT_HOST": "",
    "SOT_PORT": "",
    "SOT_DATABASE": "",
    "SOT_USER": "",
    "SOT_PASSWORD": "",
    "SOT_DOWNLOAD_DIR": "/tmp/sot_data",
    "INGESTION_NETWORKS": "ethereum,bitcoin,torus",
    "INGESTION_WINDOW_DAYS": "195",
    "INGESTION_RETRY_ATTEMPTS": "3",
    "INGESTION_RETRY_DELAY": "300",
    "INGESTION_ALLOW_EMPTY_DAY": "0",
    "ALERT_WEBHOOK_URL": "",
}


# Variables that luigi.cfg interpolates, for the workers and luigid alike.
LUIGI_CFG_DEFAULTS = {
    "LUIGI_SCHEDULER_URL": "http://localhost:8082/",
    "INGESTION_RETRY_DELAY": DEFAULTS["INGESTION_RETRY_DELAY"],
    "ALERT_EMAIL_TO": "",
    "ALERT_EMAIL_FROM": "sot-ingestion@localhost",
    "SMTP_HOST": "localhost",
    "SMTP_PORT": "25",
}


def export_luigi_cfg_defaults(environ=os.environ):
    """Loads `.env` and sets the defaults of the variables luigi.cfg reads,
    so that luigi never stops on an unset ${VAR}."""
    load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)
    for name, default in LUIGI_CFG_DEFAULTS.items():
        environ.setdefault(name, default)


class ConfigError(ValueError):
    """A setting has a value the pipeline cannot run with; the message names it."""


@dataclass(frozen=True)
class Settings:
    redis_url: str
    clickhouse_host: str
    clickhouse_port: int
    clickhouse_user: str
    clickhouse_password: str
    clickhouse_database: str
    clickhouse_secure: bool
    sot_url: str
    sot_host: str
    sot_port: int | None
    sot_database: str
    sot_user: str
    sot_password: str
    download_dir: str
    networks: tuple
    window_days: int
    retry_attempts: int
    retry_delay: int
    allow_empty_day: bool
    alert_webhook_url: str

    def database_for(self, network):
        return self.clickhouse_database.replace("{network}", check_network(network))

    @classmethod
    def from_env(cls, environ=None):
        """Reads `environ` (default: the process environment after loading
        `.env` from the working directory, which never overrides it)."""
        if environ is None:
            load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)
            environ = os.environ
        env = {name: environ.get(name, default).strip() for name, default in DEFAULTS.items()}
        if not env["SOT_URL"]:
            raise ConfigError("SOT_URL is not set: give the SOT snapshot store as a path, file:// or s3:// URL")
        networks = tuple(n.strip() for n in env["INGESTION_NETWORKS"].split(",") if n.strip())
        if not networks:
            raise ConfigError("INGESTION_NETWORKS is empty")
        for network in networks:
            check_network(network, variable="INGESTION_NETWORKS")
        return cls(
            redis_url=env["REDIS_URL"] or _redis_url_from_parts(env),
            clickhouse_host=env["CLICKHOUSE_HOST"],
            clickhouse_port=_integer(env, "CLICKHOUSE_PORT", 1, 65535),
            clickhouse_user=env["CLICKHOUSE_USER"],
            clickhouse_password=env["CLICKHOUSE_PASSWORD"],
            clickhouse_database=_database_template(env["CLICKHOUSE_DATABASE"]),
            clickhouse_secure=_flag(env, "CLICKHOUSE_SECURE"),
            sot_url=env["SOT_URL"],
            sot_host=env["SOT_HOST"],
            sot_port=_integer(env, "SOT_PORT", 1, 65535) if env["SOT_PORT"] else None,
            sot_database=env["SOT_DATABASE"],
            sot_user=env["SOT_USER"],
            sot_password=env["SOT_PASSWORD"],
            download_dir=env["SOT_DOWNLOAD_DIR"],
            networks=networks,
            window_days=_integer(env, "INGESTION_WINDOW_DAYS", 1, 65535),
            retry_attempts=_integer(env, "INGESTION_RETRY_ATTEMPTS", 1, 1000),
            retry_delay=_integer(env, "INGESTION_RETRY_DELAY", 0, 86400),
            allow_empty_day=_flag(env, "INGESTION_ALLOW_EMPTY_DAY"),
            alert_webhook_url=env["ALERT_WEBHOOK_URL"],
        )


def check_network(name, variable="network"):
    if not isinstance(name, str) or not NETWORK_NAME.fullmatch(name):
        raise ConfigError(f"{variable}: {name!r} is not a network name ([a-z0-9_]+)")
    return name


def _integer(env, name, low, high):
    text = env[name]
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: {value} is outside {low}..{high}")
    return value


def _flag(env, name):
    text = env[name].lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no", ""):
        return False
    raise ConfigError(f"{name}: {env[name]!r} is not 0 or 1")


def _database_template(template):
    probe = template.replace("{network}", "x")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", probe):
        raise ConfigError(f"CLICKHOUSE_DATABASE: {template!r} is not a database name"
                          " (letters, digits, _ and {network})")
    return template


def _redis_url_from_parts(env):
    port = _integer(env, "REDIS_PORT", 1, 65535)
    db = _integer(env, "REDIS_DB", 0, 1_000_000)
    return f"redis://{quote(env['REDIS_HOST'])}:{port}/{db}"
