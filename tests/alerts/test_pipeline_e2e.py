"""End to end with the real parts: fault -> Prometheus alert -> Alertmanager -> webhook -> incident ticket
in the support desk -> resolved; ack in between; every dashboard query answered by the real Prometheus."""

from __future__ import annotations

import contextlib
import html
import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from urllib.parse import parse_qs

import pytest
import requests

from grafana.__main__ import OUTPUT
from grafana.lint import dashboard_expressions
from service_kit.alerting import AlertmanagerClient
from tests.alerts.stack import (
    PAGERDUTY_PATH,
    SLACK_PATH,
    AlertingStack,
    drive_demo_traffic,
    measure_fault_to_ticket,
)
from tests.servers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]  # the whole stack starts in setup


@pytest.fixture(scope="module")
def stack() -> Iterator[AlertingStack]:
    running = AlertingStack()
    yield running
    running.close()


def firing(stack: AlertingStack, alertname: str) -> list[dict]:
    return stack.prometheus.query(f'ALERTS{{alertname="{alertname}", alertstate="firing"}}')


def test_watchdog_reaches_alertmanager(stack: AlertingStack) -> None:
    client = AlertmanagerClient(stack.alertmanager.url)
    wait_until(lambda: bool(client.alerts({"alertname": "Watchdog"})), timeout=30)
    assert stack.incident_tickets("Watchdog") == []  # routed to its own receiver, never to the desk


def test_stopped_service_opens_an_incident_ticket_that_resolves_when_it_is_back(stack: AlertingStack) -> None:
    wait_until(lambda: stack.prometheus.query('service_up{service="redis"} == 1') != [], timeout=30)
    timings = measure_fault_to_ticket(stack)

    (ticket,) = stack.incident_tickets("ServiceDown")
    assert ticket["status"] == "resolved"
    assert ticket["priority"] == "urgent"  # critical
    assert ticket["subject"].startswith("[CRITICAL] ServiceDown")
    assert "redis" in ticket["subject"]
    assert stack.timers.floor <= timings["fault_to_ticket"] < 30
    assert timings["recovery_to_resolved"] < 30
    assert firing(stack, "ServiceDown") == []


TITLES = "Runbook|Dashboard|Source|Silence"
TEXT_LINK = re.compile(rf"^({TITLES}): +(\S+)\r?$", re.MULTILINE)  # email text (CRLF lines), ticket
SLACK_LINK = re.compile(rf"<([^|>]+)\|({TITLES})>")
HTML_LINK = re.compile(rf'<a href="([^"]+)">({TITLES})</a>')
MATCHER = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def slack_firing(stack: AlertingStack) -> list[dict]:
    return [
        attachment
        for body in stack.slack.bodies(SLACK_PATH)
        for attachment in body["attachments"]
        if attachment["title"] == "[FIRING:1] ServiceDown redis"
    ]


def emails_firing(stack: AlertingStack) -> list[EmailMessage]:
    return [message for message in stack.smtp.received() if message["Subject"] == "[FIRING:1] ServiceDown redis"]


def pagerduty_triggered(stack: AlertingStack) -> list[dict]:
    return [
        event
        for event in stack.pagerduty.bodies(PAGERDUTY_PATH)
        if event["event_action"] == "trigger" and event["payload"]["summary"] == "[FIRING:1] ServiceDown redis"
    ]


def silenced_labels(url: str, alertmanager: str) -> dict[str, str]:
    """The matchers of an Alertmanager new-silence link, after checking it is that Alertmanager's form."""
    base, _, fragment = url.partition("#")
    assert base == f"{alertmanager}/"
    path, _, query = fragment.partition("?")
    assert path == "/silences/new"
    (selector,) = parse_qs(query)["filter"]
    assert selector.startswith("{") and selector.endswith("}")
    return {name: re.sub(r"\\(.)", r"\1", value) for name, value in MATCHER.findall(selector)}


def test_slack_email_pagerduty_and_the_ticket_link_the_runbook_dashboard_source_and_silence(
    stack: AlertingStack,
) -> None:
    """Issue 14's proof with the real parts: Prometheus fires ServiceDown, Alertmanager renders the repository's
    templates into Slack, email and PagerDuty (local sinks) and posts the desk's webhook. Every one links the
    runbook section, opened on the running desk, and the rule's dashboard; the texts also link the rule's graph
    in Prometheus and Alertmanager's silence form for exactly the alert's labels."""
    fault_at = time.time()
    stack.redis.stop()
    try:
        wait_until(lambda: slack_firing(stack) and emails_firing(stack) and pagerduty_triggered(stack), timeout=60)
        ticket = stack.wait_for_ticket("ServiceDown", "open", since=fault_at)
        (alert,) = AlertmanagerClient(stack.alertmanager.url).alerts({"alertname": "ServiceDown", "service": "redis"})
    finally:
        stack.redis.start()
    email = emails_firing(stack)[-1]
    html_part, text_part = email.get_body(("html",)), email.get_body(("plain",))
    assert html_part is not None and text_part is not None
    messages = stack.ticket(ticket["id"])["messages"]
    found = {
        "slack": dict((title, url) for url, title in SLACK_LINK.findall(slack_firing(stack)[-1]["text"])),
        "email text": dict(TEXT_LINK.findall(text_part.get_content())),
        "email html": {title: html.unescape(url) for url, title in HTML_LINK.findall(html_part.get_content())},
        "ticket": dict(TEXT_LINK.findall(messages[-1]["body"])),
        "pagerduty": {link["text"]: link["href"] for link in pagerduty_triggered(stack)[-1]["links"]},
    }
    dashboards = {json.loads(path.read_text())["uid"] for path in OUTPUT.glob("*.json")}
    for channel, links in found.items():
        expected = {"Runbook", "Dashboard"} if channel == "pagerduty" else {"Runbook", "Dashboard", "Source", "Silence"}
        assert set(links) == expected, (channel, links, found)
        assert links["Runbook"] == f"{stack.desk.url}/runbooks/services.md#servicedown", channel
        page = requests.get(links["Runbook"].partition("#")[0], timeout=5)
        assert page.status_code == 200 and '<h2 id="servicedown">' in page.text, channel
        assert links["Dashboard"] == "http://127.0.0.1:3000/d/vibelux-overview", channel
        assert links["Dashboard"].rsplit("/", 1)[1] in dashboards
        if channel == "pagerduty":
            continue
        assert links["Source"].startswith(f"{stack.prometheus.url}/graph?g0.expr="), channel
        assert requests.get(links["Source"], timeout=5).status_code == 200
        assert silenced_labels(links["Silence"], stack.alertmanager.url) == alert["labels"], channel


def test_ack_silences_the_alert_in_alertmanager_and_unack_brings_it_back(stack: AlertingStack) -> None:
    """A real alert from Prometheus (not a posted one): stop Redis, ack, check, unack, restart."""
    client = AlertmanagerClient(stack.alertmanager.url)
    labels = {"alertname": "ServiceDown", "service": "redis"}
    stack.redis.stop()
    try:
        wait_until(lambda: [a["status"]["state"] for a in client.alerts(labels)] == ["active"], timeout=30)
        silence_id = client.ack(labels, by="oncall", comment="restarting redis", duration=timedelta(minutes=15))
        wait_until(lambda: [a["status"]["silencedBy"] for a in client.alerts(labels)] == [[silence_id]], timeout=10)
        client.unack(silence_id)
        wait_until(lambda: [a["status"]["state"] for a in client.alerts(labels)] == ["active"], timeout=10)
    finally:
        stack.redis.start()


# Every query variable at All (".+"), as a dashboard opens.
GRAFANA_VARIABLES = {"$__rate_interval": "15s", "$__range": "5m"} | {
    f"${name}": ".+" for name in ("job", "instance", "service", "probe", "store")
}


def dashboard_queries() -> list[tuple[str, str, str, bool]]:
    """(dashboard, panel, expr, panel may be empty) for every query of every committed dashboard."""
    queries = []
    for path in sorted(OUTPUT.glob("*.json")):
        dashboard = json.loads(path.read_text())
        no_value = {
            p["title"]: bool(p.get("fieldConfig", {}).get("defaults", {}).get("noValue")) for p in dashboard["panels"]
        }
        for title, expr in dashboard_expressions(dashboard):
            queries.append((path.stem, title, expr, no_value[title]))
    return queries


def test_every_dashboard_query_returns_data_from_the_running_stack(stack: AlertingStack) -> None:
    """Panels that may legitimately be empty say so (noValue) and are left out; every other query must
    return data, with demo traffic through the proxy and the flag service."""
    drive_demo_traffic(stack)
    pending = {}
    for dashboard, title, expr, may_be_empty in dashboard_queries():
        if may_be_empty:
            continue
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        pending[f"{dashboard} / {title}: {expr}"] = expr
    assert len(pending) >= 75

    def all_answered() -> bool:
        for key, expr in list(pending.items()):
            if stack.prometheus.query(expr):
                del pending[key]
        return not pending

    # rate() needs two scrapes of a series and the recording rules a few evaluations; what stays empty is listed
    with contextlib.suppress(TimeoutError):
        wait_until(all_answered, timeout=30, interval=1.0)
    assert sorted(pending) == [], "\n".join(sorted(pending))
