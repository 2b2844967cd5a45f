#!/usr/bin/env bash
# Installs what is missing of Debian's servers, given as arguments:
#   scripts/install-servers.sh          the demo's and the pipeline's: redis-server, clickhouse-server,
#                                       clickhouse-client
#   scripts/install-servers.sh --test   those, and what only the tests use: faketime (a clock shifted for
#                                       one command), zookeeper (a replicated cluster, with Java) and
#                                       prometheus-pushgateway (metrics pushed to a real gateway)
# Needs root (or sudo) and a Debian-like system.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || missing+=(clickhouse-server)
command -v clickhouse-client >/dev/null 2>&1 || missing+=(clickhouse-client)
if [ "${1:-}" = "--test" ]; then
    command -v faketime >/dev/null 2>&1 || missing+=(faketime)
    [ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
    command -v prometheus-pushgateway >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
# the packages start system services; the pipeline starts its own servers
for service in redis-server clickhouse-server zookeeper prometheus-pushgateway; do
    $sudo service "$service" stop >/dev/null 2>&1 || true
done
