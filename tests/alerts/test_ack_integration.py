"""ack / unack against a real Alertmanager running config/alertmanager.yml."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from service_kit.alerting import AlertmanagerClient
from service_kit.alerting.cli import main
from tests.servers import AlertmanagerServer

pytestmark = pytest.mark.integration


def fire(alertmanager: AlertmanagerServer, **labels: str) -> dict[str, str]:
    """Post a firing alert as Prometheus would; a unique service keeps tests apart on the shared server."""
    alert_labels = {
        "alertname": "ServiceDown",
        "severity": "critical",
        "service": f"svc-{uuid.uuid4().hex[:8]}",
    }
    alert_labels |= labels
    ends = datetime.now(UTC) + timedelta(minutes=10)
    response = requests.post(
        f"{alertmanager.url}/api/v2/alerts",
        json=[{"labels": alert_labels, "annotations": {"summary": "test"}, "endsAt": ends.isoformat()}],
        timeout=5,
    )
    response.raise_for_status()
    return alert_labels


def state(client: AlertmanagerClient, labels: dict[str, str]) -> tuple[str, list[str]]:
    (alert,) = client.alerts(labels)
    return alert["status"]["state"], alert["status"]["silencedBy"]


def test_ack_suppresses_the_alert_and_unack_brings_it_back(alertmanager: AlertmanagerServer) -> None:
    client = AlertmanagerClient(alertmanager.url)
    labels = fire(alertmanager)
    assert state(client, labels) == ("active", [])

    silence_id = client.ack(labels, by="ana", comment="restarting it", duration=timedelta(minutes=30))
    assert state(client, labels) == ("suppressed", [silence_id])
    (ack,) = [ack for ack in client.acks() if ack.silence_id == silence_id]
    assert (ack.created_by, ack.comment, ack.matchers) == ("ana", "restarting it", labels)
    assert timedelta(minutes=29) < ack.ends_at - datetime.now(UTC) <= timedelta(minutes=30)

    client.unack(silence_id)
    assert state(client, labels) == ("active", [])
    assert silence_id not in [ack.silence_id for ack in client.acks()]


def test_ack_of_one_service_leaves_the_same_alert_of_another_service_active(alertmanager: AlertmanagerServer) -> None:
    client = AlertmanagerClient(alertmanager.url)
    acked, other = fire(alertmanager), fire(alertmanager)
    silence_id = client.ack(
        {"alertname": "ServiceDown", "service": acked["service"]},
        by="ana",
        comment="on it",
        duration=timedelta(hours=1),
    )
    assert state(client, acked) == ("suppressed", [silence_id])
    assert state(client, other) == ("active", [])
    client.unack(silence_id)


def test_cli_ack_list_unack_round_trip(alertmanager: AlertmanagerServer, capsys: pytest.CaptureFixture[str]) -> None:
    client = AlertmanagerClient(alertmanager.url)
    labels = fire(alertmanager)
    service = f"service={labels['service']}"
    base = ["--alertmanager", alertmanager.url]

    assert main([*base, "ack", "ServiceDown", service, "--by", "bo", "-c", "failing over", "--for", "45m"]) == 0
    silence_id = capsys.readouterr().out.strip()
    assert state(client, labels) == ("suppressed", [silence_id])

    assert main([*base, "list"]) == 0
    listing = capsys.readouterr().out
    assert silence_id in listing
    assert "bo: failing over" in listing
    assert re.search(r"  until \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ  bo:", listing), listing  # to the second, as every CLI

    assert main([*base, "unack", "ServiceDown", service]) == 0
    assert capsys.readouterr().out.strip() == silence_id
    assert state(client, labels) == ("active", [])
    assert main([*base, "unack", "ServiceDown", service]) == 1
    assert "no active ack" in capsys.readouterr().err


def test_cli_reports_bad_input_and_unreachable_alertmanager_in_one_line(
    alertmanager: AlertmanagerServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--alertmanager", alertmanager.url, "ack", "ServiceDown", "-c", "x", "--for", "2 weeks"]) == 1
    assert capsys.readouterr().err.strip() == "vibelux-ack: duration '2 weeks' is not like 30m, 2h, 1h30m or 1d"
    assert main(["--alertmanager", "http://127.0.0.1:9", "list"]) == 1
    assert capsys.readouterr().err.startswith("vibelux-ack: Alertmanager at http://127.0.0.1:9 is unreachable")
    assert main(["--alertmanager", alertmanager.url, "unack", "--id", str(uuid.uuid4())]) == 1
    assert "refused DELETE" in capsys.readouterr().err
