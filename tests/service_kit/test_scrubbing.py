from __future__ import annotations

from collections.abc import Iterator

import pytest
import sentry_sdk
from flask import Flask

from service_kit.scrub import FILTERED, Scrubber
from service_kit.sentry import breadcrumb, set_user
from service_kit.settings import SentrySettings
from tests.servers import SentrySink, wait_until
from tests.service_kit.example_service import ExampleSettings, create_app

SECRETS = {
    "header": "vbx_HeaderSecretValue123",
    "api_key": "apikey-Secret-456789",
    "cookie": "session-cookie-secret-789",
    "body": "BodyPassword!42",
    "query": "QueryTokenSecret987",
    "card": "4111 1111 1111 1111",
}


def send_hostile_request(app: Flask) -> None:
    client = app.test_client()
    response = client.post(
        f"/boom?token={SECRETS['query']}&page=2",
        json={"password": SECRETS["body"], "card_number": SECRETS["card"], "note": f"card {SECRETS['card']}"},
        headers={
            "Authorization": f"Bearer {SECRETS['header']}",
            "X-API-Key": SECRETS["api_key"],
            "Cookie": f"session={SECRETS['cookie']}",
        },
    )
    assert response.status_code == 500


def test_secrets_never_reach_the_sentry_sink(sentry_app: Flask, sentry_sink: SentrySink) -> None:
    send_hostile_request(sentry_app)
    sentry_sdk.flush(5)
    wait_until(lambda: len(sentry_sink.events()) >= 1, timeout=10)
    (event,) = sentry_sink.events()
    assert event["exception"]["values"][0]["type"] == "RuntimeError"
    assert event["request"]["url"].endswith("/boom")
    everything = sentry_sink.all_text()
    for name, value in SECRETS.items():
        assert value not in everything, f"{name} secret leaked to Sentry"
    assert "1111" not in everything
    assert FILTERED in everything


def test_expected_client_errors_are_not_reported(sentry_app: Flask, sentry_sink: SentrySink) -> None:
    client = sentry_app.test_client()
    assert client.get("/items/404").status_code == 404
    assert client.post("/items", json={}).status_code == 422
    assert client.get("/upstream").status_code == 504
    sentry_sdk.flush(5)
    wait_until(lambda: len(sentry_sink.events()) >= 1, timeout=10)
    events = sentry_sink.events()
    assert [e["exception"]["values"][0]["type"] for e in events] == ["ExternalAPIError"]
    assert events[0]["fingerprint"] == ["ExternalAPIError", "gateway_timeout"]


def test_user_context_has_id_and_tier_but_no_email(sentry_app: Flask, sentry_sink: SentrySink) -> None:
    with sentry_app.test_request_context("/"):
        set_user("user-7", "professional", email="someone@example.com")
        breadcrumb("billing", "charged card", card="4242424242424242")
        sentry_sdk.capture_message("checkout")
    sentry_sdk.flush(5)
    wait_until(lambda: len(sentry_sink.events()) >= 1, timeout=10)
    event = sentry_sink.events()[-1]
    assert event["user"] == {"id": "user-7", "tier": "professional"}
    assert "someone@example.com" not in sentry_sink.all_text()
    assert "4242424242424242" not in sentry_sink.all_text()


def test_secrets_never_reach_the_log(app: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    send_hostile_request(app)
    out = capsys.readouterr().out
    assert '"route":"/boom"' in out and '"status":500' in out
    assert "RuntimeError" in out  # the exception is logged, scrubbed
    for name, value in SECRETS.items():
        assert value not in out, f"{name} secret leaked to the log"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"Authorization": "Basic abc"}, {"Authorization": FILTERED}),
        (
            {"headers": [["Set-Cookie", "a=b"], ["Accept", "json"]]},
            {"headers": [["Set-Cookie", FILTERED], ["Accept", "json"]]},
        ),
        ({"user_password": "x", "flag_key": "new-ui"}, {"user_password": FILTERED, "flag_key": "new-ui"}),
        ("GET /x?api_key=abc123&page=2", f"GET /x?api_key={FILTERED}&page=2"),
        ("order 1234567890123 shipped", "order 1234567890123 shipped"),  # not a Luhn-valid card
        ("paid with 5555-5555-5555-4444", f"paid with {FILTERED}"),
        ("jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", f"jwt {FILTERED}"),
    ],
)
def test_scrubber_rules(data: object, expected: object) -> None:
    assert Scrubber().scrub(data) == expected


CUSTOMER = {"name": "Ada Quimby-Lovelace", "email": "ada.quimby@example.org", "message": "invoice 88123 double-charged"}


@pytest.fixture
def traced_app(settings: ExampleSettings, sentry_sink: SentrySink) -> Iterator[Flask]:
    """The example app with performance monitoring on: every request is a transaction sent to the sink."""
    sentry_sink.clear()
    sentry = SentrySettings(dsn=sentry_sink.dsn, environment="test", traces_sample_rate=1.0)
    yield create_app(ExampleSettings(database=settings.database, sentry=sentry))
    sentry_sdk.get_client().close(timeout=5)  # flushes; later tests' apps report nowhere


def test_transactions_and_errors_carry_no_customer_data(traced_app: Flask, sentry_sink: SentrySink) -> None:
    client = traced_app.test_client()
    assert client.post("/items", json={"name": CUSTOMER["name"]}).status_code == 201
    assert client.post("/boom", json=CUSTOMER).status_code == 500
    assert client.post("/items", data=f"email={CUSTOMER['email']}", content_type="text/plain").status_code == 415
    sentry_sdk.flush(5)
    wait_until(lambda: b'"type":"transaction"' in b"".join(sentry_sink.raw_bodies) and bool(sentry_sink.events()))
    assert sentry_sink.events()[0]["exception"]["values"][0]["type"] == "RuntimeError"
    everything = sentry_sink.all_text()
    for field, value in CUSTOMER.items():
        assert value not in everything, f"the customer's {field} reached Sentry"
