"""Admin API (token-protected, audited) and abuse detection with bans, against real Redis and upstream."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ratelimit_proxy.admin import create_admin_app
from ratelimit_proxy.app import create_app
from ratelimit_proxy.settings import AbuseSettings, ClientSettings, ProxySettings, RuleSettings
from service_kit.db import make_engine, upgrade
from service_kit.settings import DatabaseSettings
from tests.ratelimit_proxy.conftest import Upstream, admin_token

pytestmark = pytest.mark.integration
TRUSTED = ClientSettings(trusted_proxies=["127.0.0.1/32"], max_header_bytes=4096)


def test_admin_routes_need_an_admin_token(pair: tuple[Flask, FlaskClient, dict], database: DatabaseSettings) -> None:
    _, admin, _ = pair
    assert admin.get("/api/v1/keys").status_code == 401
    viewer = {"Authorization": f"Bearer {admin_token(database.url, 'viewer')}"}
    assert admin.get("/api/v1/keys", headers=viewer).status_code == 403


def test_key_lifecycle_through_admin_api_is_enforced_and_audited(pair: tuple[Flask, FlaskClient, dict]) -> None:
    proxy, admin, headers = pair
    created = admin.post("/api/v1/keys", json={"tier": "free", "owner": "acme"}, headers=headers)
    assert created.status_code == 201
    api_key, key_id = created.get_json()["key"], created.get_json()["key_id"]
    assert api_key.startswith("vbx_") and api_key not in str(admin.get("/api/v1/keys", headers=headers).get_json())
    client = proxy.test_client()
    assert client.get("/api/v1/users", headers={"X-API-Key": api_key}).headers["X-RateLimit-Limit"] == "5"
    usage = admin.get(f"/api/v1/keys/{key_id}/usage", headers=headers).get_json()
    assert {w["window"]: w["used"] for w in usage["windows"]} == {"burst": 1, "minute": 1, "hour": 1}

    bad = admin.patch(f"/api/v1/keys/{key_id}", json={"tier": "gold"}, headers=headers)
    assert bad.status_code == 422 and "tier" in bad.get_json()["error"]["details"]
    assert admin.patch(f"/api/v1/keys/{key_id}", json={"tier": "enterprise"}, headers=headers).status_code == 200
    proxy.extensions["ratelimit_proxy"].keys._cache.clear()  # other replicas: after key_cache_seconds
    assert client.get("/api/v1/users", headers={"X-API-Key": api_key}).headers["X-RateLimit-Limit"] == "1000"
    assert admin.delete(f"/api/v1/keys/{key_id}", headers=headers).status_code == 204
    assert client.get("/api/v1/users", headers={"X-API-Key": api_key}).status_code == 401
    assert admin.get(f"/api/v1/keys/{key_id}/usage", headers=headers).status_code == 404
    assert admin.delete(f"/api/v1/keys/{key_id}", headers=headers).status_code == 404

    audit = admin.get("/api/v1/audit", headers=headers).get_json()["data"]
    assert [a["action"] for a in audit] == ["key.delete", "key.update", "key.create"]
    assert audit[1]["before"]["tier"] == "free" and audit[1]["after"]["tier"] == "enterprise"
    assert api_key not in str(audit)


@pytest.mark.parametrize(
    ("body", "field"),
    [({"owner": "x"}, "tier"), ({"tier": "free"}, "owner"), ({"tier": "free", "owner": ""}, "owner"), ([], "body")],
)
def test_key_creation_names_the_bad_field(pair: tuple[Flask, FlaskClient, dict], body: object, field: str) -> None:
    _, admin, headers = pair
    response = admin.post("/api/v1/keys", json=body, headers=headers)
    assert response.status_code == 422
    assert field in response.get_json()["error"]["details"]


def test_manual_ban_refuses_client_and_unban_restores(pair: tuple[Flask, FlaskClient, dict]) -> None:
    proxy, admin, headers = pair
    client = proxy.test_client()
    peer = {"REMOTE_ADDR": "203.0.113.77"}
    assert admin.post("/api/v1/bans", json={"network": "203.0.113.0/24"}, headers=headers).status_code == 201
    assert admin.post("/api/v1/bans", json={"network": "nope"}, headers=headers).status_code == 422
    refused = client.get("/api/v1/users", environ_base=peer)
    assert refused.status_code == 403
    assert refused.get_json()["type"].endswith("#abnormal-usage-detected")
    assert [b["network"] for b in admin.get("/api/v1/bans", headers=headers).get_json()["data"]] == ["203.0.113.0/24"]
    assert admin.delete("/api/v1/bans/203.0.113.0/24", headers=headers).status_code == 200
    assert client.get("/api/v1/users", environ_base=peer).status_code == 200
    actions = [a["action"] for a in admin.get("/api/v1/audit", headers=headers).get_json()["data"]]
    assert actions == ["ban.delete", "ban.create"]


def abuse_settings(**rules: RuleSettings) -> AbuseSettings:
    off = RuleSettings(mode="off")
    base = {"limit_breaches": off, "scanning": off, "attack_paths": off, "many_keys": off}
    return AbuseSettings(**{**base, **rules}, ban_seconds=60, ban_factor=2.0, allow=["192.0.2.0/24"])  # type: ignore[arg-type]


def test_scanning_client_is_banned_with_escalating_duration(
    settings_for: Callable[..., ProxySettings], upstream: Upstream
) -> None:
    rule = RuleSettings(mode="enforce", threshold=4, period_seconds=60)
    app = create_app(settings_for(abuse=abuse_settings(scanning=rule), clients=TRUSTED))
    client, runtime = app.test_client(), app.extensions["ratelimit_proxy"]
    scanner = {"X-Forwarded-For": "198.51.100.9"}
    statuses = [client.get(f"/api/v1/status/404?{i}", headers=scanner).status_code for i in range(2)]
    statuses += [client.get(f"/admin{i}", headers=scanner).status_code for i in range(3)]
    assert statuses == [404, 404, 404, 404, 404]  # the 2 status routes are one path; 4 distinct at the 5th
    assert client.get("/api/v1/users", headers=scanner).status_code == 403
    assert client.get("/api/v1/users", headers={"X-Forwarded-For": "198.51.100.10"}).status_code == 200
    first = runtime.bans.active()[0]
    assert (first.network, round(first.expires_at - first.created_at)) == ("198.51.100.9/32", 60)
    assert first.reason.startswith("scanning: 198.51.100.9|Werkzeug/3|")  # the rule and a bounded fingerprint
    runtime.bans.unban("198.51.100.9")
    runtime.bans.ban("198.51.100.9", "scanning", "auto")
    second = runtime.bans.active()[0]
    assert round(second.expires_at - second.created_at) == 120  # factor 2 on the second offense
    assert runtime.metrics.bans.labels("auto")._value.get() == 2


def test_attack_path_bans_at_once_but_never_an_allow_listed_client(settings_for: Callable[..., ProxySettings]) -> None:
    rule = RuleSettings(mode="enforce", threshold=1, period_seconds=60)
    app = create_app(settings_for(abuse=abuse_settings(attack_paths=rule), clients=TRUSTED))
    client = app.test_client()
    assert client.get("/.env", headers={"X-Forwarded-For": "198.51.100.20"}).status_code == 403
    assert client.get("/api/v1/users", headers={"X-Forwarded-For": "198.51.100.20"}).status_code == 403
    assert (
        client.get("/static/%2e%2e/%2e%2e/etc/passwd", headers={"X-Forwarded-For": "198.51.100.21"}).status_code == 403
    )
    allowed = {"X-Forwarded-For": "192.0.2.5"}
    assert client.get("/wp-admin/setup.php", headers=allowed).status_code == 404  # reaches upstream, no ban
    assert client.get("/api/v1/users", headers=allowed).status_code == 200


def test_shadow_mode_counts_but_does_not_ban(settings_for: Callable[..., ProxySettings]) -> None:
    rule = RuleSettings(mode="shadow", threshold=3, period_seconds=60)
    app = create_app(settings_for(abuse=abuse_settings(limit_breaches=rule), clients=TRUSTED))
    client, runtime = app.test_client(), app.extensions["ratelimit_proxy"]
    who = {"X-Forwarded-For": "198.51.100.30"}
    statuses = [client.get("/api/v1/users", headers=who).status_code for _ in range(10)]
    assert statuses.count(429) == 5
    assert runtime.bans.active() == []
    # The first 429 is Redis's (an event in the shared store); the next four come from the over-limit
    # cache and are tallied in process: the 3rd and 4th of those reach the threshold of 3.
    assert runtime.metrics.local_refusals._value.get() == 4
    assert runtime.metrics.detections.labels("limit_breaches", "shadow")._value.get() == 2


def test_many_keys_from_one_address_is_detected(settings_for: Callable[..., ProxySettings]) -> None:
    rule = RuleSettings(mode="enforce", threshold=3, period_seconds=60)
    app = create_app(settings_for(abuse=abuse_settings(many_keys=rule), clients=TRUSTED))
    client, runtime = app.test_client(), app.extensions["ratelimit_proxy"]
    keys = [runtime.keys.create("free", f"user{i}")[0] for i in range(3)]
    who = {"X-Forwarded-For": "198.51.100.40"}
    statuses = [client.get("/api/v1/users", headers={**who, "X-API-Key": k}).status_code for k in keys]
    assert statuses == [200, 200, 200]
    assert client.get("/api/v1/users", headers={**who, "X-API-Key": keys[0]}).status_code == 403


def test_tier_reload_applies_a_changed_file(
    settings_for: Callable[..., ProxySettings], database: DatabaseSettings
) -> None:
    settings = settings_for(database=database)
    changed = dataclasses.replace(
        settings.limits,
        tiers={**settings.limits.tiers, "free": dataclasses.replace(settings.limits.tiers["free"], per_minute=7)},
    )
    proxy = create_app(settings, reload=lambda: dataclasses.replace(settings, limits=changed))
    admin = create_admin_app(settings, runtime=proxy.extensions["ratelimit_proxy"]).test_client()
    headers = {"Authorization": f"Bearer {admin_token(database.url)}"}
    assert '"minute";q=20' in proxy.test_client().get("/api/v1/users").headers["RateLimit-Policy"]
    assert admin.post("/api/v1/reload", headers=headers).status_code == 200
    assert '"minute";q=7' in proxy.test_client().get("/api/v1/users").headers["RateLimit-Policy"]


def test_admin_metrics_report_decisions_bans_and_near_limit(pair: tuple[Flask, FlaskClient, dict]) -> None:
    proxy, admin, headers = pair
    client = proxy.test_client()
    for _ in range(7):
        client.get("/api/v1/users")
    admin.post("/api/v1/bans", json={"network": "198.51.100.0/24"}, headers=headers)
    client.get("/api/v1/users", environ_base={"REMOTE_ADDR": "198.51.100.3"})
    # single process: the proxy's registry is the one the shared runtime registered its metrics in
    registry = proxy.extensions["service_kit"].metrics.registry
    value = registry.get_sample_value
    assert value("ratelimit_requests_total", {"tier": "free", "decision": "allowed", "status_class": "2xx"}) == 5
    assert value("ratelimit_requests_total", {"tier": "free", "decision": "limited", "status_class": "4xx"}) == 2
    assert value("ratelimit_blocked_requests_total", {"reason": "ban"}) == 1
    assert value("ratelimit_near_limit_total", {"tier": "free", "window": "burst"}) == 2  # 4 and 5 of 5
    assert value("ratelimit_bans_total", {"source": "manual"}) == 1
    assert value("ratelimit_decision_duration_seconds_count") == 6  # the 7th: from the over-limit cache
    assert value("ratelimit_local_refusals_total") == 1
    scrape = admin.get("/metrics").get_data(as_text=True)
    assert "ratelimit_active_bans 1.0" in scrape


def test_bootstrap_admin_token_from_environment_is_accepted_and_audited(
    settings_for: Callable[..., ProxySettings], database: DatabaseSettings
) -> None:
    settings = settings_for(database=database)
    settings = dataclasses.replace(settings, admin=dataclasses.replace(settings.admin, token="s3cret-bootstrap"))
    admin = create_admin_app(settings).test_client()
    upgrade(make_engine(database.url))
    assert admin.get("/api/v1/bans", headers={"Authorization": "Bearer wrong"}).status_code == 401
    good = {"Authorization": "Bearer s3cret-bootstrap"}
    assert admin.post("/api/v1/bans", json={"network": "198.51.100.7"}, headers=good).status_code == 201
    audit = admin.get("/api/v1/audit", headers=good).get_json()["data"]
    assert [(a["actor"], a["action"]) for a in audit] == [("admin-token", "ban.create")]


def test_key_stuffing_with_unknown_keys_is_detected(settings_for: Callable[..., ProxySettings]) -> None:
    rule = RuleSettings(mode="enforce", threshold=3, period_seconds=60)
    app = create_app(settings_for(abuse=abuse_settings(many_keys=rule), clients=TRUSTED))
    client = app.test_client()
    who = {"X-Forwarded-For": "198.51.100.41"}
    statuses = [
        client.get("/api/v1/users", headers={**who, "X-API-Key": f"vbx_guess{i}"}).status_code for i in range(4)
    ]
    assert statuses == [401, 401, 401, 403]
