"""The desk with Sentry performance monitoring on (traces_sample_rate 1.0, as the seed asks) sends no
customer data: a ticket's transaction and an error while creating one carry no name, email or message text.
The real sentry-sdk reports to the local sink (tests/servers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import sentry_sdk
from flask import Flask

from service_kit.settings import SentrySettings
from tests.servers import SentrySink, wait_until
from tests.tickets.conftest import Tokens, auth
from tickets_app.app import create_app
from tickets_app.desk import Desk
from tickets_app.settings import TicketsSettings

CUSTOMER = {"id": "cust-77", "name": "Ada Quimby-Lovelace", "email": "ada.quimby@example.org", "tier": "startup"}
MESSAGE = "My invoice 88123 was charged twice, please refund"


@pytest.fixture
def traced_app(settings: TicketsSettings, sentry_sink: SentrySink) -> Iterator[Flask]:
    sentry_sink.clear()
    sentry = SentrySettings(dsn=sentry_sink.dsn, environment="test", traces_sample_rate=1.0)
    app = create_app(replace(settings, sentry=sentry), start_sweeper=False)
    yield app
    sentry_sdk.get_client().close(timeout=5)  # flushes; later tests' apps report nowhere


def test_ticket_transactions_and_errors_carry_no_customer_data(
    traced_app: Flask, tokens: Tokens, sentry_sink: SentrySink, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = traced_app.test_client()
    body = {"subject": "Double charge", "body": MESSAGE, "customer": CUSTOMER}
    assert client.post("/api/v1/tickets", json=body, headers=auth(tokens.agent)).status_code == 201

    def fail(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the ticket store failed")  # an unexpected error while the body is in hand

    monkeypatch.setattr(Desk, "create_ticket", fail)
    assert client.post("/api/v1/tickets", json=body, headers=auth(tokens.agent)).status_code == 500
    sentry_sdk.flush(5)
    wait_until(lambda: b'"type":"transaction"' in b"".join(sentry_sink.raw_bodies) and bool(sentry_sink.events()))
    assert sentry_sink.events()[0]["exception"]["values"][0]["value"] == "the ticket store failed"
    everything = sentry_sink.all_text()
    for leaked in (CUSTOMER["name"], CUSTOMER["email"], MESSAGE, "88123"):
        assert leaked not in everything
