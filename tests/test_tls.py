"""TLS to ClickHouse and to Redis, against real servers on loopback serving
TLS only with a certificate of a CA this test makes with openssl."""
import json
import os
import subprocess
import sys

import pytest
from clickhouse_driver import Client

from devkit.local_servers import clickhouse_server, free_port, redis_server
from devkit.sample import fill_sot_database, make_snapshot
from workflows.config import Settings
from workflows.schema import TABLES

from common import DATE, REPO, RUN_DAILY_LOCAL, WINDOW


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA, and a certificate it signed for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=sot-ingestion test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")
    return {name: str(folder / name) for name in ("ca.pem", "server.pem", "server.key")}


@pytest.fixture(scope="module")
def tls_ports():
    return {"native": free_port(), "secure": free_port(), "https": free_port(), "redis": free_port()}


@pytest.fixture(scope="module")
def tls_servers(certificates, tmp_path_factory, tls_ports):
    """ClickHouse 18.16 serving TLS on its secure port (and HTTPS), and a Redis serving TLS only."""
    root = str(tmp_path_factory.mktemp("tls-servers"))
    servers = [clickhouse_server(root, tls_ports["native"], free_port(),
                                 tls=(tls_ports["secure"], certificates["server.pem"], certificates["server.key"],
                                      tls_ports["https"])),
               redis_server(root, tls_ports["redis"], tls=(certificates["server.pem"], certificates["server.key"]))]
    for server in servers:
        server.start()
    yield {"CLICKHOUSE_HOST": "127.0.0.1", "CLICKHOUSE_PORT": str(tls_ports["secure"]), "CLICKHOUSE_SECURE": "1",
           "REDIS_URL": f"rediss://127.0.0.1:{tls_ports['redis']}/0?ssl_ca_certs={certificates['ca.pem']}"}
    for server in servers:
        server.stop()


def test_a_day_loads_over_tls_to_clickhouse_and_redis(pipeline, tls_servers, certificates):
    tables = pipeline.publish()

    result = pipeline.run_cli(*RUN_DAILY_LOCAL, **tls_servers, CLICKHOUSE_CA_CERTS=certificates["ca.pem"])

    assert result.returncode == 0, result.stderr[-3000:]
    over_tls = Client("127.0.0.1", port=int(tls_servers["CLICKHOUSE_PORT"]), secure=True,
                      ca_certs=certificates["ca.pem"])
    counts = {t: over_tls.execute(f"SELECT count() FROM risk_assessment_ethereum.{t}")[0][0] for t in TABLES}
    assert counts == {t: tables[t].num_rows for t in TABLES}


def test_a_certificate_of_an_unknown_ca_is_refused_in_one_line(pipeline, tls_servers):
    pipeline.publish()

    result = pipeline.run_cli(*RUN_DAILY_LOCAL, **tls_servers)  # no CLICKHOUSE_CA_CERTS: the system's CAs

    assert result.returncode == 35, result.stderr[-3000:]
    said = [line for line in result.stderr.splitlines() if "cannot check" in line and "{" not in line]
    assert said and "CERTIFICATE_VERIFY_FAILED" in said[0], said


def test_verification_can_be_turned_off(pipeline, tls_servers):
    pipeline.publish()

    result = pipeline.run_cli(*RUN_DAILY_LOCAL, **tls_servers, CLICKHOUSE_VERIFY="0")

    assert result.returncode == 0, result.stderr[-3000:]


def test_a_sot_clickhouse_over_https_publishes_a_day(pipeline, tls_servers, tls_ports, certificates):
    """SOT_SECURE=1 with the SOT ClickHouse's HTTPS port (8443 in a deployment):
    its certificate checked against the system's CAs (here the test's, by
    SSL_CERT_FILE)."""
    fill_sot_database(Client("127.0.0.1", port=tls_ports["native"]), "sot_ethereum",
                      make_snapshot("ethereum", DATE, WINDOW, 100))
    published = subprocess.run(
        [sys.executable, "-m", "workflows", "publish", "--date", DATE.isoformat(), "--network", "ethereum",
         "--to", pipeline.sot], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, **pipeline.env, "SOT_HOST": "127.0.0.1", "SOT_PORT": str(tls_ports["https"]),
             "SOT_SECURE": "1", "SSL_CERT_FILE": certificates["ca.pem"]})

    assert published.returncode == 0, published.stderr
    meta = json.load(open(os.path.join(pipeline.snapshot_dir(), "META.json")))
    assert meta["counts"] == {"alerts": 10, "features": 100, "clusters": 1, "address_labels": 5}


def test_the_default_port_follows_clickhouse_secure():
    env = {"SOT_URL": "/srv/sot"}
    assert Settings.from_env(env).clickhouse_port == 9000
    assert Settings.from_env(dict(env, CLICKHOUSE_SECURE="1")).clickhouse_port == 9440
    assert Settings.from_env(dict(env, CLICKHOUSE_SECURE="1", CLICKHOUSE_PORT="9999")).clickhouse_port == 9999
