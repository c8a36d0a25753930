#!/usr/bin/env bash
# `make up`: run the whole stack in the foreground with honcho; one Ctrl-C stops every process.
# Processes whose config file or package has not landed yet are left out, so this runs what exists.
# HA=1 runs the Prometheus pair with VictoriaMetrics and two clustered Alertmanagers (Procfile.ha).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .run/redis .run/prometheus .run/alertmanager

# HA=1: the Prometheus HA pair writing to VictoriaMetrics, and two clustered Alertmanagers, instead of one
# of each. Procfile.ha's lines replace Procfile's of the same name and add the others.
procfile=Procfile ha_ports=()
if [[ "${HA:-}" == 1 ]]; then
  mkdir -p .run/prometheus-2 .run/victoriametrics .run/alertmanager-2
  procfile=.run/Procfile.ha ha_ports=(9091 8428 9094 9095 9096)
  { grep -v -E "^($(grep -oE '^[a-z0-9-]+' Procfile.ha | paste -sd '|')):" Procfile; cat Procfile.ha; } > "$procfile"
fi

# STAGING=1 (`make staging`): the staging profile instead, every port 10000 above production's: Redis, two demo
# colours, the proxy on config/ratelimit_proxy.staging.yml, its Prometheus and the release controller
# (Procfile.staging). It runs beside a production `make up`.
if [[ "${STAGING:-}" == 1 ]]; then
  mkdir -p .run/staging/redis .run/staging/prometheus
  if [[ -z "${REDIS_PASSWORD:-}" ]]; then
    REDIS_PASSWORD=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')
  fi
  export REDIS_PASSWORD RATELIMIT_PROXY_REDIS__PASSWORD="$REDIS_PASSWORD"
  .venv/bin/python - <<'PY'
import socket, sys

taken = []
for port in (16379, 18000, 18010, 18080, 19090, 19180):
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            taken.append(str(port))
if taken:
    sys.exit(f"make staging: port(s) {', '.join(taken)} already in use")
PY
  cat <<'URLS'
VibeLux staging is starting; Ctrl-C stops everything.
  demo API, blue      http://127.0.0.1:18000
  demo API, green     http://127.0.0.1:18010
  rate-limit proxy    http://127.0.0.1:18080   (admin and metrics: http://127.0.0.1:19180)
  Prometheus          http://127.0.0.1:19090
  releases            VIBELUX_RATELIMIT_PROXY_CONFIG=config/ratelimit_proxy.staging.yml .venv/bin/vibelux-release status
URLS
  exec .venv/bin/honcho -f Procfile.staging -d . start
fi

# The stack's public URLs (config/urls.yml; VIBELUX_URLS_<KEY> overrides one, e.g. VIBELUX_URLS_ALERTMANAGER=
# http://vm:9093 for a stack opened from another machine): Prometheus's --web.external-url (Procfile), the alert
# rules' links, rendered into .run/alert_rules where config/prometheus*.yml load them, and Alertmanager's
# external URL (scripts/alertmanager.sh). A bad value stops here, naming the key.
VIBELUX_URLS_PROMETHEUS=$(.venv/bin/vibelux-alerting url prometheus)
export VIBELUX_URLS_PROMETHEUS
.venv/bin/vibelux-alerting rules --out .run/alert_rules

# Alertmanager and the support desk share one webhook token; a local run without one gets a fresh one.
if [[ -z "${ALERTMANAGER_WEBHOOK_TOKEN:-}${ALERTMANAGER_WEBHOOK_TOKEN_FILE:-}" ]]; then
  ALERTMANAGER_WEBHOOK_TOKEN=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')
  export ALERTMANAGER_WEBHOOK_TOKEN
fi

# Redis requires a password, even on loopback (anyone who reaches it could mint API keys): a local run
# without REDIS_PASSWORD gets a fresh one, handed to redis-server on stdin (not in `ps`) and to the services
# through their own settings.
if [[ -z "${REDIS_PASSWORD:-}" ]]; then
  REDIS_PASSWORD=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')
fi
export REDIS_PASSWORD RATELIMIT_PROXY_REDIS__PASSWORD="$REDIS_PASSWORD" FLAGS_REDIS__PASSWORD="$REDIS_PASSWORD"
export EXPORTER_HEALTH_PROBES__REDIS__PASSWORD="$REDIS_PASSWORD" BACKUP_REDIS__PROXY__PASSWORD="$REDIS_PASSWORD"

# The local S3 (python -m backups.local_s3) accepts the backup tool's keys only, and the backups hold every
# ticket and flag: a run without keys gets fresh ones, in the environment of the S3 server (which writes them
# to .run/s3/s3.json, mode 0600), the replicator and the jobs.
if [[ -z "${BACKUP_S3__ACCESS_KEY:-}${BACKUP_S3__ACCESS_KEY_FILE:-}" ]]; then
  BACKUP_S3__ACCESS_KEY=$(.venv/bin/python -c 'import secrets; print("VL" + secrets.token_hex(9).upper())')
  export BACKUP_S3__ACCESS_KEY
fi
if [[ -z "${BACKUP_S3__SECRET_KEY:-}${BACKUP_S3__SECRET_KEY_FILE:-}" ]]; then
  BACKUP_S3__SECRET_KEY=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(30))')
  export BACKUP_S3__SECRET_KEY
fi

# honcho stops everything when one process exits, so a port already taken would end the run at once:
# say which, before starting anything.
.venv/bin/python - "${ha_ports[@]}" <<'PY'
import socket, sys

from backups.local_s3 import PORTS  # weed's own ports beside the S3 one (8333)

taken = []
stack = (6379, 8000, 8080, 8081, 8082, 8083, 8333, 9090, 9093, 9101, 9102, 9103, 9104, 9180, *PORTS.values())
for port in (*stack, *map(int, sys.argv[1:])):
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            taken.append(str(port))
if taken:
    sys.exit(f"make up: port(s) {', '.join(taken)} already in use; stop what holds them (a system redis-server?)")
PY

.venv/bin/python - "$procfile" <<'PY'
import importlib.util, re, sys
from pathlib import Path

kept = []
for line in Path(sys.argv[1]).read_text().splitlines():
    match = re.match(r"^([\w-]+):\s*(.+)$", line)
    if not match:
        continue
    command = match.group(2)
    configs = re.findall(r"config/[\w./-]+\.yml", command)
    modules = re.findall(r"-m ([\w.]+)", command)
    scripts = re.findall(r"\.venv/bin/(vibelux-[\w-]+)", command)
    missing = [c for c in configs if not Path(c).exists()]
    missing += [m for m in modules if importlib.util.find_spec(m.split(".")[0]) is None]
    missing += [s for s in scripts if not Path(".venv/bin", s).exists()]
    if missing:
        print(f"  (not started: {match.group(1)}, missing {', '.join(missing)})", file=sys.stderr)
        continue
    kept.append(line)
Path(".run/Procfile").write_text("\n".join(kept) + "\n")
PY

cat <<'URLS'
VibeLux Ops is starting; Ctrl-C stops everything.
  demo API            http://127.0.0.1:8000
  rate-limit proxy    http://127.0.0.1:8080   (admin and metrics: http://127.0.0.1:9180)
  support desk        http://127.0.0.1:8081
  feature flags       http://127.0.0.1:8082
  reports             http://127.0.0.1:8083   (demo reports and schedule: /api/v1/reports, /api/v1/schedules)
  exporters           http://127.0.0.1:9101/metrics  :9102/metrics  :9103/metrics
  backups (metrics)   http://127.0.0.1:9104/metrics   (Litestream of the desk and flags databases, drills hourly)
  object store (S3)   https://127.0.0.1:8333   (bucket vibelux-backups, CA .run/s3/ca.pem, this run's keys in .run/s3/s3.json)
  Prometheus          http://127.0.0.1:9090
  Alertmanager        http://127.0.0.1:9093
URLS
if [[ "${HA:-}" == 1 ]]; then
  echo "  Prometheus replica 2 http://127.0.0.1:9091   (HA pair; both write to VictoriaMetrics)"
  echo "  VictoriaMetrics     http://127.0.0.1:8428   (deduplicated: point Grafana here)"
  echo "  Alertmanager peer   http://127.0.0.1:9095   (clustered with :9093; both replicas send to both)"
fi
exec .venv/bin/honcho -f .run/Procfile -d . start
