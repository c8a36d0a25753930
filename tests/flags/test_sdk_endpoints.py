"""Snapshot (ETag/304) and server-sent-event endpoints the SDKs use."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import pytest
import requests
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from flags_service.app import create_app
from flags_service.settings import FlagsSettings
from service_kit.tiers import TIERS
from tests.flags.conftest import SdkKeys, with_flags
from tests.servers import free_port


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_snapshot_etag_304_until_a_change(
    client: FlaskClient, sdk_keys: SdkKeys, admin: dict[str, str], create_flag: Callable
) -> None:
    create_flag("checkout", environments={"production": {"enabled": True, "fallthrough": {"variant": "on"}}})
    first = client.get("/api/v1/sdk/snapshot", headers=bearer(sdk_keys.server))
    assert first.status_code == 200
    body = first.json
    assert first.headers["ETag"] == f'"production.{body["version"]}"'
    assert body["flags"]["checkout"]["enabled"] is True
    assert set(body) == {"environment", "version", "tiers", "flags", "segments"}
    assert body["tiers"] == list(TIERS)  # the SDK refuses other tiers, as OFREP does
    same = client.get(
        "/api/v1/sdk/snapshot", headers={**bearer(sdk_keys.server), "If-None-Match": first.headers["ETag"]}
    )
    assert same.status_code == 304
    client.post("/api/v1/flags/checkout/environments/staging/toggle", json={}, headers=admin)  # another environment
    assert (
        client.get(
            "/api/v1/sdk/snapshot", headers={**bearer(sdk_keys.server), "If-None-Match": first.headers["ETag"]}
        ).status_code
        == 304
    )
    client.post("/api/v1/flags/checkout/environments/production/toggle", json={}, headers=admin)
    changed = client.get(
        "/api/v1/sdk/snapshot", headers={**bearer(sdk_keys.server), "If-None-Match": first.headers["ETag"]}
    )
    assert changed.status_code == 200
    assert changed.json["version"] == body["version"] + 1
    assert client.get("/api/v1/sdk/snapshot").status_code == 401


def _events(response: requests.Response) -> Iterator[dict[str, object]]:
    event: dict[str, object] = {}
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event:"):
            event["event"] = line[6:].strip()
        elif line.startswith("data:"):
            event["data"] = json.loads(line[5:])
        elif line == "" and event:
            yield event
            event = {}


@pytest.mark.integration
def test_stream_announces_versions_and_limits_open_streams(settings: FlagsSettings) -> None:
    app = create_app(with_flags(settings, max_streams_per_worker=1, stream_max_seconds=5))
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    admin_client = app.test_client()
    from service_kit.auth import create_token

    with app.extensions["database"].new_session() as session:
        token, _ = create_token(session, "admin", "admin")
        session.commit()
    admin = bearer(token)
    key = admin_client.post(
        "/api/v1/sdk-keys", json={"environment": "production", "kind": "server", "name": "s"}, headers=admin
    ).json["token"]
    admin_client.post(
        "/api/v1/flags", json={"key": "f", "variants": {"on": True, "off": False}, "offVariant": "off"}, headers=admin
    )
    try:
        with requests.get(f"{base}/api/v1/sdk/stream", headers=bearer(key), stream=True, timeout=5) as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            events = _events(stream)
            first = next(events)
            assert first["event"] == "version"
            version = first["data"]["version"]  # type: ignore[index]
            busy = requests.get(f"{base}/api/v1/sdk/stream", headers=bearer(key), timeout=5)
            assert busy.status_code == 429
            assert busy.headers["Retry-After"] == "30"
            admin_client.post("/api/v1/flags/f/environments/production/toggle", json={}, headers=admin)
            assert next(events)["data"] == {"environment": "production", "version": version + 1}  # type: ignore[operator]
    finally:
        server.shutdown()
        thread.join(5)
        app.extensions["flags"].cache.close()


@pytest.mark.parametrize(
    ("count", "status"),
    [(2, 202), (2.0, 202), (2.5, 422), ("2", 422), (True, 422), (0, 422)],
)
def test_evaluation_counts_take_json_integers_only(
    client: FlaskClient, sdk_keys: SdkKeys, create_flag: Callable, count: object, status: int
) -> None:
    """``2.0`` is an integer to JSON Schema (schemathesis sent it and got a 422); ``"2"`` and ``true`` are not."""
    create_flag("counted", environments={"production": {"enabled": True}})
    body = {"counts": [{"flag": "counted", "variant": "off", "count": count}]}
    response = client.post("/api/v1/sdk/evaluations", json=body, headers=bearer(sdk_keys.server))
    assert response.status_code == status, response.json
    if status == 202:
        assert response.json == {"accepted": 1, "dropped": 0}
    else:
        assert list(response.json["error"]["details"]) == ["counts[0].count"]
