"""End to end with the real parts: fault -> Prometheus alert -> Alertmanager -> webhook -> incident ticket
in the support desk -> resolved; ack in between; every dashboard query answered by the real Prometheus."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest

from grafana.__main__ import OUTPUT
from grafana.lint import dashboard_expressions
from service_kit.alerting import AlertmanagerClient
from tests.alerts.stack import AlertingStack, drive_demo_traffic, measure_fault_to_ticket
from tests.servers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]  # the whole stack starts in setup


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
    assert sorted(pending) == []
