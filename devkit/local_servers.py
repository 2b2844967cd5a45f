"""Redis, ClickHouse and luigid on loopback, in one directory: what the tests,
`make demo` and `make bench` run the pipeline against. Real servers, started
from the binaries on PATH."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

CLICKHOUSE_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{root}/clickhouse.log</log><errorlog>{root}/clickhouse.err.log</errorlog></logger>
    <tcp_port>{tcp_port}</tcp_port>
    <http_port>{http_port}</http_port>
    <listen_host>127.0.0.1</listen_host>
    <path>{root}/clickhouse/</path>
    <tmp_path>{root}/clickhouse/tmp/</tmp_path>
    <users_config>{users}</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>{tls}{replica}
</yandex>
"""

CLICKHOUSE_TLS = """
    <tcp_port_secure>{port}</tcp_port_secure>{https}
    <openSSL><server>
        <certificateFile>{certificate}</certificateFile>
        <privateKeyFile>{key}</privateKeyFile>
        <verificationMode>none</verificationMode>
        <loadDefaultCAFile>false</loadDefaultCAFile>
        <disableProtocols>sslv2,sslv3</disableProtocols>
    </server></openSSL>"""


# the default user with a password, for tests that look for it in every output
CLICKHOUSE_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles><default/></profiles>
    <quotas><default/></quotas>
    <users><default>
        <password>{password}</password>
        <networks><ip>127.0.0.1</ip></networks>
        <profile>default</profile><quota>default</quota>
    </default></users>
</yandex>
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port):
    """Whether nothing listens on 127.0.0.1:port, so a server of ours can."""
    with socket.socket() as sock:
        # as the servers bind: a port whose last connections linger in TIME_WAIT is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _port_open(port):
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(ready, what, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} while starting")
        try:
            if ready():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout} s")


class Server:
    """One server process, its pid file kept in `root` so that a later
    `make demo` finds it running and reuses it."""

    def __init__(self, name, root, command, ready, env=None, cwd=None):
        self.name, self.root, self.command, self.ready = name, root, command, ready
        self.env, self.cwd = env, cwd
        self.pidfile = os.path.join(root, f"{name}.pid")
        self.process = None

    def running_pid(self):
        """The pid of this server, started from this root, when it is alive
        and answering; not a process that reuses its pid or its port."""
        try:
            with open(self.pidfile) as stream:
                pid = int(stream.read())
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                program = stream.read().split(b"\0")[0].decode(errors="replace").split(" ")[0]
        except (OSError, ValueError, IndexError):
            return None
        # (redis-server rewrites its command line, but not the program's name)
        if os.path.basename(program) != os.path.basename(self.command[0]):
            return None
        return pid if self.ready() else None

    def start(self, detach=False):
        log = open(os.path.join(self.root, f"{self.name}.out"), "ab")
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=detach, env=self.env, cwd=self.cwd)
        with open(self.pidfile, "w") as stream:
            stream.write(str(self.process.pid))
        _wait(self.ready, self.name, self.process)
        if self.process.poll() is not None:  # what answered is another process
            raise RuntimeError(f"{self.name} exited with status {self.process.returncode} while starting")

    def stop(self):
        """Returns the pid it stopped, or None when it was not running."""
        pid = self.process.pid if self.process else self.running_pid()
        if pid is None:
            return None
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return None
        if self.process:
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return pid


# One replica of a one-shard cluster: the other replicas fetch its parts over
# interserver HTTP, ZooKeeper keeps them in step and queues ON CLUSTER DDL.
CLICKHOUSE_REPLICA = """
    <interserver_http_port>{interserver_port}</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <remote_servers><{cluster}><shard>
        <internal_replication>true</internal_replication>{replicas}
    </shard></{cluster}></remote_servers>
    <zookeeper><node index="1"><host>127.0.0.1</host><port>{zookeeper_port}</port></node></zookeeper>
    <macros><shard>01</shard><replica>{name}</replica></macros>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>"""

ZOOKEEPER_CONFIG = """tickTime=2000
dataDir={root}/zookeeper
clientPort={port}
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=srvr
maxClientCnxns=0
"""
# Debian's zookeeper package: its jar's manifest brings in the rest
ZOOKEEPER_CLASSPATH = "/usr/share/java/zookeeper.jar"
ZOOKEEPER_JAVA_OPTIONS = ["-Xms16m", "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData",
                          "-Dzookeeper.jmx.log4j.disable=true"]


def redis_server(root, port, tls=None, password=None, appendonly="no"):
    """With `tls` = (certificate, key) it serves only TLS, on `port`;
    `appendonly="yes"` keeps its data in `root` across restarts (the demo's)."""
    listen = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", tls[0], "--tls-key-file", tls[1],
              "--tls-auth-clients", "no"] if tls else ["--port", str(port)]
    return Server("redis", root,
                  ["redis-server", *listen, "--bind", "127.0.0.1", "--dir", root, "--save", "",
                   "--appendonly", appendonly, *(["--requirepass", password] if password else [])],
                  lambda: _port_open(port))


def clickhouse_server(root, port, http_port, tls=None, password=None, replica=None):
    """With `tls` = (secure_port, certificate, key[, https_port]) it serves TLS
    on secure_port too (and HTTPS on https_port); with `password` its default
    user needs that password; with
    `replica` = {name, cluster, interserver_port, zookeeper_port, ports (the
    native ports of every replica)} it is that replica of a one-shard cluster."""
    config = os.path.join(root, "clickhouse.xml")
    users = "/etc/clickhouse-server/users.xml"
    if password:
        users = os.path.join(root, "clickhouse-users.xml")
        with open(users, "w") as stream:
            stream.write(CLICKHOUSE_USERS.format(password=password))
    secure = ""
    if tls:
        secure_port, certificate, key, *https_port = tls
        https = "".join(f"\n    <https_port>{p}</https_port>" for p in https_port)
        secure = CLICKHOUSE_TLS.format(port=secure_port, https=https, certificate=certificate, key=key)
    with open(config, "w") as stream:
        stream.write(CLICKHOUSE_CONFIG.format(root=root, tcp_port=port, http_port=http_port, tls=secure, users=users,
                                              replica=_replica_config(**replica) if replica else ""))

    def ready():
        return urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ping", timeout=1).read().strip() == b"Ok."

    return Server("clickhouse", root, ["clickhouse-server", f"--config-file={config}"], ready)


def _replica_config(name, cluster, interserver_port, zookeeper_port, ports):
    replicas = "".join(f"\n        <replica><host>127.0.0.1</host><port>{p}</port></replica>" for p in ports)
    return CLICKHOUSE_REPLICA.format(name=name, cluster=cluster, interserver_port=interserver_port,
                                     zookeeper_port=zookeeper_port, replicas=replicas)


def zookeeper_server(root, port):
    """A standalone ZooKeeper from Debian's package (a test dependency)."""
    config = os.path.join(root, "zoo.cfg")
    with open(config, "w") as stream:
        stream.write(ZOOKEEPER_CONFIG.format(root=root, port=port))

    def ready():  # "ruok" answers before it serves; "srvr" says when it does
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"srvr")
            return b"Mode: standalone" in sock.recv(4096)

    return Server("zookeeper", root, ["java", *ZOOKEEPER_JAVA_OPTIONS, "-cp", ZOOKEEPER_CLASSPATH,
                                      "org.apache.zookeeper.server.quorum.QuorumPeerMain", config], ready)


def luigid_server(root, port, luigi_config=None, stock=False, env=None, cwd=None):
    """luigid, through `python -m workflows luigid`, which reads the package's
    scheduler policy and INGESTION_RETRY_DELAY; or with `stock` the plain
    `luigid` command, which reads only luigi.cfg in `cwd` or `luigi_config`."""
    url = f"http://127.0.0.1:{port}/api/task_list?data=%7B%7D"
    env = dict(os.environ if env is None else env, **({"LUIGI_CONFIG_PATH": luigi_config} if luigi_config else {}))
    command = [os.path.join(os.path.dirname(sys.executable), "luigid")] if stock else \
        [sys.executable, "-m", "workflows", "luigid"]
    return Server("luigid", root,
                  command + ["--address", "127.0.0.1", "--port", str(port), "--logdir", root,
                             "--state-path", os.path.join(root, "luigid-state.pickle")],
                  lambda: urllib.request.urlopen(url, timeout=1).status == 200, env=env, cwd=cwd)


def s3_server(root, port, recording=None):
    """moto's S3 server (a test and benchmark dependency), on loopback; with
    `recording`, the requests it records go to that file."""
    env = dict(os.environ, **({"MOTO_RECORDER_FILEPATH": recording} if recording else {}))
    return Server("moto", root, [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                                 "-p", str(port)],
                  lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json",
                                                 timeout=1).status == 200,
                  env=env)


class LocalServers:
    """Redis, ClickHouse (native and HTTP port) and luigid under `root`."""

    def __init__(self, root, redis_port=None, clickhouse_port=None, clickhouse_http_port=None, luigid_port=None,
                 luigi_config=None, redis_appendonly="no"):
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        self.redis_port = redis_port or free_port()
        self.clickhouse_port = clickhouse_port or free_port()
        self.clickhouse_http_port = clickhouse_http_port or free_port()
        self.luigid_port = luigid_port or free_port()
        self.servers = [
            redis_server(self.root, self.redis_port, appendonly=redis_appendonly),
            clickhouse_server(self.root, self.clickhouse_port, self.clickhouse_http_port),
            luigid_server(self.root, self.luigid_port, luigi_config),
        ]

    @property
    def scheduler_url(self):
        return f"http://127.0.0.1:{self.luigid_port}/"

    @property
    def visualiser_url(self):
        return f"{self.scheduler_url}static/visualiser/index.html"

    def env(self):
        """The environment that points the pipeline at these servers."""
        return {
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "CLICKHOUSE_HOST": "127.0.0.1",
            "CLICKHOUSE_PORT": str(self.clickhouse_port),
            "LUIGI_SCHEDULER_URL": self.scheduler_url,
        }

    def start(self, detach=False, reuse=False):
        """Starts each server, or with `reuse` keeps one already running here."""
        try:
            for server in self.servers:
                if not (reuse and server.running_pid()):
                    server.start(detach=detach)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Returns [(name, pid)] of the servers it stopped."""
        stopped = [(server.name, server.stop()) for server in reversed(self.servers)]
        return [(name, pid) for name, pid in stopped if pid]
