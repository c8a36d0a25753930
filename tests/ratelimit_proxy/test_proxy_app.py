"""The proxy app in process (Flask test client) against a real demo upstream and a real Redis."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import http_sf
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from ratelimit_proxy.app import create_app
from ratelimit_proxy.settings import ClientSettings, ProxySettings, StaticKey, UpstreamSettings
from service_kit.requests import hash_token
from tests.ratelimit_proxy.conftest import Upstream
from tests.servers import wait_until

pytestmark = pytest.mark.integration

ENTERPRISE_KEY = "vbx_enterprise-test-key"
STATIC = [StaticKey(sha256=hash_token(ENTERPRISE_KEY), tier="enterprise", owner="tests")]


def test_proxied_response_carries_structured_ratelimit_headers(client: FlaskClient) -> None:
    response = client.get("/api/v1/users?page=2&page=3")
    assert response.status_code == 200
    assert response.get_json()["query"] == {"page": "2"}  # the upstream saw the query string
    policy = http_sf.parse(response.headers["RateLimit-Policy"].encode(), tltype="list")
    assert [(item[0], dict(item[1])) for item in policy] == [
        ("burst", {"q": 5, "w": 1}),
        ("minute", {"q": 20, "w": 60}),
        ("hour", {"q": 100, "w": 3600}),
    ]
    state = {
        name: dict(params) for name, params in http_sf.parse(response.headers["RateLimit"].encode(), tltype="list")
    }
    assert {name: p["r"] for name, p in state.items()} == {"burst": 4, "minute": 19, "hour": 99}
    assert all(p["t"] >= 1 for p in state.values())
    assert response.headers["X-RateLimit-Limit"] == "5"
    assert response.headers["X-RateLimit-Remaining"] == "4"


def test_refused_request_gets_429_problem_and_never_reaches_upstream(client: FlaskClient, upstream: Upstream) -> None:
    path = "/api/v1/status/200"
    before = upstream.served(path)
    statuses = [client.get(path).status_code for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    assert upstream.served(path) - before == 5
    refused = client.get(path)
    assert refused.status_code == 429
    assert refused.content_type == "application/problem+json"
    body = refused.get_json()
    assert body["type"].endswith("#quota-exceeded")
    assert body["violated-policies"] == ["burst"]
    retry_after = int(refused.headers["Retry-After"])
    state = dict(http_sf.parse(refused.headers["RateLimit"].encode(), tltype="list"))
    assert retry_after >= 1
    assert retry_after >= state["burst"]["t"]  # never earlier than the quota returns
    time.sleep(retry_after)
    assert client.get(path).status_code == 200


def test_ai_quota_counts_only_on_ai_routes(client: FlaskClient) -> None:
    ordinary = client.get("/api/v1/users")
    assert "ai-day" not in ordinary.headers["RateLimit-Policy"]
    statuses = []
    for _ in range(4):
        statuses.append(client.post("/api/ai/embeddings", json={"text": "hi"}).status_code)
        time.sleep(0.25)  # stay under the burst limit: only the AI quota (3/day) may refuse
    assert statuses == [200, 200, 200, 429]
    refused = client.post("/api/ai/embeddings", json={"text": "hi"})
    assert refused.get_json()["violated-policies"] == ["ai-day"]
    assert client.get("/api/v1/users").status_code == 200  # ordinary routes are not charged by AI


def test_unknown_and_revoked_keys_get_401_and_never_reach_upstream(
    settings_for: Callable[..., ProxySettings], upstream: Upstream
) -> None:
    app = create_app(settings_for())
    client = app.test_client()
    runtime = app.extensions["ratelimit_proxy"]
    api_key, record = runtime.keys.create("enterprise", "acme")
    before = upstream.served("/api/v1/echo")
    assert client.get("/api/v1/echo", headers={"X-API-Key": "vbx_nope"}).status_code == 401
    ok = client.get("/api/v1/echo", headers={"Authorization": f"Bearer {api_key}"})
    assert ok.status_code == 200
    assert '"burst";q=1000' in ok.headers["RateLimit-Policy"]
    runtime.keys.update(record.key_id, status="revoked")
    revoked = client.get("/api/v1/echo", headers={"Authorization": f"Bearer {api_key}"})
    assert revoked.status_code == 401
    assert revoked.get_json()["error"]["code"] == "unauthorized"
    assert upstream.served("/api/v1/echo") - before == 1


def test_static_config_key_is_accepted(settings_for: Callable[..., ProxySettings]) -> None:
    client = create_app(settings_for(static_keys=STATIC)).test_client()
    response = client.get("/api/v1/users", headers={"X-API-Key": ENTERPRISE_KEY})
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "1000"


def test_forwarding_sets_forwarded_headers_drops_hop_by_hop_and_rewrites_host(client: FlaskClient) -> None:
    response = client.post(
        "/api/v1/echo?a=1&a=2",
        data=b"x" * 1000,
        headers={
            "Host": "evil.example",
            "Connection": "close, X-Secret-Hop",
            "X-Secret-Hop": "1",
            "Keep-Alive": "timeout=5",
            "X-Forwarded-For": "6.6.6.6",
            "X-Request-ID": "req-123",
            "Accept": "application/json",
        },
        environ_base={"REMOTE_ADDR": "198.51.100.4"},
    )
    seen = response.get_json()
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert seen["query"] == "a=1&a=2"
    assert seen["body_bytes"] == 1000
    assert headers["host"].startswith("127.0.0.1:")
    assert headers["x-forwarded-host"] == "evil.example"
    assert headers["x-forwarded-for"] == "198.51.100.4"  # the untrusted client's own claim is dropped
    assert headers["x-request-id"] == "req-123" == response.headers["X-Request-ID"]
    assert "x-secret-hop" not in headers and "keep-alive" not in headers
    assert headers["accept"] == "application/json"


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "client_ip"),
    [
        ([], "198.51.100.4", "6.6.6.6", "198.51.100.4"),
        (["10.0.0.0/8"], "10.1.1.1", "203.0.113.5", "203.0.113.5"),
        (["10.0.0.0/8"], "198.51.100.4", "203.0.113.5", "198.51.100.4"),
        (["10.0.0.0/8"], "10.1.1.1", "6.6.6.6, 203.0.113.5, 10.2.2.2", "203.0.113.5"),
    ],
)
def test_client_ip_is_taken_from_forwarded_for_only_through_trusted_proxies(
    settings_for: Callable[..., ProxySettings], trusted: list[str], peer: str, forwarded: str, client_ip: str
) -> None:
    app = create_app(settings_for(clients=ClientSettings(trusted_proxies=trusted)))
    response = app.test_client().get(
        "/api/v1/echo", headers={"X-Forwarded-For": forwarded}, environ_base={"REMOTE_ADDR": peer}
    )
    assert response.status_code == 200
    runtime = app.extensions["ratelimit_proxy"]
    charged = runtime.limiter.peek(f"ip:{client_ip}", runtime.policy.tiers["free"])
    assert [w.remaining for w in charged.windows] == [4, 19, 99]  # the anonymous limit is per client IP
    sent = {k.lower(): v for k, v in response.get_json()["headers"].items()}
    assert sent["x-forwarded-for"].split(", ")[-1] == peer


def test_repeated_set_cookie_and_status_codes_pass_through(client: FlaskClient) -> None:
    response = client.get("/api/v1/session")
    assert sorted(c.split("=")[0] for c in response.headers.getlist("Set-Cookie")) == ["session", "theme"]
    assert client.get("/api/v1/status/418").status_code == 418
    assert client.get("/api/v1/status/404").status_code == 404


def test_oversized_header_and_body_are_refused_before_upstream(client: FlaskClient, upstream: Upstream) -> None:
    before = upstream.served("/api/v1/echo")
    assert client.get("/api/v1/echo", headers={"X-Big": "a" * 5000}).status_code == 431
    too_big = client.post("/api/v1/echo", data=b"x" * (1024 * 1024 + 1))
    assert too_big.status_code == 413
    assert too_big.get_json()["error"]["code"] == "body_too_large"
    assert upstream.served("/api/v1/echo") == before


def test_upstream_down_is_502_within_connect_timeout(settings_for: Callable[..., ProxySettings]) -> None:
    from tests.servers import free_port

    dead = UpstreamSettings(url=f"http://127.0.0.1:{free_port()}", connect_timeout_seconds=1.0)
    client = create_app(settings_for(upstream=dead)).test_client()
    started = time.monotonic()
    response = client.get("/api/v1/users")
    assert response.status_code == 502
    assert response.get_json()["error"]["code"] == "bad_gateway"
    assert response.headers["X-RateLimit-Remaining"] == "4"  # it was counted, and says so
    assert time.monotonic() - started < 1.0


def test_slow_upstream_is_504(client: FlaskClient) -> None:
    started = time.monotonic()
    response = client.get("/api/v1/slow?seconds=3")
    assert response.status_code == 504
    assert 0.9 < time.monotonic() - started < 2.5


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_down_fails_open_or_closed_quickly(
    settings_for: Callable[..., ProxySettings], upstream: Upstream, mode: str
) -> None:
    from tests.servers import free_port

    settings = settings_for()
    storage = dataclasses.replace(settings.redis, url=f"redis://127.0.0.1:{free_port()}/0", failure_mode=mode)
    app = create_app(dataclasses.replace(settings, redis=storage))
    client = app.test_client()
    started = time.monotonic()
    statuses = [client.get("/api/v1/users").status_code for _ in range(30)]
    elapsed = time.monotonic() - started
    expected = 200 if mode == "open" else 503
    assert statuses == [expected] * 30
    assert elapsed / 30 < 0.05  # the breaker skips Redis: no timeout paid per request
    if mode == "closed":
        response = client.get("/api/v1/users")
        assert int(response.headers["Retry-After"]) >= 1
        assert response.get_json()["type"].endswith("#temporary-reduced-capacity")
    runtime = app.extensions["ratelimit_proxy"]
    assert runtime.breaker.is_open


def test_absolute_form_target_cannot_pick_another_host(app: Flask) -> None:
    # Servers that keep the raw target (werkzeug: RAW_URI) show an absolute form: refused outright.
    # (granian reduces it to the path itself; tests/ratelimit_proxy/test_processes.py covers that.)
    raw = "http://evil.example/api/v1/users"
    response = app.test_client().get("/api/v1/users", environ_overrides={"RAW_URI": raw, "REQUEST_URI": raw})
    assert response.status_code == 400
    assert app.test_client().get("/api/v1/users").status_code == 200


@pytest.mark.parametrize("path", ["/static/app.js", "/metrics", "/healthz", "/"])
def test_proxy_claims_no_path_of_its_own(client: FlaskClient, upstream: Upstream, path: str) -> None:
    before = upstream.served(path)
    client.get(path)
    assert upstream.served(path) == before + 1


@pytest.mark.parametrize(("mode", "status"), [("open", 200), ("closed", 503)])
def test_api_key_that_cannot_be_checked_follows_the_failure_mode(
    settings_for: Callable[..., ProxySettings], mode: str, status: int
) -> None:
    from tests.servers import free_port

    settings = settings_for()
    storage = dataclasses.replace(settings.redis, url=f"redis://127.0.0.1:{free_port()}/0", failure_mode=mode)
    client = create_app(dataclasses.replace(settings, redis=storage)).test_client()
    statuses = {client.get("/api/v1/users", headers={"X-API-Key": "vbx_unverifiable"}).status_code for _ in range(5)}
    assert statuses == {status}  # never a 401 for a key that may well be valid


def test_request_fingerprint_is_bounded_and_normalised() -> None:
    from ratelimit_proxy.abuse import request_fingerprint

    short = request_fingerprint("203.0.113.9", "curl/7.88.1", ["Host", "Accept"])
    assert short.startswith("203.0.113.9|curl/7|")
    assert request_fingerprint("203.0.113.9", "curl/8.1", ["accept", "host"]).split("|")[2] == short.split("|")[2]
    huge = request_fingerprint("203.0.113.9", "x" * 10_000, [f"X-H{i}" for i in range(500)])
    assert len(huge) < 100


def test_client_framing_headers_never_reach_the_upstream_and_both_framings_are_refused(
    client: FlaskClient, upstream: Upstream
) -> None:
    # `Content_Length` arrives as HTTP_CONTENT_LENGTH: forwarded, it would make the upstream read the body
    # as a second request (request smuggling).
    response = client.post(
        "/api/v1/echo", data=b"hello", environ_overrides={"HTTP_CONTENT_LENGTH": "0", "HTTP_CONTENT_TYPE": "x/evil"}
    )
    assert response.status_code == 200
    echoed = response.json
    assert echoed is not None and echoed["body_bytes"] == 5
    assert echoed["headers"]["Content-Length"] == "5"
    assert echoed["headers"].get("Content-Type") != "x/evil"

    before = upstream.served("/api/v1/echo")
    both = client.post("/api/v1/echo", data=b"hello", headers={"Transfer-Encoding": "chunked"})
    assert both.status_code == 400
    assert both.json is not None and both.json["error"]["code"] == "ambiguous_framing"
    assert upstream.served("/api/v1/echo") == before


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "5 ", "-1", "0x5", "abc"])
def test_a_content_length_that_is_not_ascii_digits_is_refused_not_guessed(
    client: FlaskClient, upstream: Upstream, value: str
) -> None:
    """RFC 9112 6.3: an invalid Content-Length cannot be recovered from. "\u00b2" (superscript two, a byte
    0xB2 read as latin-1) passed str.isdigit() and then int() raised: a 500."""
    before = upstream.served("/api/v1/echo")
    response = client.post("/api/v1/echo", data=b"hello", environ_overrides={"CONTENT_LENGTH": value})
    assert response.status_code == 400
    assert response.json is not None and response.json["error"]["code"] == "bad_content_length"
    assert upstream.served("/api/v1/echo") == before


def test_a_client_over_its_limit_is_refused_from_memory_with_no_redis_call(
    settings_for: Callable[..., ProxySettings], redis_url: str
) -> None:
    app = create_app(settings_for())
    client = app.test_client()
    admin = redis.Redis.from_url(redis_url)
    try:
        assert [client.get("/api/v1/users").status_code for _ in range(5)] == [200] * 5  # burst of 5
        first = client.get("/api/v1/users")
        assert first.status_code == 429
        calls = int(admin.info("commandstats")["cmdstat_evalsha"]["calls"])
        refused = [client.get("/api/v1/users") for _ in range(20)]
        assert {r.status_code for r in refused} == {429}
        assert int(admin.info("commandstats")["cmdstat_evalsha"]["calls"]) == calls  # 0 calls for 20 refusals
        # burst: 1 s in 10 buckets, so a refusal stands up to 1.1 s (headers round up to whole seconds)
        assert all(int(r.headers["Retry-After"]) in (1, 2) and "RateLimit" in r.headers for r in refused), [
            dict(r.headers) for r in refused[:2]
        ]
        runtime = app.extensions["ratelimit_proxy"]
        assert runtime.metrics.local_refusals._value.get() == 20
        wait_until(lambda: client.get("/api/v1/users").status_code == 200, timeout=3, interval=0.02)
    finally:
        app.extensions["ratelimit_proxy"].close()
