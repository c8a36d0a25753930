#!/usr/bin/env bash
# Runs Alertmanager with config/alertmanager.yml. Receiver secrets come from the environment (or <VAR>_FILE):
# they are written, readable by this user only, to secrets/ in the run directory. What runs is the config
# rendered by `vibelux-alerting alertmanager`: those paths made absolute, and each integration whose secret is
# missing left out and named once here, instead of failing at every notification. --web.external-url is the
# `alertmanager` address of config/urls.yml (VIBELUX_URLS_ALERTMANAGER overrides it): the silence links of
# notifications and incident tickets open it. Both peers of the HA pair take it: silences are gossiped.
set -euo pipefail
cd "$(dirname "$0")/.."

run_dir=${ALERTMANAGER_RUN_DIR:-.run/alertmanager}
listen=${ALERTMANAGER_LISTEN:-127.0.0.1:9093}
mkdir -p "$run_dir/secrets" "$run_dir/data"
chmod 700 "$run_dir/secrets"

declare -A secret_files=(
  [ALERTMANAGER_WEBHOOK_TOKEN]=support-desk-webhook-token
  [SLACK_WEBHOOK_URL]=slack-webhook-url
  [PAGERDUTY_ROUTING_KEY]=pagerduty-routing-key
  [SMTP_PASSWORD]=smtp-password
)
missing=()
for var in "${!secret_files[@]}"; do
  target="$run_dir/secrets/${secret_files[$var]}"
  file_var="${var}_FILE"
  rm -f "$target"
  if [[ -n "${!file_var:-}" ]]; then
    (umask 077 && cp "${!file_var}" "$target")
  elif [[ -n "${!var:-}" ]]; then
    (umask 077 && printf '%s' "${!var}" >"$target")
  else
    missing+=("$var")
  fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "alertmanager: not set (nor <VAR>_FILE): $(printf '%s\n' "${missing[@]}" | sort | paste -sd ' ')" >&2
fi
.venv/bin/vibelux-alerting alertmanager config/alertmanager.yml --files-base "$run_dir" --out "$run_dir/alertmanager.yml"
external_url=$(.venv/bin/vibelux-alerting url alertmanager)

# Clustering is off unless ALERTMANAGER_CLUSTER_LISTEN (host:port) is set, as Procfile.ha does for the pair:
# then this peer gossips there and joins each of ALERTMANAGER_CLUSTER_PEERS (space-separated host:port).
cluster=(--cluster.listen-address=)
if [[ -n "${ALERTMANAGER_CLUSTER_LISTEN:-}" ]]; then
  cluster=(--cluster.listen-address="$ALERTMANAGER_CLUSTER_LISTEN" --cluster.advertise-address="$ALERTMANAGER_CLUSTER_LISTEN")
  for peer in ${ALERTMANAGER_CLUSTER_PEERS:-}; do cluster+=(--cluster.peer="$peer"); done
fi

cd "$run_dir"
exec prometheus-alertmanager --config.file=alertmanager.yml --storage.path=data \
  --web.listen-address="$listen" --web.external-url="$external_url" "${cluster[@]}" "$@"
