"""The rule files as a whole: every alert is complete, documented, unit-tested, routed, and uses real metrics."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from grafana.__main__ import OUTPUT
from grafana.lint import dashboard_expressions, expression_problems, selectors
from service_kit.urls import load_urls
from tests.alerts.helpers import REPO, alert_rules, alertmanager_config, unknown_metrics
from tickets_app.runbooks import github_anchor

ALERTS = alert_rules()
RECEIVERS_BY_SEVERITY = {
    "critical": "oncall-pager,support-desk",
    "warning": "team-chat,support-desk",
    "info": "blackhole",
}


URLS = load_urls(REPO / "config" / "urls.yml", environ={})
# Alerts whose metrics no dashboard panel queries, and the dashboard of their area: there is no backups
# dashboard yet (Overview lists every firing alert); the infrastructure dashboard's processes show whether
# an exporter runs; the Services and Feature flags dashboards go blank for a service Prometheus cannot scrape;
# Services shows the probe durations behind ServiceDegraded; Overview has the Watchdog's own panel.
AREA_DASHBOARDS = {
    "ReportsServiceDown": "vibelux-services",
    "ExporterDown": "vibelux-infrastructure",
    "FlagsServiceDown": "vibelux-flags",
    "ServiceTargetDown": "vibelux-services",
    "ServiceDegraded": "vibelux-services",
    "Watchdog": "vibelux-overview",
}


def used_metrics(expr: str) -> set[str]:
    """The metrics an expression reads, with those behind every recording rule it uses."""
    names = {name for name, _ in selectors(expr)}
    return names.union(*(used_metrics(RECORDED[name]) for name in names & RECORDED.keys()))


RECORDED = {
    rule["record"]: rule["expr"]
    for group in yaml.safe_load((REPO / "alert_rules" / "recording.yml").read_text())["groups"]
    for rule in group["rules"]
}
DASHBOARD_METRICS = {
    dashboard["uid"]: set().union(*(used_metrics(expr) for _, expr in dashboard_expressions(dashboard)))
    for dashboard in (json.loads(path.read_text()) for path in sorted(OUTPUT.glob("*.json")))
}


def alert_id(rule: dict) -> str:
    return f"{rule['alert']}-{rule['labels']['severity']}"


def promtool_cases() -> tuple[set[str], set[str]]:
    """Alert names with a promtool case where they fire, and with one where they must not."""
    fires, stays_quiet = set(), set()
    for path in (REPO / "alert_rules" / "tests").glob("*.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else stays_quiet).add(case["alertname"])
    return fires, stays_quiet


@pytest.mark.parametrize("rule", ALERTS, ids=alert_id)
def test_alert_has_severity_summary_and_templated_description(rule: dict) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning", "info", "none"}
    annotations = rule["annotations"]
    assert annotations["summary"]
    assert "{{" in annotations["description"] or rule["alert"] == "Watchdog"


@pytest.mark.parametrize("rule", ALERTS, ids=alert_id)
def test_alert_links_its_runbook_section_and_its_dashboard_by_absolute_url(rule: dict) -> None:
    """Links a Slack message, an email or a ticket can open: on config/urls.yml's bases (what `make up`
    loads; other deployments render them), to a section that exists and to the dashboard that covers it."""
    annotations = rule["annotations"]
    prefix = URLS.runbooks_base + "/"
    assert annotations["runbook_url"].startswith(prefix)
    page, _, anchor = annotations["runbook_url"].removeprefix(prefix).partition("#")
    path = REPO / "docs" / "runbooks" / page
    assert path.is_file(), f"docs/runbooks/{page} does not exist"
    headings = {github_anchor(line[3:]) for line in path.read_text().splitlines() if line.startswith("## ")}
    assert anchor in headings, f"docs/runbooks/{page} has no section for #{anchor}"
    uid = annotations["dashboard_url"].removeprefix(URLS.grafana + "/d/")
    assert annotations["dashboard_url"] == URLS.dashboard(uid)
    assert uid in DASHBOARD_METRICS, f"no dashboard has uid {uid}"
    if rule["alert"] in AREA_DASHBOARDS:
        assert uid == AREA_DASHBOARDS[rule["alert"]]
    else:
        covering = {name for name, metrics in DASHBOARD_METRICS.items() if metrics & used_metrics(rule["expr"])}
        assert uid in covering, f"{uid} queries none of the alert's metrics; these do: {sorted(covering)}"


@pytest.mark.parametrize("rule", ALERTS, ids=alert_id)
def test_alert_has_a_promtool_case_where_it_fires_and_one_where_it_must_not(rule: dict) -> None:
    fires, stays_quiet = promtool_cases()
    assert rule["alert"] in fires
    if rule["alert"] != "Watchdog":  # vector(1) cannot be quiet
        assert rule["alert"] in stays_quiet


@pytest.mark.parametrize("rule", ALERTS, ids=alert_id)
def test_alert_expression_uses_contract_metrics_and_counters_only_in_rate(rule: dict) -> None:
    assert expression_problems(rule["expr"], rule["alert"]) == []
    assert unknown_metrics({name for name, _ in selectors(rule["expr"])}) == set()


def test_recording_rules_use_contract_metrics_and_counters_only_in_rate() -> None:
    groups = yaml.safe_load((REPO / "alert_rules" / "recording.yml").read_text())["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        assert expression_problems(rule["expr"], rule["record"]) == []
        assert unknown_metrics({name for name, _ in selectors(rule["expr"])}) == set(), rule["record"]


@pytest.mark.parametrize("rule", [r for r in ALERTS if r["alert"] != "Watchdog"], ids=alert_id)
def test_alert_reaches_the_receivers_of_its_severity(rule: dict) -> None:
    """Route each alert's own static labels through the real routing tree with amtool."""
    labels = {"alertname": rule["alert"], "service": "some-service"} | rule["labels"]
    words = [f"{name}={value}" for name, value in labels.items() if "{{" not in value]
    result = subprocess.run(
        ["amtool", "config", "routes", "test", f"--config.file={REPO / 'config' / 'alertmanager.yml'}", *words],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == RECEIVERS_BY_SEVERITY[rule["labels"]["severity"]]


def test_critical_inhibits_warning_only_for_the_same_alert_and_service() -> None:
    (severity_rule, *_) = alertmanager_config()["inhibit_rules"]
    assert severity_rule["source_matchers"] == ['severity="critical"']
    assert severity_rule["target_matchers"] == ['severity="warning"']
    assert severity_rule["equal"] == ["alertname", "service"]


def test_alertmanager_config_holds_no_secret_only_file_references() -> None:
    text = (REPO / "config" / "alertmanager.yml").read_text()
    for key in ("routing_key:", "api_url:", "auth_password:", "credentials:", "service_key:"):
        assert key not in text
    config = alertmanager_config()
    files = [
        config["global"]["smtp_auth_password_file"],
        *(c["routing_key_file"] for r in config["receivers"] for c in r.get("pagerduty_configs", [])),
        *(c["api_url_file"] for r in config["receivers"] for c in r.get("slack_configs", [])),
        *(
            c["http_config"]["authorization"]["credentials_file"]
            for r in config["receivers"]
            for c in r.get("webhook_configs", [])
        ),
    ]
    assert all(path.startswith("secrets/") for path in files)


def test_compose_gives_alertmanager_every_secret_file_its_config_reads() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    targets = {secret["target"] for secret in compose["services"]["alertmanager"]["secrets"]}
    text = (REPO / "config" / "alertmanager.yml").read_text()
    read = set(re.findall(r"_file: (secrets/[\w.-]+)", text))
    assert {f"/etc/alertmanager/{path}" for path in read} == targets
    # every declared secret goes to a service: the receivers' to Alertmanager, the S3 keys to the backup services
    given = {
        secret if isinstance(secret, str) else secret["source"]
        for service in compose["services"].values()
        for secret in service.get("secrets", [])
    }
    assert set(compose["secrets"]) == given


def test_compose_alertmanager_config_differs_only_in_the_desk_address() -> None:
    compose = yaml.safe_load((REPO / "config" / "alertmanager.compose.yml").read_text())
    expected = alertmanager_config(webhook_url="http://tickets:8081/api/v1/alerts/webhook")
    assert compose.pop("templates") == ["alertmanager.tmpl"]  # beside the config in both
    assert [Path(path).name for path in expected.pop("templates")] == ["alertmanager.tmpl"]
    assert compose == expected
    render = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["alerting-config"]
    assert "./config/alertmanager.compose.yml:/app/config/alertmanager.compose.yml:ro" in render["volumes"]
    assert "./config/alertmanager.tmpl:/app/config/alertmanager.tmpl:ro" in render["volumes"]
