"""config/alertmanager.tmpl rendered by amtool (Alertmanager's own template code) for a real rule's alert.

The delivery of the same texts through a real Alertmanager is in test_pipeline_e2e.py; here each template is
checked on its own, quickly, including what only a test can set up: label values that need escaping.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from service_kit.alerting.silences import silence_url
from tests.alerts.helpers import REPO, alert_rules

TEMPLATES = REPO / "config" / "alertmanager.tmpl"
RULE = next(rule for rule in alert_rules() if rule["alert"] == "SupportUrgentTicketUnassigned")
LINKS = {key: RULE["annotations"][key] for key in ("runbook_url", "dashboard_url")}
GRAPH = "http://127.0.0.1:9090/graph?g0.expr=support_tickets_unassigned%7Bpriority%3D%22urgent%22%7D+%3E+0&g0.tab=1"


def notification(status: str = "firing", **labels: str) -> dict[str, Any]:
    """Alertmanager's template data for one alert of the rule, as Prometheus would have expanded it."""
    alert_labels = {"alertname": RULE["alert"], **RULE["labels"], "priority": "urgent", **labels}
    return {
        "receiver": "team-chat",
        "status": status,
        "alerts": [
            {
                "status": status,
                "labels": alert_labels,
                "annotations": {
                    "summary": RULE["annotations"]["summary"],
                    "description": "4 urgent tickets have had no assignee for 15 minutes.",
                    **LINKS,
                },
                "startsAt": "2026-11-24T10:00:00Z",
                "endsAt": "2026-11-24T10:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
                "generatorURL": GRAPH,
                "fingerprint": "5b2d9e0c4a1f8e7d",
            }
        ],
        "groupLabels": {"alertname": RULE["alert"], "service": "tickets"},
        "commonLabels": alert_labels,
        "commonAnnotations": {"summary": RULE["annotations"]["summary"], **LINKS},
        "externalURL": "http://127.0.0.1:9093",
    }


def render(template: str, data: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data))
    result = subprocess.run(
        ["amtool", "template", "render", f"--template.glob={TEMPLATES}", f"--template.data={path}",
         f'--template.text={{{{ template "{template}" . }}}}'],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout


def test_title_names_status_count_alert_and_service(tmp_path: Path) -> None:
    assert render("vibelux.title", notification(), tmp_path) == f"[FIRING:1] {RULE['alert']} tickets"
    assert render("vibelux.title", notification("resolved"), tmp_path) == f"[RESOLVED] {RULE['alert']} tickets"


def test_slack_text_has_summary_value_labels_and_every_link(tmp_path: Path) -> None:
    data = notification()
    text = render("vibelux.slack.text", data, tmp_path)
    assert text.splitlines() == [
        "*Urgent tickets have no assignee*",
        "4 urgent tickets have had no assignee for 15 minutes.",
        "`priority=urgent` `service=tickets` `severity=warning` ",
        f"<{LINKS['runbook_url']}|Runbook> · <{LINKS['dashboard_url']}|Dashboard> · <{GRAPH}|Source>",
        f"<{silence_url(data['externalURL'], data['commonLabels'])}|Silence>",
    ]


def test_email_text_lists_the_same_with_one_link_a_line(tmp_path: Path) -> None:
    data = notification("resolved")
    text = render("vibelux.email.text", data, tmp_path)
    assert f"[RESOLVED] {RULE['alert']} tickets" in text
    assert "Urgent tickets have no assignee (resolved)" in text
    assert "  - priority: urgent\n" in text
    for line in (
        f"Runbook:   {LINKS['runbook_url']}",
        f"Dashboard: {LINKS['dashboard_url']}",
        f"Source:    {GRAPH}",
        f"Silence:   {silence_url(data['externalURL'], data['commonLabels'])}",
    ):
        assert line in text.splitlines()


@pytest.mark.parametrize("value", ['say "hi"', "a b+c", "back\\slash", "ümlaut & <tag>"])
def test_the_silence_link_is_the_one_the_desk_writes_whatever_the_label_values(tmp_path: Path, value: str) -> None:
    """The template (Go) and the desk (service_kit.alerting.silences.silence_url) agree byte for byte."""
    data = notification(note=value)
    text = render("vibelux.silence_url", data, tmp_path)
    assert text == silence_url(data["externalURL"], data["commonLabels"])
