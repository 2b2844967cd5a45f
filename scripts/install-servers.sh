#!/usr/bin/env bash
# Installs Debian's redis-server, clickhouse-server, clickhouse-client, faketime and zookeeper when
# they are not on PATH. Needs root (or sudo) and a Debian-like system.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || missing+=(clickhouse-server)
command -v clickhouse-client >/dev/null 2>&1 || missing+=(clickhouse-client)
# tests: a clock shifted for one command; ZooKeeper for a replicated cluster
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
[ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
# the packages start system services; the pipeline starts its own servers
for service in redis-server clickhouse-server zookeeper; do
    $sudo service "$service" stop >/dev/null 2>&1 || true
done
