"""The Python SDK against a real service on a real port: down at start, up, changes, down again, restart."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy
from flask import Flask, g
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus
from prometheus_client import CollectorRegistry
from werkzeug.serving import BaseWSGIServer, make_server

from flags_service.app import create_app
from flags_service.sdk import NOT_READY, READY, STALE, ClientEvent, FlagsClient
from flags_service.sdk.flask import FlagsFlask, FlagsMiddleware, RequestFlags, feature_required, flags
from flags_service.sdk.openfeature import VibeLuxProvider
from flags_service.sdk.prometheus import FlagsClientCollector
from flags_service.settings import FlagsSettings
from service_kit.auth import Principal, create_token
from tests.flags.conftest import with_flags
from tests.servers import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration  # every test here runs the service on a real port
UNREADY_TOTAL = "flags_client_unready_evaluations_total"
PRO_RULE = {
    "id": "pro",
    "clauses": [{"attribute": "tier", "op": "in", "values": ["professional"]}],
    "serve": {"variant": "on"},
}


class Service:
    """The flag service on a fixed port that a test can stop and start again."""

    def __init__(self, app: Flask, port: int) -> None:
        self.app, self.port = app, port
        self.url = f"http://127.0.0.1:{port}"
        self.server: BaseWSGIServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        self.server = None


@pytest.fixture
def service(settings: FlagsSettings) -> Iterator[Service]:
    app = create_app(with_flags(settings, stream_max_seconds=1.5, stream_heartbeat_seconds=0.5))
    service = Service(app, free_port())
    yield service
    if service.server is not None:
        service.stop()
    app.extensions["flags"].recorder.close()
    app.extensions["flags"].cache.close()


def admin_client(app: Flask) -> tuple[object, dict[str, str]]:
    with app.extensions["database"].new_session() as session:
        token, _ = create_token(session, "admin", "admin", subject="admin@example.com")
        session.commit()
    return app.test_client(), {"Authorization": f"Bearer {token}"}


@pytest.fixture
def seeded(service: Service) -> tuple[Callable[..., object], str]:
    """Flags plus a server key; returns (admin request function, server key)."""
    client, headers = admin_client(service.app)

    def call(method: str, path: str, body: object = None) -> object:
        response = getattr(client, method)(path, json=body, headers=headers)
        assert response.status_code < 300, response.json
        return response.json

    call("post", "/api/v1/flags", {
        "key": "beta", "variants": {"on": True, "off": False}, "offVariant": "off",
        "environments": {"production": {"enabled": True, "rules": [PRO_RULE]}},
    })  # fmt: skip
    call("post", "/api/v1/flags", {
        "key": "upload-mb", "type": "number", "variants": {"small": 25, "large": 500}, "offVariant": "small",
        "environments": {"production": {"enabled": True, "fallthrough": {"variant": "large"}}},
    })  # fmt: skip
    key = call("post", "/api/v1/sdk-keys", {"environment": "production", "kind": "server", "name": "sdk"})
    return call, key["token"]  # type: ignore[index]


def test_sdk_survives_service_down_up_down_and_restart_from_disk(
    service: Service, seeded: tuple[Callable[..., object], str], tmp_path: Path
) -> None:
    call, server_key = seeded
    cache = tmp_path / "flags-cache.json"
    options = {
        "cache_path": cache, "poll_interval": 2.0, "max_backoff": 0.3, "flush_interval": 0.2, "timeout": 1.0,
        "start_wait": 0,
    }  # fmt: skip

    sdk = FlagsClient(service.url, server_key, **options)  # service is down: must not raise
    try:
        assert sdk.status == NOT_READY
        cold = sdk.evaluate("beta", False, context={"targetingKey": "u1", "tier": "professional"})
        assert (cold.value, cold.reason, cold.error_code) == (False, "ERROR", "PROVIDER_NOT_READY")

        service.start()
        assert sdk.wait_until_ready(5)
        assert sdk.status == READY
        warm = sdk.evaluate("beta", False, context={"targetingKey": "u1", "tier": "professional"})
        assert (warm.value, warm.reason, warm.variant, warm.rule_id) == (True, "TARGETING_MATCH", "on", "pro")
        assert sdk.value("upload-mb", 0) == 500

        call("post", "/api/v1/flags/beta/environments/production/toggle", {"enabled": False})
        started = time.monotonic()
        wait_until(lambda: sdk.evaluate("beta", context={"tier": "professional"}).reason == "DISABLED", timeout=3)
        assert time.monotonic() - started < 1.5  # announced over SSE, not found by a 2 s poll

        service.stop()
        wait_until(lambda: sdk.status == STALE, timeout=5)
        down = sdk.evaluate("upload-mb", 0)
        assert (down.value, down.reason) == (500, "STALE")
    finally:
        sdk.close()

    restarted = FlagsClient(service.url, server_key, **options)
    try:
        from_disk = restarted.evaluate("upload-mb", 0)
        assert (from_disk.value, from_disk.reason, from_disk.variant) == (500, "STALE", "large")
        assert (
            restarted.evaluate("beta", context={"tier": "professional"}).reason == "STALE"
        )  # disabled, served as last known
        assert restarted.evaluate("missing", "d").error_code == "FLAG_NOT_FOUND"
    finally:
        restarted.close()


def test_sdk_batches_evaluation_counts_into_metrics_and_staleness(
    service: Service, seeded: tuple[Callable[..., object], str]
) -> None:
    _, server_key = seeded
    service.start()
    with FlagsClient(service.url, server_key, stream=False, flush_interval=0.1) as sdk:
        assert sdk.wait_until_ready(5)
        for index in range(40):
            tier = "professional" if index % 4 == 0 else "free"
            sdk.evaluate("beta", context={"targetingKey": f"u{index}", "tier": tier})
    service.app.extensions["flags"].recorder.flush()
    registry = service.app.extensions["service_kit"].metrics.registry
    labels = {"environment": "production", "flag": "beta"}
    assert registry.get_sample_value("flags_evaluations_total", {**labels, "variant": "on"}) == 10
    assert registry.get_sample_value("flags_evaluations_total", {**labels, "variant": "off"}) == 30
    assert registry.get_sample_value("flags_sdk_polls_total", {"environment": "production", "result": "updated"}) >= 1
    with service.app.extensions["database"].engine.connect() as connection:
        stats = connection.execute(
            sqlalchemy.text("SELECT flag_key, evaluations FROM flags_evaluation_stats WHERE environment = 'production'")
        ).all()
    assert [tuple(row) for row in stats] == [("beta", 40)]  # stale-flag detection reads these


def test_sdk_concurrent_evaluation_is_thread_safe_and_counted_exactly_while_flushing(
    service: Service, seeded: tuple[Callable[..., object], str]
) -> None:
    call, server_key = seeded
    service.start()
    with FlagsClient(service.url, server_key, flush_interval=0.01) as sdk:  # flushes race the counting threads
        assert sdk.wait_until_ready(5)
        errors: list[BaseException] = []

        def hammer() -> None:
            try:
                for index in range(300):
                    context = {"targetingKey": str(index), "tier": "professional"}
                    assert sdk.evaluate("beta", context=context).value in (True, False)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for thread in threads:
            thread.start()
        for _ in range(3):
            call("post", "/api/v1/flags/beta/environments/production/toggle", {})
        for thread in threads:
            thread.join()
        assert errors == []
    service.app.extensions["flags"].recorder.flush()  # close() sent the rest
    registry = service.app.extensions["service_kit"].metrics.registry
    labels = {"environment": "production", "flag": "beta"}
    counted = [
        registry.get_sample_value("flags_evaluations_total", {**labels, "variant": v}) or 0 for v in ("on", "off")
    ]
    assert sum(counted) == 1800


def test_counts_of_threads_that_ended_during_an_outage_are_sent_once_it_is_over(
    service: Service, seeded: tuple[Callable[..., object], str]
) -> None:
    _, server_key = seeded
    service.start()
    with FlagsClient(service.url, server_key, stream=False, flush_interval=3600, max_backoff=0.2) as sdk:
        assert sdk.wait_until_ready(5)
        service.stop()

        def evaluate_five() -> None:
            for _ in range(5):
                sdk.evaluate("upload-mb", 0)

        for _ in range(4):  # as a thread-per-request server does
            thread = threading.Thread(target=evaluate_five)
            thread.start()
            thread.join()
        assert sdk.flush() is False
        assert sdk.flush() is False  # a second failed try neither loses nor doubles them
        service.start()
        assert sdk.flush() is True
        assert sdk.flush() is True  # nothing left to send
    service.app.extensions["flags"].recorder.flush()
    registry = service.app.extensions["service_kit"].metrics.registry
    labels = {"environment": "production", "flag": "upload-mb", "variant": "large"}
    assert registry.get_sample_value("flags_evaluations_total", labels) == 20


def test_openfeature_provider_over_the_sdk(service: Service, seeded: tuple[Callable[..., object], str]) -> None:
    _, server_key = seeded
    service.start()
    sdk = FlagsClient(service.url, server_key)
    assert sdk.wait_until_ready(5)
    api.set_provider(VibeLuxProvider(sdk), domain="vibelux-test")
    client = api.get_client(domain="vibelux-test")
    details = client.get_boolean_details("beta", False, EvaluationContext("user-1", {"tier": "professional"}))
    assert (details.value, details.reason, details.variant) == (True, Reason.TARGETING_MATCH, "on")
    assert client.get_integer_value("upload-mb", 0) == 500
    assert client.get_float_value("upload-mb", 0.0) == 500.0
    mismatch = client.get_string_details("beta", "x")
    assert (mismatch.value, mismatch.error_code) == ("x", ErrorCode.TYPE_MISMATCH)
    missing = client.get_boolean_details("nope", True)
    assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
    api.shutdown()


def test_flask_helpers_use_the_principal_and_gate_routes(
    service: Service, seeded: tuple[Callable[..., object], str]
) -> None:
    _, server_key = seeded
    service.start()
    sdk = FlagsClient(service.url, server_key, stream=False)
    try:
        assert sdk.wait_until_ready(5)
        app = Flask("consumer")
        FlagsFlask(sdk).init_app(app)

        @app.before_request
        def authenticate() -> None:
            from flask import request

            tier = request.headers.get("X-Test-Tier")
            g.principal = Principal(id="user-1", role="customer", kind="token", tier=tier) if tier else None

        @app.get("/beta")
        @feature_required("beta")
        def beta() -> dict[str, object]:
            return {"upload_mb": flags().value("upload-mb", 25)}

        client = app.test_client()
        assert client.get("/beta", headers={"X-Test-Tier": "professional"}).json == {"upload_mb": 500}
        assert client.get("/beta", headers={"X-Test-Tier": "free"}).status_code == 404
        assert client.get("/beta").status_code == 404

        seen: dict[str, object] = {}

        def inner(environ: dict, start_response: Callable) -> list[bytes]:
            seen["beta"] = environ["vibelux.flags"].is_enabled("beta")
            start_response("200 OK", [])
            return [b""]

        middleware = FlagsMiddleware(inner, sdk)
        middleware({"HTTP_X_USER_ID": "u9", "HTTP_X_USER_TIER": "professional"}, lambda *a: None)
        assert seen["beta"] is True
    finally:
        sdk.close()


def test_sdk_imports_without_flask_sqlalchemy_or_the_service() -> None:
    code = (
        "import sys, flags_service.sdk as s; "
        "bad = [m for m in ('flask', 'sqlalchemy', 'service_kit', 'flags_service.app', 'redis') if m in sys.modules]; "
        "print(bad)"
    )
    output = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "[]"


def test_bootstrap_snapshot_serves_offline_and_the_newer_of_disk_and_bootstrap_wins(tmp_path: Path) -> None:
    flag = {"key": "f", "enabled": True, "variants": {"on": True, "off": False}, "offVariant": "off"}
    old = {
        "environment": "production",
        "version": 3,
        "segments": {},
        "flags": {"f": {**flag, "fallthrough": {"variant": "off"}}},
    }
    new = {
        "environment": "production",
        "version": 4,
        "segments": {},
        "flags": {"f": {**flag, "fallthrough": {"variant": "on"}}},
    }
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({"etag": '"production.4"', "snapshot": new}))
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    with FlagsClient(url, "k", bootstrap=old, cache_path=cache, start=False) as sdk:
        assert (sdk.version, sdk.is_enabled("f")) == (4, True)
    with FlagsClient(url, "k", bootstrap=old, start=False) as sdk:
        details = sdk.evaluate("f")
        assert (sdk.version, details.value, details.reason) == (3, False, "STALE")


def test_sdk_refuses_a_tier_the_snapshot_does_not_list_as_ofrep_does() -> None:
    rule = {"id": "paid", "clauses": [{"attribute": "tier", "op": "in", "values": ["professional"]}]}
    flag = {
        "key": "f", "enabled": True, "variants": {"on": True, "off": False}, "offVariant": "off",
        "rules": [{**rule, "serve": {"variant": "on"}}], "fallthrough": {"variant": "off"},
    }  # fmt: skip
    snapshot = {"environment": "production", "version": 1, "tiers": ["free", "professional"], "flags": {"f": flag}}
    sdk = FlagsClient("http://127.0.0.1:9", "fsk_unused", bootstrap=snapshot, start=False)
    refused = sdk.evaluate("f", False, context={"targetingKey": "u", "tier": "pro"})
    assert (refused.value, refused.reason, refused.error_code) == (False, "ERROR", "INVALID_CONTEXT")
    assert sdk.evaluate("f", context={"targetingKey": "u", "tier": "professional"}).variant == "on"
    assert sdk.evaluate("f", context={"targetingKey": "u"}).variant == "off"


def test_client_built_while_the_service_is_up_answers_its_first_call_from_the_service(
    service: Service, seeded: tuple[Callable[..., object], str]
) -> None:
    """The README's bug: asked at once, the client answered the default (off) for a paying user."""
    _, server_key = seeded
    service.start()
    sdk = FlagsClient(service.url, server_key)
    try:
        first = sdk.evaluate("beta", default=False, context={"targetingKey": "u1", "tier": "professional"})
        assert (first.value, first.reason, first.error_code) == (True, "TARGETING_MATCH", None)
    finally:
        sdk.close()


def test_a_start_wait_that_ran_out_before_anyone_waited_is_still_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """On a loaded machine the constructor's own wait began after its deadline, so no waiter "waited it out"
    and the missed start went unlogged (CI, 2026-12-01): the first waiter to find it passed says so."""
    caplog.set_level(logging.INFO, logger="vibelux.flags.sdk")
    sdk = FlagsClient("http://127.0.0.1:9", "fsk_unused", start=False, start_wait=0.2, max_backoff=0.2)
    try:
        sdk.start()
        time.sleep(0.3)  # the deadline passes before the first wait
        assert sdk.wait_for_start() is False
        assert sdk.wait_for_start() is False
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "within 0.2 s" in warnings[0], warnings
    finally:
        sdk.close()


def test_calls_before_the_first_snapshot_are_logged_once_and_counted_by_what_they_served(
    service: Service, seeded: tuple[Callable[..., object], str], caplog: pytest.LogCaptureFixture
) -> None:
    _, server_key = seeded
    registry = CollectorRegistry()
    caplog.set_level(logging.INFO, logger="vibelux.flags.sdk")
    sdk = FlagsClient(service.url, server_key, start_wait=0.3, max_backoff=0.2)  # service down: waits 0.3 s
    try:
        FlagsClientCollector(sdk, registry)
        for index in range(3):
            assert sdk.evaluate("beta", False, context={"targetingKey": f"u{index}"}).error_code == "PROVIDER_NOT_READY"
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 2, warnings
        assert "no snapshot from the flag service" in warnings[0] and "within 0.3 s" in warnings[0]
        assert "'beta' evaluated before the first snapshot" in warnings[1] and "caller's default" in warnings[1]
        assert registry.get_sample_value(UNREADY_TOTAL, {"served": "default"}) == 3
        assert registry.get_sample_value(UNREADY_TOTAL, {"served": "last_known_good"}) == 0
        assert registry.get_sample_value("flags_client_status", {"status": "not_ready"}) == 1

        service.start()
        assert sdk.wait_until_ready(5)
        assert sdk.is_enabled("beta", context={"tier": "professional"})
        assert registry.get_sample_value(UNREADY_TOTAL, {"served": "default"}) == 3  # ready: no longer counted
        assert registry.get_sample_value("flags_client_status", {"status": "ready"}) == 1
    finally:
        sdk.close()


def test_calls_served_from_the_disk_copy_before_the_service_answers_count_as_last_known_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flag = {"key": "f", "enabled": True, "variants": {"on": True, "off": False}, "offVariant": "off"}
    snapshot = {"environment": "production", "version": 3, "flags": {"f": {**flag, "fallthrough": {"variant": "on"}}}}
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    with FlagsClient(url, "k", bootstrap=snapshot, start_wait=0.2, max_backoff=0.1) as sdk:
        served = [sdk.evaluate("f", False) for _ in range(2)]
        assert [(d.value, d.reason) for d in served] == [(True, "STALE")] * 2
        assert sdk.unready_evaluations == {"default": 0, "last_known_good": 2}
    unready = [r.getMessage() for r in caplog.records if "evaluated before the first snapshot" in r.getMessage()]
    assert len(unready) == 1 and "last-known-good copy" in unready[0]


def test_every_helper_takes_key_then_default_and_the_context_only_by_keyword() -> None:
    """One order, OpenFeature's; the old orders fail loudly instead of answering the context or the default."""
    flags = {
        "beta": {"key": "beta", "enabled": True, "variants": {"on": True, "off": False}, "offVariant": "off",
                 "rules": [{**PRO_RULE}], "fallthrough": {"variant": "off"}},
        "upload-mb": {"key": "upload-mb", "enabled": True, "variants": {"small": 25, "large": 500},
                      "offVariant": "small", "fallthrough": {"variant": "large"}},
        "limits": {"key": "limits", "enabled": True, "variants": {"v1": {"mb": 500}}, "offVariant": "v1",
                   "fallthrough": {"variant": "v1"}},
    }  # fmt: skip
    sdk = FlagsClient("http://127.0.0.1:9", "unused", bootstrap={"version": 1, "flags": flags}, start=False)
    pro = {"targetingKey": "u1", "tier": "professional"}
    assert sdk.value("upload-mb", 25, context=pro) == 500
    assert sdk.value("missing", 25, context=pro) == 25
    assert sdk.value("limits", {"mb": 25}) == {"mb": 500}  # a dict default is fine for a JSON flag
    assert sdk.is_enabled("beta", False, context=pro) is True
    assert sdk.evaluate("beta", False, context=pro).variant == "on"
    request_flags = RequestFlags(sdk, pro)
    assert (request_flags.value("upload-mb", 25), request_flags.is_enabled("beta", False)) == (500, True)
    assert request_flags.evaluate("missing", 7).value == 7

    old_orders: list[Callable[[], object]] = [
        lambda: sdk.value("upload-mb", pro, 25),  # value(key, context, default)
        lambda: sdk.value("upload-mb", {"tier": "professional"}),  # value(key, context): a dict for a number
        lambda: sdk.value("missing", pro),  # would answer the context itself
        lambda: sdk.is_enabled("beta", pro),
        lambda: sdk.evaluate("beta", {"tier": "professional"}),  # would evaluate without the context
        lambda: sdk.all_flags(pro),  # all_flags(context)
    ]
    for call in old_orders:
        with pytest.raises(TypeError):
            call()


def test_close_after_a_normal_run_logs_no_outage_and_emits_no_event(
    service: Service, seeded: tuple[Callable[..., object], str], caplog: pytest.LogCaptureFixture
) -> None:
    _, server_key = seeded
    service.start()
    caplog.set_level(logging.INFO, logger="vibelux.flags.sdk")
    heard: list[ClientEvent] = []
    sdk = FlagsClient(service.url, server_key)
    assert sdk.wait_until_ready(5)
    wait_until(lambda: sdk._stream_response is not None, timeout=5)  # following the SSE stream
    sdk.add_listener(heard.append)
    sdk.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [event.kind for event in heard if event.kind != "READY"] == []


def test_changed_flags_lists_edited_flags_their_segment_users_and_dependents() -> None:
    def flag(key: str, **fields: object) -> dict[str, object]:
        return {"key": key, "enabled": True, "variants": {"on": True, "off": False}, "offVariant": "off",
                "fallthrough": {"variant": "on"}, **fields}  # fmt: skip

    segment_rule = {
        "id": "s",
        "clauses": [{"op": "segmentMatch", "values": ["beta-users"]}],
        "serve": {"variant": "on"},
    }
    old = {
        "version": 1,
        "tiers": ["free", "professional"],
        "segments": {"beta-users": {"key": "beta-users", "included": ["u1"]}},
        "flags": {
            "edited": flag("edited"),
            "needs-edited": flag("needs-edited", prerequisites=[{"flag": "edited", "variant": "on"}]),
            "needs-needs": flag("needs-needs", prerequisites=[{"flag": "needs-edited", "variant": "on"}]),
            "uses-segment": flag("uses-segment", rules=[segment_rule]),
            "untouched": flag("untouched"),
            "removed": flag("removed"),
        },
    }
    new = {
        **old,
        "version": 2,
        "flags": {**old["flags"], "edited": flag("edited", enabled=False), "added": flag("added")},
    }
    del new["flags"]["removed"]
    sdk = FlagsClient("http://127.0.0.1:9", "unused", bootstrap=old, start=False)
    assert sdk._install(new, None) == ("added", "edited", "needs-edited", "needs-needs", "removed")
    segment_edit = {**new, "version": 3, "segments": {"beta-users": {"key": "beta-users", "included": ["u2"]}}}
    assert sdk._install(segment_edit, None) == ("uses-segment",)
    assert sdk._install({**segment_edit, "version": 4}, None) == ()
    assert len(sdk._install({**segment_edit, "version": 5, "tiers": ["free"]}, None)) == 6  # every flag


def test_openfeature_provider_emits_ready_changed_stale_and_error_events(
    service: Service, seeded: tuple[Callable[..., object], str]
) -> None:
    call, server_key = seeded
    sdk = FlagsClient(service.url, server_key, start_wait=0.5, max_backoff=0.2, timeout=1.0, start=False)
    provider = VibeLuxProvider(sdk)
    client = api.get_client(domain="vibelux-events")
    heard: list[tuple[ProviderEvent, EventDetails]] = []
    lock = threading.Lock()

    def handler_for(event: ProviderEvent) -> Callable[[EventDetails], None]:
        def handle(details: EventDetails) -> None:
            with lock:
                heard.append((event, details))

        return handle

    handlers = {event: handler_for(event) for event in ProviderEvent}

    def kinds() -> list[ProviderEvent]:
        with lock:
            return [event for event, _ in heard]

    api.set_provider(provider, domain="vibelux-events")  # initialize runs in the SDK's thread; the service is down
    for event, handle in handlers.items():
        client.add_handler(event, handle)
    try:
        wait_until(lambda: kinds() == [ProviderEvent.PROVIDER_ERROR], timeout=5)
        assert heard[0][1].error_code == ErrorCode.PROVIDER_NOT_READY
        assert client.get_provider_status() == ProviderStatus.ERROR

        service.start()
        wait_until(lambda: kinds()[-1:] == [ProviderEvent.PROVIDER_READY], timeout=5)
        assert client.get_boolean_value("beta", False, EvaluationContext("u1", {"tier": "professional"})) is True

        call("post", "/api/v1/flags/beta/environments/production/toggle", {"enabled": False})
        wait_until(lambda: kinds()[-1:] == [ProviderEvent.PROVIDER_CONFIGURATION_CHANGED], timeout=5)
        assert heard[-1][1].flags_changed == ["beta"]

        service.stop()
        wait_until(lambda: kinds()[-1:] == [ProviderEvent.PROVIDER_STALE], timeout=5)
        assert client.get_provider_status() == ProviderStatus.STALE
        assert client.get_boolean_details("beta", True).reason == Reason.STALE  # still served, marked stale

        service.start()
        wait_until(lambda: kinds()[-1:] == [ProviderEvent.PROVIDER_READY], timeout=5)
        assert kinds() == [
            ProviderEvent.PROVIDER_ERROR,
            ProviderEvent.PROVIDER_READY,
            ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
            ProviderEvent.PROVIDER_STALE,
            ProviderEvent.PROVIDER_READY,
        ]  # each status once, not once per poll
    finally:
        for event, handle in handlers.items():
            client.remove_handler(event, handle)
        provider.shutdown()
