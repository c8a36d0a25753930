#!/usr/bin/env bash
# Installs the Debian packages the stack and its tests run for real; with BENCH=1 also wrk, which
# drives the benchmarks. Root installs with apt-get; anyone else gets the list to install.
set -euo pipefail

declare -A binary_of=(
  [redis-server]=redis-server
  [redis-sentinel]=redis-sentinel  # Sentinel topologies in the tests (tests/redis_topologies.py)
  [prometheus]=promtool
  [prometheus-alertmanager]=prometheus-alertmanager
  [chromium]=chromium
  [postgresql]=/usr/lib/postgresql
  [sqlite3]=sqlite3
  [pgbackrest]=pgbackrest  # PostgreSQL backups to S3 and restore drills (backups/)
  [postgresql-15-hypopg]=/usr/lib/postgresql/15/lib/hypopg.so  # index suggestions checked by the planner (query insights)
  [postgresql-15-rum]=/usr/lib/postgresql/15/lib/rum.so  # full-text ranking inside an index (the desk's search on PostgreSQL)
  [prometheus-node-exporter]=prometheus-node-exporter  # the infra exporter's tests compare against it
  [victoria-metrics]=victoria-metrics  # long-term storage of the Prometheus HA pair (HA=1 make up)
  [poppler-utils]=pdftoppm  # the reports tests turn PDFs into pages (pdftoppm) and text (pdftotext)
  [libpangoft2-1.0-0]="/usr/lib/$(uname -m)-linux-gnu/libpangoft2-1.0.so.0"  # Pango, which weasyprint renders the reports' PDFs with
  [fonts-dejavu-core]=/usr/share/fonts/truetype/dejavu  # a font for those PDFs and the charts
  [shellcheck]=shellcheck  # actionlint checks the CI workflow's run: scripts with it (tests/test_ci_workflow.py)
  [nginx-light]=/usr/sbin/nginx  # the production balancer, run for real (and the benches' upstream);
                                 # a path: /usr/sbin is not on a non-root user's PATH on Debian
)
if [[ "${BENCH:-}" == 1 ]]; then
  binary_of+=([wrk]=wrk)
fi

missing=()
for package in "${!binary_of[@]}"; do
  target=${binary_of[$package]}
  if [[ "$target" == /* ]]; then [[ -e "$target" ]] && continue
  else command -v "$target" >/dev/null 2>&1 && continue; fi
  missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "missing system packages: ${missing[*]} (install them: sudo apt-get install -y ${missing[*]})" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts some daemons on install; the stack and the tests run their own on their own ports.
for service in redis-server redis-sentinel prometheus prometheus-alertmanager prometheus-node-exporter nginx postgresql; do
  if command -v service >/dev/null 2>&1; then service "$service" stop >/dev/null 2>&1 || true; fi
done
# Where no init system stopped them, the packages' daemons still run under their own system users and
# would hold the stack's default ports (6379, 9090, 9093, 9100).
for user in redis prometheus postgres; do
  if id "$user" >/dev/null 2>&1; then pkill -u "$user" >/dev/null 2>&1 || true; fi
done
# victoria-metrics' daemon likewise (it would hold 8428, where `HA=1 make up` runs VictoriaMetrics).
if command -v service >/dev/null 2>&1; then service victoria-metrics stop >/dev/null 2>&1 || true; fi
if id _victoria-metrics >/dev/null 2>&1; then pkill -u _victoria-metrics >/dev/null 2>&1 || true; fi
