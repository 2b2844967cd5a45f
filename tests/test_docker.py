"""The Docker set-up (Dockerfile, docker-compose.yml, docker/entrypoint.sh,
.dockerignore), checked without Docker: the files parse, what they name
exists, the services point at each other, and the entrypoint does its job
when run with stand-ins for cron."""
import glob
import json
import os
import posixpath
import re
import shlex
import stat
import subprocess
import sys
from urllib.parse import urlparse

import pytest
import yaml
from dotenv import dotenv_values

from workflows import cli

from common import REPO, poll

COMPOSE = os.path.join(REPO, "docker-compose.yml")
ENTRYPOINT = os.path.join(REPO, "docker", "entrypoint.sh")
SERVICES = ("redis", "clickhouse", "luigid", "worker")
PIPELINE_PREFIXES = ("REDIS_", "CLICKHOUSE_", "SOT_", "INGESTION_", "LUIGI_", "ALERT_", "SMTP_")


# --- reading the files -------------------------------------------------------

def compose():
    with open(COMPOSE) as stream:
        return yaml.safe_load(stream)


def service(name):
    return compose()["services"][name]


def interpolate(value):
    """The value compose gives `value` when no variable is set: ${VAR:-default}
    and ${VAR-default} become the default, ${VAR} nothing, $$ a $."""
    if not isinstance(value, str):
        return value
    value = re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value.replace("$$", "\0"))
    return value.replace("\0", "$")


def environment(svc):
    """A service's `environment:` (a mapping or a list of NAME=value) as a dict, not interpolated."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {name: None if value is None else str(value) for name, value in env.items()}


def volume_mounts(svc):
    """[(source, target, read_only)] of a service's volumes, short or long syntax."""
    mounts = []
    for volume in svc.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((volume.get("source"), volume["target"], bool(volume.get("read_only"))))
            continue
        mode = None
        if re.search(r":(ro|rw)\Z", volume):
            volume, mode = volume.rsplit(":", 1)
        # the source may hold ${VAR:-./dir}: the target is after the last colon
        source, target = volume.rsplit(":", 1) if ":" in volume else (None, volume)
        mounts.append((source, target, mode == "ro"))
    return mounts


def mount_holding(svc, path):
    """The mount of `svc` whose target contains `path`, or None."""
    for source, target, read_only in volume_mounts(svc):
        target = posixpath.normpath(target)
        if posixpath.normpath(path) == target or posixpath.normpath(path).startswith(target + "/"):
            return source, target, read_only
    return None


def command_words(svc):
    command = svc.get("command")
    return shlex.split(command) if isinstance(command, str) else list(command or [])


def option(words, name):
    """The value of `--name value` or `--name=value` in `words`."""
    for i, word in enumerate(words):
        if word == name:
            return words[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{name} not in {words}")


def healthcheck_text(svc):
    test = (svc.get("healthcheck") or {}).get("test")
    return " ".join(test) if isinstance(test, list) else (test or "")


def build_context(svc):
    build = svc["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    context = os.path.normpath(os.path.join(REPO, context))
    return context, os.path.join(context, dockerfile)


def built_services():
    return [name for name, svc in compose()["services"].items() if "build" in svc]


def dockerfile_instructions(path):
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    with open(path) as stream:
        for line in stream:
            stripped = line.strip()
            if stripped.startswith("#") or (not stripped and not current):
                continue
            if stripped.endswith("\\"):
                current += stripped[:-1] + " "
                continue
            current += stripped
            if current.strip():
                keyword, _, arguments = current.strip().partition(" ")
                instructions.append((keyword.upper(), arguments.strip()))
            current = ""
    assert not current, f"{path} ends inside a continued line"
    return instructions


def exec_form(arguments):
    """ENTRYPOINT/CMD/COPY arguments, JSON or shell form, as words."""
    return json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)


def copies(instructions):
    """[(sources, destination)] of the COPY/ADD instructions taken from the build context."""
    result = []
    for keyword, arguments in instructions:
        if keyword not in ("COPY", "ADD"):
            continue
        words = exec_form(arguments)
        flags = [w for w in words if w.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        words = [w for w in words if not w.startswith("--")]
        result.append((words[:-1], words[-1]))
    return result


def context_path(instructions, container_path):
    """The build-context file a path in the image comes from, through the COPYs
    of whole directories (`COPY . /app`): /app/docker/x -> docker/x."""
    workdir = "/"
    for keyword, arguments in instructions:
        if keyword == "WORKDIR":
            workdir = posixpath.join(workdir, arguments)
    container_path = posixpath.normpath(posixpath.join(workdir, container_path))
    for sources, destination in copies(instructions):
        destination = posixpath.normpath(posixpath.join(workdir, destination))
        for source in sources:
            if container_path.startswith(destination.rstrip("/") + "/"):
                relative = container_path[len(destination.rstrip("/")) + 1:]
                return posixpath.normpath(posixpath.join(source, relative))
    return None


class DockerIgnore:
    """.dockerignore as the builder reads it: patterns from the context's root,
    * and ? within one path element, ** across elements, a later !pattern
    re-includes, and an excluded directory excludes what is in it."""

    def __init__(self, path):
        self.patterns = []
        if os.path.exists(path):
            with open(path) as stream:
                for line in stream:
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    negate = line.startswith("!")
                    pattern = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
                    self.patterns.append((negate, re.compile(self._regex(pattern))))

    @staticmethod
    def _regex(pattern):
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        return regex + r"\Z"

    def excluded(self, relative):
        parts = relative.split("/")
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        result = False
        for negate, regex in self.patterns:
            if any(regex.match(candidate) for candidate in candidates):
                result = not negate
        return result


# --- docker-compose.yml ------------------------------------------------------

def test_compose_has_the_four_services():
    assert set(SERVICES) <= set(compose()["services"])


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_has_a_healthcheck(name):
    healthcheck = service(name).get("healthcheck")
    assert healthcheck and not healthcheck.get("disable"), f"{name} has no healthcheck"
    test = healthcheck.get("test")
    assert test and test != ["NONE"], f"{name}: empty healthcheck"
    if isinstance(test, list):
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: healthcheck test {test}"


def test_redis_and_clickhouse_healthchecks_ask_the_server():
    assert "redis-cli" in healthcheck_text(service("redis")) and "ping" in healthcheck_text(service("redis"))
    clickhouse = healthcheck_text(service("clickhouse"))
    assert "SELECT 1" in clickhouse or "/ping" in clickhouse


def test_clickhouse_is_the_official_image_with_its_limits_and_a_volume():
    clickhouse = service("clickhouse")
    image, _, tag = clickhouse["image"].partition(":")
    assert image == "clickhouse/clickhouse-server"
    major, minor = (int(part) for part in tag.split(".")[:2])
    assert minor in (3, 8) and (major, minor) >= (26, 8)  # an LTS line (x.3, x.8), no floating "latest"
    nofile = clickhouse["ulimits"]["nofile"]
    assert (nofile if isinstance(nofile, int) else min(nofile["soft"], nofile["hard"])) >= 262144
    source, _, _ = mount_holding(clickhouse, "/var/lib/clickhouse/data")
    assert source in compose()["volumes"], "ClickHouse data is not on a named volume"


def test_luigid_publishes_its_port_and_keeps_its_state_on_a_named_volume():
    luigid = service("luigid")
    words = command_words(luigid)
    assert words[:4] == ["python", "-m", "workflows", "luigid"], words
    port = int(option(words, "--port"))
    assert option(words, "--address") == "0.0.0.0"
    published = [str(p).rsplit(":", 1)[-1].split("/")[0] if not isinstance(p, dict) else str(p["target"])
                 for p in luigid.get("ports") or []]
    assert str(port) in published, f"luigid listens on {port}, publishes {published}"
    assert f":{port}/" in healthcheck_text(luigid) and "/api/" in healthcheck_text(luigid)

    state_path = option(words, "--state-path")
    mount = mount_holding(luigid, state_path)
    assert mount is not None, f"--state-path {state_path} is not on a volume: the state would not survive"
    source, target, read_only = mount
    assert source in (compose().get("volumes") or {}), f"{source} is not a named volume"
    assert not read_only and posixpath.normpath(state_path) != target
    assert environment(luigid).get("LUIGI_CONFIG_PATH") == "/app/luigi.cfg"


def test_worker_waits_for_the_healthy_servers():
    depends_on = service("worker").get("depends_on")
    assert isinstance(depends_on, dict), "depends_on must be a mapping to carry conditions"
    for name in ("redis", "clickhouse", "luigid"):
        assert (depends_on.get(name) or {}).get("condition") == "service_healthy", name


def test_worker_points_at_the_services():
    env = {name: interpolate(value) for name, value in environment(service("worker")).items()}
    services = compose()["services"]
    redis = urlparse(env["REDIS_URL"])
    assert redis.scheme == "redis" and redis.hostname in services and redis.port == 6379
    assert env["CLICKHOUSE_HOST"] in services and env["CLICKHOUSE_PORT"] == "9000"
    scheduler = urlparse(env["LUIGI_SCHEDULER_URL"])
    assert scheduler.hostname == "luigid"
    assert scheduler.port == int(option(command_words(service("luigid")), "--port"))


def test_worker_reads_the_store_read_only_and_downloads_to_a_volume():
    worker = service("worker")
    env = {name: interpolate(value) for name, value in environment(worker).items()}
    sot = mount_holding(worker, env["SOT_URL"])
    assert sot is not None and sot[2], f"SOT_URL {env['SOT_URL']} is not a read-only mount"
    downloads = mount_holding(worker, env["SOT_DOWNLOAD_DIR"] + "/x")
    assert downloads is not None and not downloads[2], "SOT_DOWNLOAD_DIR is not on a writable volume"
    for name in ("INGESTION_NETWORKS", "INGESTION_WINDOW_DAYS", "INGESTION_RETRY_ATTEMPTS",
                 "INGESTION_RETRY_DELAY", "ALERT_WEBHOOK_URL"):
        assert re.fullmatch(r"\$\{%s:-[^}]*\}" % name, environment(worker).get(name) or ""), \
            f"{name} should be ${{{name}:-default}}"


def test_worker_and_clickhouse_agree_on_the_credentials():
    worker, clickhouse = environment(service("worker")), environment(service("clickhouse"))
    for name in ("CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD"):
        assert worker.get(name) == clickhouse.get(name), name
    # without a user or password the image gives `default` no network access
    if interpolate(clickhouse.get("CLICKHOUSE_SKIP_USER_SETUP")) != "1":
        assert interpolate(clickhouse.get("CLICKHOUSE_PASSWORD")) or \
            interpolate(clickhouse.get("CLICKHOUSE_USER")) not in (None, "", "default")


def test_luigid_and_worker_use_the_same_retry_delay():
    assert environment(service("luigid")).get("INGESTION_RETRY_DELAY") == \
        environment(service("worker")).get("INGESTION_RETRY_DELAY") is not None


def test_every_variable_of_env_example_is_given_to_the_worker_or_left_at_its_default():
    # the image's defaults are right for these in compose: one ClickHouse
    # database per network, Redis by URL, no SOT ClickHouse, luigi.cfg found in /app
    left_at_default = {"REDIS_HOST", "REDIS_PORT", "REDIS_DB", "CLICKHOUSE_DATABASE", "CLICKHOUSE_SECURE",
                       "CLICKHOUSE_CA_CERTS", "CLICKHOUSE_VERIFY", "INGESTION_CONNECT_TIMEOUT",
                       "SOT_HOST", "SOT_PORT", "SOT_DATABASE", "SOT_USER", "SOT_PASSWORD", "SOT_SECURE",
                       "INGESTION_COMPRESSION", "CLICKHOUSE_CLUSTER", "INGESTION_WORKER_HOST"}
    with open(os.path.join(REPO, ".env.example")) as stream:
        names = {line.split("=", 1)[0].strip() for line in stream if re.match(r"\s*[A-Z_][A-Z0-9_]*=", line)}
    assert names, ".env.example lists no variables"
    missing = names - left_at_default - set(environment(service("worker")))
    assert not missing, f"variables of .env.example the worker does not get: {sorted(missing)}"


def test_the_workflows_subcommands_in_compose_exist():
    text = open(COMPOSE).read()
    subcommands = set(re.findall(r"python3? -m workflows ([a-z_-]+)", text))
    assert "luigid" in subcommands
    for sub in subcommands - {"luigid"}:
        with pytest.raises(SystemExit) as exit_:
            cli.main([sub, "--help"])
        assert exit_.value.code == 0, sub
    with pytest.raises(SystemExit) as exit_:  # the check can tell a missing one
        cli.main(["no-such-subcommand", "--help"])
    assert exit_.value.code != 0


def test_python_m_workflows_luigid_takes_the_options_compose_gives_it():
    result = subprocess.run([sys.executable, "-m", "workflows", "luigid", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for word in command_words(service("luigid"))[4:]:
        if word.startswith("--"):
            assert word.split("=")[0] in result.stdout, f"luigid does not take {word}"


# --- Dockerfile and build context --------------------------------------------

def test_built_services_have_a_context_and_a_dockerfile():
    assert {"luigid", "worker"} <= set(built_services())
    for name in built_services():
        context, dockerfile = build_context(service(name))
        assert os.path.isdir(context), f"{name}: no build context {context}"
        assert os.path.isfile(dockerfile), f"{name}: no {dockerfile}"


@pytest.mark.parametrize("name", ["luigid", "worker"])
def test_what_the_dockerfile_copies_is_in_the_context_and_not_ignored(name):
    context, dockerfile = build_context(service(name))
    ignore = DockerIgnore(os.path.join(context, ".dockerignore"))
    copied = copies(dockerfile_instructions(dockerfile))
    assert copied, "the Dockerfile copies nothing"
    for sources, _ in copied:
        for source in sources:
            matches = glob.glob(os.path.join(context, source))
            assert matches, f"COPY {source}: not in the build context"
            relative = posixpath.normpath(source)
            assert relative == "." or not ignore.excluded(relative), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_what_the_build_needs_and_drops_local_state():
    ignore = DockerIgnore(os.path.join(REPO, ".dockerignore"))
    needed = ["setup.cfg", "pyproject.toml", "README.md", "luigi.cfg", "crontab", "docker/entrypoint.sh"]
    for package in ("workflows", "targets"):
        needed += [os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, package, "*.py"))]
    assert "workflows/__init__.py" in needed
    for path in needed:
        assert not ignore.excluded(path), f".dockerignore drops {path}, which the image needs"
    for path in (".env", ".venv/bin/python", ".git/HEAD", ".local/demo.env", "workflows/__pycache__/x.pyc",
                 "devkit/demo.py", "devkit/local_servers.py", "bench/run.py", "tests/conftest.py"):
        assert ignore.excluded(path), f".dockerignore should drop {path}"
    assert not ignore.excluded("workflows/sources/base.py")


def test_dockerignore_matcher():
    """The matcher above, on the rules it implements (so a pass means something)."""
    path = os.path.join(REPO, "tests", "__no_such_file__")
    matcher = DockerIgnore(path)
    matcher.patterns = [(n, re.compile(DockerIgnore._regex(p))) for n, p in
                        [(False, "build"), (False, "**/*.pyc"), (False, "docs/*.md"), (True, "docs/keep.md")]]
    assert matcher.excluded("build/lib/x.py") and not matcher.excluded("src/build.py")
    assert matcher.excluded("a/b/c.pyc") and matcher.excluded("c.pyc")
    assert matcher.excluded("docs/a.md") and not matcher.excluded("docs/keep.md")
    assert not matcher.excluded("docs/sub/a.md")


def test_dockerfile_installs_cron_flock_and_the_package():
    instructions = dockerfile_instructions(os.path.join(REPO, "Dockerfile"))
    assert instructions[0] == ("FROM", "python:3.11-slim-bookworm")
    runs = " && ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    install = re.search(r"apt-get install ([^&;]*)", runs)
    assert install and {"cron", "util-linux"} <= set(install.group(1).split())
    # pip of the official python image installs console scripts into /usr/local/bin
    assert re.search(r"pip install (?:[-\w=]+ )*(?:-e )?/app\b", runs), "the package is not pip-installed"
    env = " ".join(arguments for keyword, arguments in instructions if keyword == "ENV")
    assert re.search(r"\bTZ[= ]UTC\b", env)
    assert "/var/log/sot-ingestion" in runs


def test_dockerfile_installs_the_shipped_crontab_for_root():
    instructions = dockerfile_instructions(os.path.join(REPO, "Dockerfile"))
    runs = " && ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    installed = re.search(r"\bcrontab (\S+)", runs)
    assert installed, "no crontab installed"
    source = context_path(instructions, installed.group(1))
    assert source and os.path.isfile(os.path.join(REPO, source)), f"{installed.group(1)} is not in the build context"
    assert source == "crontab"


def test_entrypoint_is_in_the_image_executable_and_the_dockerfiles_entrypoint():
    instructions = dockerfile_instructions(os.path.join(REPO, "Dockerfile"))
    entrypoints = [exec_form(arguments) for keyword, arguments in instructions if keyword == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    source = context_path(instructions, entrypoints[-1][0])
    assert source == "docker/entrypoint.sh", entrypoints[-1]
    assert os.stat(ENTRYPOINT).st_mode & stat.S_IXUSR, "docker/entrypoint.sh is not executable"
    with open(ENTRYPOINT) as stream:
        assert stream.readline().startswith("#!"), "docker/entrypoint.sh has no #! line"


def test_entrypoint_is_valid_bash():
    result = subprocess.run(["bash", "-n", ENTRYPOINT], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- crontab -----------------------------------------------------------------

def generated_crontab(networks=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(PIPELINE_PREFIXES)}
    if networks:
        env["INGESTION_NETWORKS"] = networks
    result = subprocess.run([sys.executable, "-m", "workflows", "crontab"], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_shipped_crontab_calls_the_installed_luigi_and_is_current(tmp_path):
    path = os.path.join(REPO, "crontab")
    assert os.path.isfile(path), "crontab is missing: `python -m workflows crontab > crontab`"
    with open(path) as stream:
        text = stream.read()
    jobs = [line for line in text.splitlines() if line and not line.startswith("#") and "=" not in line.split()[0]]
    assert jobs
    for job in jobs:
        assert " /usr/local/bin/luigi --module workflows RunDaily " in job, job
        assert "cd /app && mkdir -p locks && flock -n locks/" in job, job  # this installation's locks
        log = re.search(r">> (\S+)", job).group(1)
        assert mount_holding(service("worker"), log), f"{log} is not on one of the worker's volumes"
    # from an empty directory, so that no .env changes INGESTION_NETWORKS
    assert text == generated_crontab(cwd=tmp_path), "crontab is stale: `python -m workflows crontab > crontab`"


# --- the entrypoint, run with stand-ins for cron ----------------------------

def run_entrypoint(tmp_path, env, *arguments):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stubs = {
        "cron": 'echo "cron $*" > "$STUB_OUT/cron"',
        "crontab": 'cp "$1" "$STUB_OUT/crontab"',
        "tail": 'echo "$*" > "$STUB_OUT/tail"',
        "python": f'exec {shlex.quote(sys.executable)} "$@"',
    }
    for name, body in stubs.items():
        stub = bin_dir / name
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(0o755)
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    full_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "APP_DIR": str(app), "STUB_OUT": str(out), **env}
    result = subprocess.run(["bash", ENTRYPOINT, *arguments], env=full_env, capture_output=True, text=True,
                            timeout=60)
    return result, app, out


def test_entrypoint_writes_the_pipeline_variables_to_dotenv_and_runs_its_arguments(tmp_path):
    env = {
        "CLICKHOUSE_PASSWORD": "p'a\"s s\\w$rd\\'x\nsecond line # not a comment",
        "SOT_URL": "/sot",
        "LUIGI_SCHEDULER_URL": "http://luigid:8082/",
        "INGESTION_NETWORKS": "ethereum",
        "ALERT_WEBHOOK_URL": "",
        "SMTP_HOST": "mail",
        "REDIS_URL": "redis://redis:6379/0",
        "UNRELATED": "x",
        "HOSTNAME": "abc",
    }
    result, app, _ = run_entrypoint(tmp_path, env, "sh", "-c", 'echo "ran $0 $1"', "one", "two")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ran one two\n"
    written = dotenv_values(app / ".env")
    assert written == {k: v for k, v in env.items() if k.startswith(PIPELINE_PREFIXES)}
    assert stat.S_IMODE(os.stat(app / ".env").st_mode) == 0o600
    assert not list(app.glob(".env.*")), "temporary file left behind"


def test_entrypoint_without_arguments_installs_the_crontab_for_its_networks_and_runs_cron(tmp_path):
    result, app, out = run_entrypoint(tmp_path, {"INGESTION_NETWORKS": "ethereum,bitcoin", "SOT_URL": "/sot"})
    assert result.returncode == 0, result.stderr
    assert (out / "cron").read_text() == "cron -f\n"
    installed = (out / "crontab").read_text()
    assert installed == generated_crontab("ethereum,bitcoin", cwd=tmp_path)
    assert "--networks bitcoin" in installed and "--networks torus" not in installed
    assert dotenv_values(app / ".env")["INGESTION_NETWORKS"] == "ethereum,bitcoin"
    poll((out / "tail").exists, 10, "tail started", interval=0.05)  # tail runs in the background
    followed = (out / "tail").read_text().split()
    assert {"/var/log/sot-ingestion/ethereum.log", "/var/log/sot-ingestion/bitcoin.log"} <= set(followed)


def test_entrypoint_stops_on_a_bad_network_before_starting_cron(tmp_path):
    result, _, out = run_entrypoint(tmp_path, {"INGESTION_NETWORKS": "Ethereum!", "SOT_URL": "/sot"})
    assert result.returncode != 0
    assert "INGESTION_NETWORKS" in result.stderr + result.stdout
    assert not (out / "cron").exists() and not (out / "crontab").exists()
