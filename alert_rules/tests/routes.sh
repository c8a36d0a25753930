#!/usr/bin/env bash
# Routing cases for config/alertmanager.yml, checked by amtool against the real routing tree.
set -euo pipefail
cd "$(dirname "$0")/../.."
config=config/alertmanager.yml
failures=0

expect() {
  local receivers=$1
  shift
  if ! amtool config routes test --config.file="$config" --verify.receivers="$receivers" "$@" >/dev/null 2>&1; then
    echo "route test failed: {$*} should reach [$receivers], reaches [$(amtool config routes test --config.file="$config" "$@" 2>/dev/null)]" >&2
    failures=$((failures + 1))
  fi
}

# critical pages the on-call and opens an incident ticket
expect oncall-pager,support-desk alertname=ServiceDown service=redis severity=critical
expect oncall-pager,support-desk alertname=ApiErrorBudgetBurn service=api slo=api-availability severity=critical
# warning goes to chat and opens an incident ticket
expect team-chat,support-desk alertname=ApiErrorBudgetBurn service=api slo=api-availability severity=warning
expect team-chat,support-desk alertname=SupportSlaBreached service=tickets severity=warning priority=urgent
expect team-chat,support-desk alertname=HostHighCpu instance=web:9101 severity=warning
# info and unknown severities are never notified
expect blackhole alertname=FlagsStale service=flags severity=info
expect blackhole alertname=SomethingNew
# the Watchdog reaches its dead man's switch receiver whatever its severity
expect watchdog alertname=Watchdog severity=none
expect watchdog alertname=Watchdog severity=critical

if [[ $failures -gt 0 ]]; then
  echo "$failures routing case(s) failed" >&2
  exit 1
fi
echo "routes.sh: all routing cases pass"
