"""Support metrics read from the database at scrape time (in-process app, real SQLite)."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from tests.tickets.conftest import T0, Tokens, auth


def scrape(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_sla_metrics_from_database(app: Flask, client: FlaskClient, tokens: Tokens) -> None:
    clock = {"now": T0}
    app.extensions["tickets"].clock = lambda: clock["now"]
    policy = {"name": "all", "targets": {"first_response": 60, "resolution": 600}}
    assert client.post("/api/v1/sla/policies", json=policy, headers=auth(tokens.admin)).status_code == 201
    ids = []
    for priority in ("urgent", "urgent", "low"):
        body = {"subject": "s", "body": "b", "priority": priority}
        ids.append(client.post("/api/v1/tickets", json=body, headers=auth(tokens.customer)).json["id"])
    clock["now"] = T0 + timedelta(minutes=10)
    reply = {"body": "On it", "internal": False}
    client.post(f"/api/v1/tickets/{ids[0]}/messages", json=reply, headers=auth(tokens.agent))
    client.patch(f"/api/v1/tickets/{ids[2]}", json={"status": "resolved"}, headers=auth(tokens.agent))

    clock["now"] = T0 + timedelta(minutes=30)  # ticket 2's first response due in 30 min: at risk (margin 60)
    samples = scrape(client)
    assert value(samples, "support_tickets_open", status="open", priority="urgent") == 2
    assert value(samples, "support_tickets_open", status="open", priority="low") == 0
    assert value(samples, "support_tickets_at_risk", priority="urgent") == 1
    assert value(samples, "support_tickets_breached", priority="urgent") == 0
    assert value(samples, "support_tickets_created_total", priority="urgent") == 2
    assert value(samples, "support_tickets_resolved_total", priority="low") == 1
    assert value(samples, "support_first_response_seconds_bucket", priority="urgent", le="300.0") == 0
    assert value(samples, "support_first_response_seconds_bucket", priority="urgent", le="900.0") == 1
    assert value(samples, "support_first_response_seconds_sum", priority="urgent") == 600
    assert value(samples, "support_resolution_seconds_count", priority="low") == 1

    clock["now"] = T0 + timedelta(minutes=90)
    with app.app_context():
        resources = app.extensions["tickets"]
        with resources.db.new_session() as session:
            resources.desk.sweep(session, clock["now"])
            resources.desk.sweep(session, clock["now"] + timedelta(minutes=1))
            session.commit()
    samples = scrape(client)
    assert value(samples, "support_tickets_breached", priority="urgent") == 1
    assert value(samples, "support_sla_breaches_total", metric="first_response", priority="urgent") == 1
    assert value(samples, "support_tickets_at_risk", priority="urgent") == 0
