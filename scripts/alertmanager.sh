#!/usr/bin/env bash
# Runs Alertmanager with config/alertmanager.yml. Receiver secrets come from the environment (or <VAR>_FILE):
# they are written, readable by this user only, to secrets/ next to a copy of the config, which is where the
# config's *_file settings point. An unset secret leaves its receiver failing to deliver, and says so here.
set -euo pipefail
cd "$(dirname "$0")/.."

run_dir=${ALERTMANAGER_RUN_DIR:-.run/alertmanager}
listen=${ALERTMANAGER_LISTEN:-127.0.0.1:9093}
mkdir -p "$run_dir/secrets" "$run_dir/data"
chmod 700 "$run_dir/secrets"
cp config/alertmanager.yml "$run_dir/alertmanager.yml"

declare -A secret_files=(
  [ALERTMANAGER_WEBHOOK_TOKEN]=support-desk-webhook-token
  [SLACK_WEBHOOK_URL]=slack-webhook-url
  [PAGERDUTY_ROUTING_KEY]=pagerduty-routing-key
  [SMTP_PASSWORD]=smtp-password
)
for var in "${!secret_files[@]}"; do
  target="$run_dir/secrets/${secret_files[$var]}"
  file_var="${var}_FILE"
  rm -f "$target"
  if [[ -n "${!file_var:-}" ]]; then
    (umask 077 && cp "${!file_var}" "$target")
  elif [[ -n "${!var:-}" ]]; then
    (umask 077 && printf '%s' "${!var}" >"$target")
  else
    echo "alertmanager: $var is not set; receivers using secrets/${secret_files[$var]} will fail to deliver" >&2
  fi
done

# Clustering is off unless ALERTMANAGER_CLUSTER_LISTEN (host:port) is set, as Procfile.ha does for the pair:
# then this peer gossips there and joins each of ALERTMANAGER_CLUSTER_PEERS (space-separated host:port).
cluster=(--cluster.listen-address=)
if [[ -n "${ALERTMANAGER_CLUSTER_LISTEN:-}" ]]; then
  cluster=(--cluster.listen-address="$ALERTMANAGER_CLUSTER_LISTEN" --cluster.advertise-address="$ALERTMANAGER_CLUSTER_LISTEN")
  for peer in ${ALERTMANAGER_CLUSTER_PEERS:-}; do cluster+=(--cluster.peer="$peer"); done
fi

# Relative *_file paths in the config resolve against the working directory.
cd "$run_dir"
exec prometheus-alertmanager --config.file=alertmanager.yml --storage.path=data \
  --web.listen-address="$listen" "${cluster[@]}" "$@"
