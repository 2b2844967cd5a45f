#!/usr/bin/env bash
# Entrypoint of the sot-ingestion image, for the worker and for luigid.
#
# 1. Writes the container's pipeline variables (REDIS_*, CLICKHOUSE_*, SOT_*,
#    INGESTION_*, LUIGI_*, ALERT_*, SMTP_*) to $APP_DIR/.env: cron starts its
#    jobs with an almost empty environment, and the pipeline loads .env from
#    its working directory (the crontab does `cd /app`).
# 2. Without arguments: installs the crontab for INGESTION_NETWORKS (the one
#    `python -m workflows crontab` prints) and runs cron in the foreground.
#    With arguments: runs them instead, e.g.
#        docker compose run --rm worker luigi --module workflows RunDaily --date 2024-10-30
set -euo pipefail

APP_DIR="${APP_DIR:-/app}"
ENV_FILE="$APP_DIR/.env"
PIPELINE_VARIABLES='^(REDIS|CLICKHOUSE|SOT|INGESTION|LUIGI|ALERT|SMTP)_'

log() { echo "entrypoint: $*" >&2; }

# KEY='value' lines; python-dotenv reads \\ and \' inside single quotes back as \ and '.
write_env_file() {
    local tmp name value
    tmp="$(mktemp "$ENV_FILE.XXXXXX")"
    chmod 600 "$tmp"  # passwords
    {
        echo "# Written by docker/entrypoint.sh from the container's environment at every start; edits are lost."
        while IFS= read -r name; do
            [[ $name =~ $PIPELINE_VARIABLES ]] || continue
            value="${!name}"
            if [[ $value == *'${'* ]]; then
                log "warning: the value of $name contains \${, which python-dotenv expands as a variable"
            fi
            value="${value//\\/\\\\}"
            value="${value//\'/\\\'}"
            printf "%s='%s'\n" "$name" "$value"
        done < <(compgen -e | LC_ALL=C sort)
    } > "$tmp"
    mv -f "$tmp" "$ENV_FILE"
}

write_env_file

if [[ $# -gt 0 ]]; then
    exec "$@"
fi

cd "$APP_DIR"
# The image ships the crontab for the default networks; install the one for
# this container's INGESTION_NETWORKS (a bad value stops the container here).
crontab_file="$(mktemp)"
python -m workflows crontab > "$crontab_file"
crontab "$crontab_file"
log "installed crontab:"
cat "$crontab_file" >&2

# Show the jobs' logs in `docker compose logs worker` as well.
mapfile -t job_logs < <(grep -oE '>> *[^ ]+' "$crontab_file" | sed -E 's/^>> *//' | LC_ALL=C sort -u)
rm -f "$crontab_file"
if [[ ${#job_logs[@]} -gt 0 ]]; then
    tail -n 0 -F "${job_logs[@]}" 2>/dev/null &
fi

exec cron -f
