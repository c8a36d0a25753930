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
if [[ ${#rule_tests[@]} -gt 0 ]]; then promtool test rules "${rule_tests[@]}"; fi
if [[ -f config/alertmanager.yml ]]; then
  amtool check-config config/alertmanager.yml
  if [[ -f config/alertmanager.compose.yml ]]; then amtool check-config config/alertmanager.compose.yml; fi
  if [[ -x alert_rules/tests/routes.sh ]]; then alert_rules/tests/routes.sh; fi
fi
