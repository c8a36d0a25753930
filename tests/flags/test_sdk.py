"""The Python SDK against a real service on a real port: down at start, up, changes, down again, restart."""

from __future__ import annotations

import json
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
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from werkzeug.serving import BaseWSGIServer, make_server

from flags_service.app import create_app
from flags_service.sdk import NOT_READY, READY, STALE, FlagsClient
from flags_service.sdk.flask import FlagsFlask, FlagsMiddleware, feature_required, flags
from flags_service.sdk.openfeature import VibeLuxProvider
from flags_service.settings import FlagsSettings
from service_kit.auth import Principal, create_token
from tests.flags.conftest import with_flags
from tests.servers import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration  # every test here runs the service on a real port
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
    options = {"cache_path": cache, "poll_interval": 2.0, "max_backoff": 0.3, "flush_interval": 0.2, "timeout": 1.0}

    sdk = FlagsClient(service.url, server_key, **options)  # service is down: must not raise
    try:
        assert sdk.status == NOT_READY
        cold = sdk.evaluate("beta", {"targetingKey": "u1", "tier": "professional"}, default=False)
        assert (cold.value, cold.reason, cold.error_code) == (False, "ERROR", "PROVIDER_NOT_READY")

        service.start()
        assert sdk.wait_until_ready(5)
        assert sdk.status == READY
        warm = sdk.evaluate("beta", {"targetingKey": "u1", "tier": "professional"}, default=False)
        assert (warm.value, warm.reason, warm.variant, warm.rule_id) == (True, "TARGETING_MATCH", "on", "pro")
        assert sdk.value("upload-mb", {}, 0) == 500

        call("post", "/api/v1/flags/beta/environments/production/toggle", {"enabled": False})
        started = time.monotonic()
        wait_until(lambda: sdk.evaluate("beta", {"tier": "professional"}).reason == "DISABLED", timeout=3)
        assert time.monotonic() - started < 1.5  # announced over SSE, not found by a 2 s poll

        service.stop()
        wait_until(lambda: sdk.status == STALE, timeout=5)
        down = sdk.evaluate("upload-mb", {}, 0)
        assert (down.value, down.reason) == (500, "STALE")
    finally:
        sdk.close()

    restarted = FlagsClient(service.url, server_key, **options)
    try:
        from_disk = restarted.evaluate("upload-mb", {}, 0)
        assert (from_disk.value, from_disk.reason, from_disk.variant) == (500, "STALE", "large")
        assert restarted.evaluate("beta", {"tier": "professional"}).reason == "STALE"  # disabled, served as last known
        assert restarted.evaluate("missing", {}, "d").error_code == "FLAG_NOT_FOUND"
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
            sdk.evaluate("beta", {"targetingKey": f"u{index}", "tier": "professional" if index % 4 == 0 else "free"})
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


def test_sdk_concurrent_evaluation_is_thread_safe(service: Service, seeded: tuple[Callable[..., object], str]) -> None:
    call, server_key = seeded
    service.start()
    with FlagsClient(service.url, server_key, flush_interval=60) as sdk:
        assert sdk.wait_until_ready(5)
        errors: list[BaseException] = []

        def hammer() -> None:
            try:
                for index in range(300):
                    assert sdk.evaluate("beta", {"targetingKey": str(index), "tier": "professional"}).value in (
                        True,
                        False,
                    )
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
        assert sum(sdk._counts.values()) == 1800


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
        details = sdk.evaluate("f", {})
        assert (sdk.version, details.value, details.reason) == (3, False, "STALE")


def test_sdk_refuses_a_tier_the_snapshot_does_not_list_as_ofrep_does() -> None:
    rule = {"id": "paid", "clauses": [{"attribute": "tier", "op": "in", "values": ["professional"]}]}
    flag = {
        "key": "f", "enabled": True, "variants": {"on": True, "off": False}, "offVariant": "off",
        "rules": [{**rule, "serve": {"variant": "on"}}], "fallthrough": {"variant": "off"},
    }  # fmt: skip
    snapshot = {"environment": "production", "version": 1, "tiers": ["free", "professional"], "flags": {"f": flag}}
    sdk = FlagsClient("http://127.0.0.1:9", "fsk_unused", bootstrap=snapshot, start=False)
    refused = sdk.evaluate("f", {"targetingKey": "u", "tier": "pro"}, default=False)
    assert (refused.value, refused.reason, refused.error_code) == (False, "ERROR", "INVALID_CONTEXT")
    assert sdk.evaluate("f", {"targetingKey": "u", "tier": "professional"}).variant == "on"
    assert sdk.evaluate("f", {"targetingKey": "u"}).variant == "off"
