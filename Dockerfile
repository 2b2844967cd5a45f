# The sot-ingestion image: the worker (cron running RunDaily per network) and
# luigid (`python -m workflows luigid ...`). See docker-compose.yml.
FROM python:3.11-slim-bookworm

# cron runs the jobs in UTC (the crontab's hours are UTC)
ENV TZ=UTC \
    PYTHONUNBUFFERED=1

# cron, and util-linux for flock (the crontab skips a run while the previous one
# for the network still holds its lock). pam_loginuid cannot set the login uid
# in a container without CAP_AUDIT_CONTROL and would make cron refuse every job:
# make it optional, and stop the build if that edit no longer applies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cron util-linux \
    && rm -rf /var/lib/apt/lists/* \
    && sed -i -E 's/^(session[[:space:]]+)required([[:space:]]+pam_loginuid\.so)/\1optional\2/' /etc/pam.d/cron \
    && grep -Eq '^session[[:space:]]+optional[[:space:]]+pam_loginuid\.so' /etc/pam.d/cron

WORKDIR /app
COPY . /app

# pip puts the `luigi` console script in /usr/local/bin, where the crontab calls it.
# crontab(1) installs root's crontab (a file in /etc/cron.d would need a user field);
# the entrypoint replaces it with the one for the container's INGESTION_NETWORKS.
RUN pip install --no-cache-dir --disable-pip-version-check /app \
    && rm -rf /app/build /app/*.egg-info \
    && test -x /usr/local/bin/luigi \
    && crontab /app/crontab \
    && chmod 0755 /app/docker/entrypoint.sh \
    && mkdir -p /var/log/sot-ingestion /var/lib/sot-downloads /var/lib/luigid /var/log/luigid

ENTRYPOINT ["/app/docker/entrypoint.sh"]
