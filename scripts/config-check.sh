#!/usr/bin/env bash
# Checks every Prometheus / Alertmanager file with the real tools, as each file appears in the repo.
set -euo pipefail
cd "$(dirname "$0")/.."

shopt -s nullglob
rules=(alert_rules/*.yml)
rule_tests=(alert_rules/tests/*.yml)

if [[ ${#rules[@]} -gt 0 ]]; then promtool check rules "${rules[@]}"; fi
if [[ -f config/prometheus.yml ]]; then promtool check config config/prometheus.yml; fi
if [[ -f config/prometheus.ha.yml ]]; then promtool check config config/prometheus.ha.yml; fi
if [[ -f config/prometheus.compose.yml ]]; then promtool check config --syntax-only config/prometheus.compose.yml; fi
if [[ -f config/prometheus.ha.yml ]]; then promtool check config config/prometheus.ha.yml; fi
if [[ -f config/prometheus.compose.ha.yml ]]; then promtool check config --syntax-only config/prometheus.compose.ha.yml; fi
if [[ -f config/prometheus.staging.yml ]]; then promtool check config config/prometheus.staging.yml; fi
if [[ -f config/prometheus.staging.compose.yml ]]; then promtool check config --syntax-only config/prometheus.staging.compose.yml; fi
if [[ ${#rule_tests[@]} -gt 0 ]]; then promtool test rules "${rule_tests[@]}"; fi
if [[ -f config/alertmanager.yml ]]; then
  amtool check-config config/alertmanager.yml
  if [[ -f config/alertmanager.compose.yml ]]; then amtool check-config config/alertmanager.compose.yml; fi
  if [[ -x alert_rules/tests/routes.sh ]]; then alert_rules/tests/routes.sh; fi
fi
# Every notification template executes (on amtool's example data): a typo fails here, not at a notification.
if [[ -f config/alertmanager.tmpl ]]; then
  for name in $(grep -oE '\{\{ define "[^"]+"' config/alertmanager.tmpl | cut -d'"' -f2); do
    amtool template render --template.glob=config/alertmanager.tmpl --template.text="{{ template \"$name\" . }}" >/dev/null
  done
  echo "SUCCESS: config/alertmanager.tmpl renders"
fi
# The production balancer: nginx resolves upstream names while it reads the file, and `proxy` exists only on
# the compose network, so the check reads it with the replicas pointed at 127.0.0.1 (the one line changed;
# `nginx -t` opens no listening socket; pid and error_log go last, so an error's line number is the repo
# file's). tests/ratelimit_proxy/test_load_balancer.py runs it for real.
if [[ -f config/nginx.lb.conf ]]; then
  lb_dir=$(mktemp -d)
  trap 'rm -rf "$lb_dir"' EXIT
  { sed 's/server proxy:8080 /server 127.0.0.1:8080 /' config/nginx.lb.conf
    echo "pid $lb_dir/nginx.pid; error_log stderr;"; } >"$lb_dir/nginx.conf"
  if ! grep -q 'server 127.0.0.1:8080 ' "$lb_dir/nginx.conf"; then
    echo "config/nginx.lb.conf: no 'server proxy:8080 ...' line to point at 127.0.0.1" >&2
    exit 1
  fi
  PATH="$PATH:/usr/sbin" nginx -q -t -c "$lb_dir/nginx.conf" -p "$lb_dir"  # Debian's non-root PATH lacks sbin
fi
