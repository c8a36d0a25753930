"""The response cache through the proxy app (Flask test client into the gateway), real Redis, and a real
HTTP origin in this process whose answers each test sets (``Origin``). The only stand-in is the CDN's purge
API: a local HTTP server that records the calls (``CdnRecorder``), since no CDN can be reached from here."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from ratelimit_proxy.admin import create_admin_app
from ratelimit_proxy.app import create_app
from ratelimit_proxy.config import validate
from ratelimit_proxy.settings import (
    CacheRouteSettings,
    CacheSettings,
    CdnSettings,
    LimitSettings,
    ProxySettings,
    StaticKey,
    TierSettings,
)
from service_kit.config import ConfigError
from service_kit.requests import hash_token
from service_kit.settings import DatabaseSettings
from service_kit.tiers import TIERS
from tests.ratelimit_proxy.conftest import TEST_TIERS, admin_token, build_settings
from tests.ratelimit_proxy.test_processes import QUIET_ABUSE, ProxyProcess
from tests.servers import RedisServer, wait_until

pytestmark = pytest.mark.integration

KEY_A, KEY_B = "vbx_cache-test-key-a", "vbx_cache-test-key-b"
STATIC = [StaticKey(sha256=hash_token(k), tier="enterprise", owner="tests") for k in (KEY_A, KEY_B)]
HUGE = TierSettings(burst_per_second=100_000, per_minute=1_000_000, per_hour=10_000_000, ai_per_day=1_000_000)
ROUTES = [
    CacheRouteSettings(name="public", path="/public/*", surrogate_keys=["public"]),
    CacheRouteSettings(
        name="cdn-only", path="/edge/*", store=False, surrogate_control="max-age=300", cdn_cache_control="max-age=600"
    ),
]


class Origin:
    """An HTTP/1.1 origin: per path the status, headers and body to answer, an optional delay; it records
    every request's method, path and headers."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, list[tuple[str, str]], bytes, float]] = {}
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self, with_body: bool) -> None:
                with origin.lock:
                    origin.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, headers, body, delay = origin.answers.get(self.path.split("?")[0], (404, [], b"{}", 0.0))
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body and status != 304:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self.answer(True)

            def do_HEAD(self) -> None:
                self.answer(False)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set(
        self,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes = b'{"ok":true}',
        status: int = 200,
        delay: float = 0.0,
    ) -> None:
        self.answers[path] = (status, headers, body, delay)

    def calls(self, path: str) -> list[tuple[str, str, dict[str, str]]]:
        with self.lock:
            return [c for c in self.seen if c[1].split("?")[0] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CdnRecorder:
    """Stands in for a CDN's purge API (the one mock here: no CDN is reachable): records each call's
    method, path, headers and JSON body, and answers 200."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw) if raw else None
                recorder.calls.append(("POST", self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "15")
                self.end_headers()
                self.wfile.write(b'{"status":"ok"}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


@pytest.fixture
def path(request: pytest.FixtureRequest, origin: Origin) -> str:
    """A path of the cached route that no other test used (the origin is shared by the module)."""
    return "/public/" + "".join(c if c.isalnum() else "-" for c in request.node.name)


Make = Callable[..., ProxySettings]


@pytest.fixture
def make(origin: Origin, redis_url: str, tmp_path: Any) -> Make:
    def build(tiers: dict[str, TierSettings] | None = None, **cache: Any) -> ProxySettings:
        base = build_settings(
            origin.url,
            redis_url,
            limits=LimitSettings(tiers=tiers or dict.fromkeys(TIERS, HUGE)),
            static_keys=STATIC,
            database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'proxy.sqlite3'}"),
        )
        return dataclasses.replace(base, cache=CacheSettings(routes=ROUTES, **cache))

    return build


@pytest.fixture
def apps() -> Iterator[Callable[[ProxySettings], Flask]]:
    started: list[Flask] = []

    def start(settings: ProxySettings) -> Flask:
        app = create_app(settings)
        started.append(app)
        cache = app.extensions["ratelimit_proxy"].cache
        if cache.listener is not None:
            assert cache.listener.connected.wait(10)
        return app

    yield start
    for app in started:
        app.extensions["ratelimit_proxy"].close()


@pytest.fixture(scope="module")
def shared_app(origin: Origin, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """One proxy for the tests that need nothing of their own (each uses its own paths): a new app per test
    would cost each its change listener's second to stop."""
    if redis_server.process is None:
        redis_server.start()
    database = DatabaseSettings(url=f"sqlite:///{tmp_path_factory.mktemp('cache') / 'proxy.sqlite3'}")
    base = build_settings(
        origin.url, redis_server.url, limits=LimitSettings(tiers=dict.fromkeys(TIERS, HUGE)), static_keys=STATIC,
        database=database,
    )  # fmt: skip
    app = create_app(dataclasses.replace(base, cache=CacheSettings(routes=ROUTES)))
    listener = app.extensions["ratelimit_proxy"].cache.listener
    assert listener is not None and listener.connected.wait(10)
    yield app
    app.extensions["ratelimit_proxy"].close()


@pytest.fixture
def client(shared_app: Flask, redis_url: str) -> FlaskClient:
    """The shared proxy, after Redis was flushed (redis_url)."""
    return shared_app.test_client()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_cacheable_get_is_stored_then_served_from_cache_with_fresh_limit_headers(
    client: FlaskClient, origin: Origin, path: str
) -> None:
    origin.set(path, [("Cache-Control", "max-age=60"), ("Content-Type", "application/json")], b'{"n":1}')
    first, second = client.get(path), client.get(path)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert second.data == b'{"n":1}' and second.headers["Content-Type"] == "application/json"
    assert int(second.headers["Age"]) >= 0
    assert len(origin.calls(path)) == 1
    # the limiter still ran for the hit: its own limit headers and request id
    assert second.headers["RateLimit"] != first.headers["RateLimit"]
    assert second.headers["X-Request-ID"] != first.headers["X-Request-ID"]


def test_cache_hits_still_count_against_the_clients_limits(
    make: Make, apps: Callable[[ProxySettings], Flask], origin: Origin, path: str
) -> None:
    origin.set(path, [("Cache-Control", "max-age=60")])
    client = apps(make(tiers=TEST_TIERS)).test_client()  # free tier: 5 per second, anonymous per IP
    statuses = [client.get(path).status_code for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    assert len(origin.calls(path)) == 1


def test_response_to_a_key_is_stored_only_when_explicitly_public(
    client: FlaskClient, origin: Origin, path: str
) -> None:
    origin.set(path, [("Cache-Control", "max-age=60")])
    client.get(path, headers=auth(KEY_A))
    client.get(path, headers=auth(KEY_A))
    assert len(origin.calls(path)) == 2  # max-age alone: never stored for a request with a credential
    origin.set(path + "p", [("Cache-Control", "public, max-age=60")])
    client.get(path + "p", headers=auth(KEY_A))
    shared = client.get(path + "p", headers={"X-API-Key": KEY_B})
    assert shared.headers["X-Cache"] == "HIT"  # public: shared by every caller with a credential
    anonymous = client.get(path + "p")
    assert anonymous.headers["X-Cache"] == "MISS"  # the anonymous partition is another cache
    assert len(origin.calls(path + "p")) == 2


def test_anonymous_answer_never_serves_a_request_with_a_key(client: FlaskClient, origin: Origin, path: str) -> None:
    origin.set(path, [("Cache-Control", "max-age=60")])
    client.get(path)
    assert client.get(path, headers=auth(KEY_A)).headers["X-Cache"] == "MISS"


@pytest.mark.parametrize("control", ["private, max-age=60", "no-store", "max-age=60, no-store"])
def test_private_and_no_store_are_never_stored(client: FlaskClient, origin: Origin, path: str, control: str) -> None:
    origin.set(path, [("Cache-Control", control)])
    assert client.get(path).headers["X-Cache"] == "MISS"
    assert client.get(path).headers["X-Cache"] == "PASS"  # known uncacheable: straight on for pass_seconds
    assert len(origin.calls(path)) == 2


def test_vary_keeps_one_variant_per_varied_field(client: FlaskClient, origin: Origin, path: str) -> None:
    origin.set(path, [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")])
    client.get(path, headers={"Accept-Language": "de"})
    client.get(path, headers={"Accept-Language": "fr"})
    assert client.get(path, headers={"Accept-Language": "de"}).headers["X-Cache"] == "HIT"
    assert client.get(path, headers={"Accept-Language": "fr"}).headers["X-Cache"] == "HIT"
    assert len(origin.calls(path)) == 2


def test_stale_entry_is_revalidated_with_its_etag_and_a_304_refreshes_it(
    client: FlaskClient, origin: Origin, path: str
) -> None:
    origin.set(path, [("Cache-Control", "no-cache"), ("ETag", '"v1"')], b"version one")
    assert client.get(path).headers["X-Cache"] == "MISS"
    origin.set(path, [("Cache-Control", "no-cache"), ("ETag", '"v1"')], b"", status=304)
    again = client.get(path)
    assert (again.status_code, again.headers["X-Cache"], again.data) == (200, "REVALIDATED", b"version one")
    assert origin.calls(path)[-1][2]["if-none-match"] == '"v1"'


def test_revalidation_answered_200_replaces_the_entry(client: FlaskClient, origin: Origin, path: str) -> None:
    origin.set(path, [("Cache-Control", "no-cache"), ("Last-Modified", "Tue, 01 Dec 2026 10:00:00 GMT")], b"one")
    client.get(path)
    origin.set(path, [("Cache-Control", "max-age=60")], b"two")
    assert client.get(path).data == b"two"
    assert origin.calls(path)[-1][2]["if-modified-since"] == "Tue, 01 Dec 2026 10:00:00 GMT"
    assert client.get(path).headers["X-Cache"] == "HIT"


def test_client_conditional_request_gets_304_from_the_cache(client: FlaskClient, origin: Origin, path: str) -> None:
    origin.set(path, [("Cache-Control", "max-age=60"), ("ETag", '"abc"')])
    client.get(path)
    answer = client.get(path, headers={"If-None-Match": '"abc"'})
    assert (answer.status_code, answer.headers["X-Cache"], answer.data) == (304, "HIT", b"")
    assert len(origin.calls(path)) == 1


def test_stale_while_revalidate_serves_stale_and_refreshes_in_the_background(
    make: Make, apps: Callable[[ProxySettings], Flask], origin: Origin, path: str
) -> None:
    app = apps(make())
    cache, client = app.extensions["ratelimit_proxy"].cache, app.test_client()
    origin.set(path, [("Cache-Control", "max-age=1, stale-while-revalidate=60")], b"old")
    client.get(path)
    origin.set(path, [("Cache-Control", "max-age=60")], b"new")
    now = time.time()
    cache.clock = lambda: now + 5  # past the lifetime, inside the window: no test waits for the clock
    stale = client.get(path)
    assert (stale.headers["X-Cache"], stale.data) == ("STALE", b"old")
    wait_until(lambda: client.get(path).data == b"new", timeout=10)


def test_stale_while_revalidate_refreshes_once_across_two_proxies_on_one_redis(
    make: Make, apps: Callable[[ProxySettings], Flask], origin: Origin, path: str
) -> None:
    """Two runtimes (two replicas) hold a stale entry in their local layers; 40 requests at once across both
    are answered stale and make one background refresh (each runtime used to refresh on its own), and the
    runtime that did not refresh takes the new entry from Redis without asking the origin."""
    runtimes = [apps(make()) for _ in range(2)]
    clients = [app.test_client() for app in runtimes]
    origin.set(path, [("Cache-Control", "max-age=1, stale-while-revalidate=60")], b"old")
    assert clients[0].get(path).headers["X-Cache"] == "MISS"
    assert clients[1].get(path).headers["X-Cache"] == "HIT"  # now in both local layers
    origin.set(path, [("Cache-Control", "max-age=60")], b"new", delay=0.3)
    now = time.time()
    for app in runtimes:
        app.extensions["ratelimit_proxy"].cache.clock = lambda: now + 5  # past the lifetime, in the window
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda i: clients[i % 2].get(path), range(40)))
    assert {(a.headers["X-Cache"], a.data) for a in answers} == {("STALE", b"old")}
    for client in clients:
        wait_until(lambda client=client: client.get(path).data == b"new", timeout=10)
    assert len(origin.calls(path)) == 2  # the fill, then one refresh


def test_stale_if_error_answers_when_the_origin_fails(
    make: Make, apps: Callable[[ProxySettings], Flask], origin: Origin, path: str
) -> None:
    app = apps(make())
    cache, client = app.extensions["ratelimit_proxy"].cache, app.test_client()
    origin.set(path, [("Cache-Control", "max-age=1, stale-if-error=600")], b"kept")
    client.get(path)
    origin.set(path, [], b"down", status=503)
    now = time.time()
    cache.clock = lambda: now + 30
    answer = client.get(path)
    assert (answer.status_code, answer.headers["X-Cache"], answer.data) == (200, "STALE", b"kept")
    cache.clock = lambda: now + 3600  # past stale-if-error: the origin's error goes through
    assert client.get(path).status_code == 503


def test_head_miss_fills_from_a_get_and_later_gets_hit(client: FlaskClient, origin: Origin, path: str) -> None:
    origin.set(path, [("Cache-Control", "max-age=60")], b"body")
    head = client.head(path)
    assert (head.status_code, head.data, head.headers["Content-Length"]) == (200, b"", "4")
    assert client.get(path).headers["X-Cache"] == "HIT"
    assert [method for method, _, _ in origin.calls(path)] == ["GET"]


def test_entry_above_the_size_limit_is_passed_through_not_stored(
    make: Make, apps: Callable[[ProxySettings], Flask], origin: Origin, path: str
) -> None:
    client = apps(make(max_entry_bytes=100_000)).test_client()
    big = b"x" * 150_000  # above forward.py's 64 KiB chunk too: the body arrives as a stream
    origin.set(path, [("Cache-Control", "max-age=60")], big)
    assert client.get(path).data == big
    assert client.get(path).data == big
    assert len(origin.calls(path)) == 2


def test_one_hundred_concurrent_misses_make_one_upstream_call(client: FlaskClient, origin: Origin, path: str) -> None:
    origin.set(path, [("Cache-Control", "max-age=60")], b"filled once", delay=0.3)
    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(lambda _: client.get(path), range(100)))
    assert [a.status_code for a in answers] == [200] * 100
    assert all(a.data == b"filled once" for a in answers)
    assert len(origin.calls(path)) == 1


def test_concurrent_misses_in_two_proxies_on_one_redis_make_one_upstream_call(
    make: Make, apps: Callable[[ProxySettings], Flask], origin: Origin, path: str
) -> None:
    """Two runtimes, each with its own threads and in-process single-flight, like two replicas: the fill
    lock in Redis makes one of them fetch while the other polls Redis for the entry."""
    clients = [apps(make()).test_client(), apps(make()).test_client()]
    origin.set(path, [("Cache-Control", "max-age=60")], b"once", delay=0.3)
    with ThreadPoolExecutor(60) as pool:
        answers = list(pool.map(lambda i: clients[i % 2].get(path), range(60)))
    assert all(a.status_code == 200 and a.data == b"once" for a in answers)
    assert len(origin.calls(path)) == 1


def test_concurrent_revalidations_in_two_proxies_on_one_redis_make_one_upstream_call(
    make: Make, apps: Callable[[ProxySettings], Flask], origin: Origin, path: str
) -> None:
    """An entry stored with no-cache is revalidated on every request; 40 at once across two runtimes ask the
    origin once (each runtime used to send its own conditional request)."""
    clients = [apps(make()).test_client(), apps(make()).test_client()]
    origin.set(path, [("Cache-Control", "no-cache"), ("ETag", '"v1"')], b"version one")
    assert clients[0].get(path).headers["X-Cache"] == "MISS"
    origin.set(path, [("Cache-Control", "no-cache"), ("ETag", '"v1"')], b"", status=304, delay=0.3)
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda i: clients[i % 2].get(path), range(40)))
    assert all((a.status_code, a.data) == (200, b"version one") for a in answers)
    # REVALIDATED for the one that asked and those polling Redis for it; HIT for its worker's waiters
    assert {a.headers["X-Cache"] for a in answers} <= {"REVALIDATED", "HIT"}
    assert len(origin.calls(path)) == 2  # the fill, then one revalidation


def test_redis_down_bypasses_the_cache_and_never_fails_a_request(
    make: Make, apps: Callable[[ProxySettings], Flask], origin: Origin, path: str, redis_server: RedisServer
) -> None:
    client = apps(make()).test_client()  # its own: the shared proxy's breakers stay closed
    origin.set(path, [("Cache-Control", "max-age=60")])
    assert client.get(path).status_code == 200
    redis_server.stop()
    answers = [client.get(path) for _ in range(10)]
    assert [a.status_code for a in answers] == [200] * 10
    assert {a.headers["X-Cache"] for a in answers} <= {"BYPASS", "HIT"}  # hits from the worker's local layer
    assert answers[-1].headers["X-Cache"] == "BYPASS"  # the local layer is not trusted without purges
    redis_server.start()


def test_cdn_headers_are_added_per_route(client: FlaskClient, origin: Origin) -> None:
    origin.set("/edge/page", [("Cache-Control", "max-age=60"), ("Surrogate-Control", "max-age=1")])
    answer = client.get("/edge/page")
    assert answer.headers["Surrogate-Control"] == "max-age=300"
    assert answer.headers["CDN-Cache-Control"] == "max-age=600"
    assert "X-Cache" not in answer.headers  # store: false
    origin.set("/public/tagged", [("Cache-Control", "max-age=60"), ("Surrogate-Key", "users user-1")])
    assert client.get("/public/tagged").headers["Surrogate-Key"] == "users user-1 public"


@pytest.fixture
def cdn() -> Iterator[CdnRecorder]:
    recorder = CdnRecorder()
    yield recorder
    recorder.close()


def admin_for(settings: ProxySettings) -> tuple[FlaskClient, dict[str, str]]:
    admin = create_admin_app(settings)
    return admin.test_client(), {"Authorization": f"Bearer {admin_token(settings.database.url)}"}


def test_purge_by_url_reaches_every_replica_at_once(
    make: Make, apps: Callable[[ProxySettings], Flask], origin: Origin, path: str
) -> None:
    settings = make()
    replicas = [apps(settings).test_client(), apps(settings).test_client()]
    origin.set(path, [("Cache-Control", "max-age=600")], b"v1")
    for replica in replicas:
        replica.get(path + "?page=1")
    assert all(r.get(path + "?page=1").headers["X-Cache"] == "HIT" for r in replicas)  # from their local layers
    origin.set(path, [("Cache-Control", "max-age=600")], b"v2")
    admin, headers = admin_for(settings)
    purged = admin.post(
        "/api/v1/cache/purge/urls", json={"urls": [f"https://api.example.com{path}?page=1"]}, headers=headers
    )
    assert purged.status_code == 200, purged.get_json()
    assert purged.get_json()["urls"] == [path + "?page=1"]
    for replica in replicas:
        wait_until(lambda r=replica: r.get(path + "?page=1").data == b"v2", timeout=5)
    audit = admin.get("/api/v1/audit", headers=headers).get_json()["data"]
    assert audit[0]["action"] == "cache.purge_urls"


def test_purge_by_tag_forwards_to_fastly_in_its_request_shape(
    make: Make,
    apps: Callable[[ProxySettings], Flask],
    origin: Origin,
    path: str,
    cdn: CdnRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fastly = CdnSettings(
        provider="fastly",
        api_url=cdn.url,
        service_id="svc1",
        token="fastly-secret",
        public_url="https://api.example.com",
    )
    settings = make(cdn=fastly)
    client = apps(settings).test_client()
    origin.set(path, [("Cache-Control", "max-age=600"), ("Surrogate-Key", "plans")])
    client.get(path)
    admin, headers = admin_for(settings)
    answer = admin.post("/api/v1/cache/purge/tags", json={"tags": ["plans"]}, headers=headers)
    assert answer.status_code == 200
    assert answer.get_json()["tags"] == {"plans": 1}
    assert answer.get_json()["cdn"] == {"provider": "fastly", "calls": [{"kind": "tags", "status": 200}]}
    method, called, sent, body = cdn.calls[-1]
    assert (method, called, body) == ("POST", "/service/svc1/purge", {"surrogate_keys": ["plans"]})
    assert sent["Fastly-Key"] == "fastly-secret"
    wait_until(lambda: client.get(path).headers["X-Cache"] == "MISS", timeout=5)
    admin.post("/api/v1/cache/purge/urls", json={"urls": ["/public/x?y=1"]}, headers=headers)
    assert cdn.calls[-1][1] == "/purge/api.example.com/public/x?y=1"


def test_a_tag_purge_while_a_fill_is_fetching_leaves_nothing_stored(
    make: Make, apps: Callable[[ProxySettings], Flask], origin: Origin, path: str
) -> None:
    """The fill's answer was on its way when the tag was purged: it is served to its client, not stored (it
    used to be, with its tag written after the purge had read the tag set, so the purge missed it)."""
    settings = make()
    client = apps(settings).test_client()
    origin.set(path, [("Cache-Control", "max-age=600")], b"before", delay=0.5)
    with ThreadPoolExecutor(1) as pool:
        filling = pool.submit(client.get, path)
        wait_until(lambda: origin.calls(path), timeout=5)  # the fill is at the origin
        admin, headers = admin_for(settings)
        purged = admin.post("/api/v1/cache/purge/tags", json={"tags": ["public"]}, headers=headers)
        assert purged.status_code == 200, purged.get_json()
        assert filling.result(timeout=10).data == b"before"
    origin.set(path, [("Cache-Control", "max-age=600")], b"after")
    answer = client.get(path)
    assert (answer.headers["X-Cache"], answer.data) == ("MISS", b"after")


def test_cloudflare_purges_by_files_and_tags_and_falls_back_to_urls_without_tags(
    make: Make,
    apps: Callable[[ProxySettings], Flask],
    origin: Origin,
    path: str,
    cdn: CdnRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cloudflare = CdnSettings(
        provider="cloudflare",
        api_url=cdn.url,
        service_id="zone9",
        token="cf-secret",
        public_url="https://api.example.com",
        tag_purge=False,
    )
    settings = make(cdn=cloudflare)
    client = apps(settings).test_client()
    origin.set(path, [("Cache-Control", "max-age=600"), ("Surrogate-Key", "orders")])
    client.get(path)
    admin, headers = admin_for(settings)
    admin.post("/api/v1/cache/purge/tags", json={"tags": ["orders"]}, headers=headers)
    _, called, sent, body = cdn.calls[-1]
    assert (called, body) == ("/zones/zone9/purge_cache", {"files": [f"https://api.example.com{path}"]})
    assert sent["Authorization"] == "Bearer cf-secret"
    assert "cf-secret" not in caplog.text


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("urls", {}, "urls"),
        ("urls", {"urls": []}, "urls"),
        ("urls", {"urls": ["no-slash"]}, "urls[0]"),
        ("urls", {"urls": ["/a b"]}, "urls[0]"),
        ("urls", {"urls": ["/a"], "extra": 1}, "extra"),
        ("tags", {"tags": ["two words"]}, "tags[0]"),
        ("tags", {"tags": "plans"}, "tags"),
    ],
)
def test_purge_refuses_bad_bodies_naming_the_field(make: Make, route: str, body: Any, field: str) -> None:
    admin, headers = admin_for(make())
    answer = admin.post(f"/api/v1/cache/purge/{route}", json=body, headers=headers)
    assert answer.status_code == 422
    assert field in answer.get_json()["error"]["details"]


def test_purge_needs_the_admin_role(make: Make) -> None:
    settings = make()
    admin, _ = admin_for(settings)
    assert admin.post("/api/v1/cache/purge/tags", json={"tags": ["a"]}).status_code == 401
    viewer = {"Authorization": f"Bearer {admin_token(settings.database.url, role='viewer')}"}
    assert admin.post("/api/v1/cache/purge/tags", json={"tags": ["a"]}, headers=viewer).status_code == 403


@pytest.mark.parametrize(
    ("cdn", "key"),
    [
        (CdnSettings(provider="fastly", token="t", public_url="https://a.example"), "cache.cdn.service_id"),
        (CdnSettings(provider="fastly", service_id="s", public_url="https://a.example"), "cache.cdn.token"),
        (CdnSettings(provider="cloudflare", service_id="z", token="t", public_url="a.example"), "cache.cdn.public_url"),
    ],
)
def test_unusable_cdn_settings_stop_start_up_naming_the_key(make: Make, cdn: CdnSettings, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(make(cdn=cdn), "config/ratelimit_proxy.yml")
    assert f"config/ratelimit_proxy.yml: {key}:" in str(caught.value)


def test_cache_metrics_count_results_and_bytes(make: Make, origin: Origin, path: str) -> None:
    registry = CollectorRegistry()
    app = create_app(make(), registry=registry)
    try:
        client = app.test_client()
        origin.set(path, [("Cache-Control", "max-age=60")], b"12345")
        client.get(path)
        client.get(path)
    finally:
        app.extensions["ratelimit_proxy"].close()

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("ratelimit_cache_requests_total", result="hit") == 1
    assert sample("ratelimit_cache_requests_total", result="miss") == 1
    assert sample("ratelimit_cache_served_bytes_total") == 5


@pytest.mark.slow
def test_concurrent_misses_across_worker_processes_make_one_upstream_call(
    origin: Origin, path: str, redis_url: str, tmp_path: Any
) -> None:
    """Two proxies of two granian workers each on one Redis: four processes, one fill (the Redis lock)."""
    huge = dataclasses.asdict(HUGE)
    config = {
        "upstream": {"url": origin.url, "read_timeout_seconds": 5.0},
        "redis": {"url": redis_url, "timeout_ms": 1000},
        "limits": {"tiers": dict.fromkeys(TIERS, huge)},
        "abuse": QUIET_ABUSE,
        "cache": {"routes": [{"name": "public", "path": "/public/*"}]},
    }
    proxies = [ProxyProcess(tmp_path, config, workers=2) for _ in range(2)]
    try:
        origin.set(path, [("Cache-Control", "max-age=60")], b"one fill", delay=0.5)
        with ThreadPoolExecutor(80) as pool:
            answers = list(pool.map(lambda i: requests.get(proxies[i % 2].url + path, timeout=10), range(80)))
        assert [a.status_code for a in answers] == [200] * 80
        assert {a.content for a in answers} == {b"one fill"}
        assert len(origin.calls(path)) == 1
    finally:
        for proxy in proxies:
            proxy.close()


@pytest.mark.parametrize(
    ("route", "key"),
    [
        (CacheRouteSettings(name="r", path="api/*"), "cache.routes[0].path"),
        (
            CacheRouteSettings(name="r", path="/api/*", surrogate_keys=["two words"]),
            "cache.routes[0].surrogate_keys[0]",
        ),
    ],
)
def test_unusable_cache_routes_stop_start_up_naming_the_key(make: Make, route: CacheRouteSettings, key: str) -> None:
    settings = dataclasses.replace(make(), cache=CacheSettings(routes=[route]))
    with pytest.raises(ConfigError, match=f"config/ratelimit_proxy.yml: {re.escape(key)}:"):
        validate(settings, "config/ratelimit_proxy.yml")


def test_origin_error_does_not_mark_the_url_uncacheable(client: FlaskClient, origin: Origin, path: str) -> None:
    origin.set(path, [], b"down", status=503)
    assert client.get(path).status_code == 503
    origin.set(path, [("Cache-Control", "max-age=60")], b"back")
    assert client.get(path).headers["X-Cache"] == "MISS"  # not PASS: an outage says nothing of the URL
    assert client.get(path).headers["X-Cache"] == "HIT"
