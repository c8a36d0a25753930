"""The proxy as it runs in production: granian worker processes, a real Redis, the demo upstream process."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry

from ratelimit_proxy.runtime import Runtime
from ratelimit_proxy.wsgi_names import PROXY_TARGET
from service_kit.requests import hash_token
from service_kit.server import granian_command
from service_kit.settings import ServerSettings
from service_kit.tiers import TIERS
from tests.conftest import RedisUnderTest
from tests.ratelimit_proxy.conftest import ROOT, Script, ScriptedServer, Upstream, build_settings, ok
from tests.servers import RedisServer, free_port, port_open, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUIET_ABUSE = {rule: {"mode": "off"} for rule in ("limit_breaches", "scanning", "attack_paths", "many_keys")}


class ProxyProcess:
    """``ratelimit_proxy.wsgi:app`` under granian with a config file written for the test."""

    def __init__(self, tmp: Path, config: dict[str, Any], workers: int = 2, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        path = tmp / f"proxy-{self.port}.yml"
        path.write_text(yaml.safe_dump({"log_proxied_requests": False, "logging": {"level": "WARNING"}, **config}))
        env = {**os.environ, "VIBELUX_RATELIMIT_PROXY_CONFIG": str(path), **(env or {})}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        command = granian_command(PROXY_TARGET, ServerSettings(port=self.port, workers=workers, blocking_threads=32))
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), timeout=30)

    def rss_bytes(self) -> int:
        parent = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(15)


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[Any]:
    started: list[ProxyProcess] = []

    def start(config: dict[str, Any], workers: int = 2, env: dict[str, str] | None = None) -> ProxyProcess:
        proxy = ProxyProcess(tmp_path, config, workers, env)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.close()


def base_config(upstream: Upstream, redis_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "upstream": {"url": upstream.url, "connect_timeout_seconds": 1.0, "read_timeout_seconds": 5.0},
        # timeout_ms: see build_settings in conftest.py
        "redis": {"url": redis_url, "timeout_ms": 1000, "breaker_reset_seconds": 0.5, "ban_refresh_seconds": 0.2},
        "abuse": QUIET_ABUSE,
        **extra,
    }


def tiers(minute: int, burst: int = 10_000) -> dict[str, Any]:
    free = {"burst_per_second": burst, "per_minute": minute, "per_hour": 100_000, "ai_per_day": 100_000}
    return {"tiers": dict.fromkeys(TIERS, free)}


def test_64_concurrent_clients_through_two_workers_get_exactly_the_quota(
    start_proxy: Any, upstream: Upstream, any_redis: RedisUnderTest
) -> None:
    """On every topology: one server, Sentinel, a 3-master Cluster."""
    quota = 40
    config = base_config(upstream, any_redis.url, limits=tiers(minute=quota))
    proxy = start_proxy(config, env=any_redis.environment("RATELIMIT_PROXY"))
    before = upstream.served("/api/v1/users")
    session_local = threading.local()

    def call(_: int) -> int:
        session = getattr(session_local, "session", None) or requests.Session()
        session_local.session = session
        return session.get(f"{proxy.url}/api/v1/users", timeout=10).status_code

    with ThreadPoolExecutor(64) as pool:
        statuses = Counter(pool.map(call, range(300)))
    assert statuses == {200: quota, 429: 300 - quota}
    assert upstream.served("/api/v1/users") - before == quota


def test_no_rolling_window_ever_admits_more_than_the_quota_across_boundaries(
    start_proxy: Any, upstream: Upstream, any_redis: RedisUnderTest
) -> None:
    """On every topology: one server, Sentinel, a 3-master Cluster."""
    quota, window = 10, 2.0
    route = {
        "name": "short",
        "path": "/api/v1/users",
        "limits": [{"name": "short", "quota": quota, "window_seconds": 2}],
    }
    config = base_config(upstream, any_redis.url, limits={**tiers(minute=10_000), "routes": [route]})
    proxy = start_proxy(config, env=any_redis.environment("RATELIMIT_PROXY"))
    admitted: list[tuple[float, float]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 5.5  # spans at least two window lengths and many bucket boundaries

    def hammer() -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                sent = time.monotonic()
                status = session.get(f"{proxy.url}/api/v1/users", timeout=10).status_code
                if status == 200:
                    with lock:
                        admitted.append((sent, time.monotonic()))
                time.sleep(0.01)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A request was decided somewhere in [sent, received]; those wholly inside a window surely count there.
    for start, _ in admitted:
        inside = [1 for sent, received in admitted if start <= sent and received < start + window]
        assert len(inside) <= quota
    assert len(admitted) >= 2 * quota  # the window does roll: not a fixed refusal


@pytest.mark.parametrize(("mode", "outage_status"), [("open", 200), ("closed", 503)])
def test_redis_stopped_under_load_fails_by_mode_and_recovers(
    start_proxy: Any, upstream: Upstream, redis_server: RedisServer, redis_url: str, mode: str, outage_status: int
) -> None:
    config = base_config(upstream, redis_url, limits=tiers(minute=10_000, burst=5))
    config["redis"]["failure_mode"] = mode
    proxy = start_proxy(config)
    session = requests.Session()

    def burst(n: int = 20) -> tuple[Counter[int], float]:
        started = time.monotonic()
        statuses = Counter(session.get(f"{proxy.url}/api/v1/users", timeout=5).status_code for _ in range(n))
        return statuses, (time.monotonic() - started) / n

    assert burst()[0][429] > 0  # limits work before the outage
    time.sleep(1.2)  # the refusals stand (over-limit cache) until the 1 s burst window has room again
    redis_server.stop()
    try:
        statuses, per_request = burst(60)
        assert set(statuses) == {outage_status}
        assert per_request < 0.05  # the breaker keeps each request far from a Redis timeout
    finally:
        redis_server.start()
    wait_until(lambda: burst(10)[0][429] > 0, timeout=10)  # limits enforced again after recovery


def test_scanner_banned_by_one_proxy_is_refused_by_another_sharing_redis(
    start_proxy: Any, upstream: Upstream, redis_url: str
) -> None:
    abuse = {**QUIET_ABUSE, "scanning": {"mode": "enforce", "threshold": 5, "period_seconds": 60}}
    config = base_config(upstream, redis_url, abuse=abuse, clients={"trusted_proxies": ["127.0.0.1/32"]})
    first, second = start_proxy(config, workers=1), start_proxy(config, workers=1)
    scanner = {"X-Forwarded-For": "203.0.113.50"}
    for path in ("/.git/config", "/admin", "/phpmyadmin", "/backup.zip", "/api/v1/status/404"):
        assert requests.get(first.url + path, headers=scanner, timeout=5).status_code == 404
    assert requests.get(first.url + "/api/v1/users", headers=scanner, timeout=5).status_code == 403
    wait_until(lambda: requests.get(second.url + "/api/v1/users", headers=scanner, timeout=5).status_code == 403, 3)
    other = {"X-Forwarded-For": "203.0.113.51"}
    assert requests.get(second.url + "/api/v1/users", headers=other, timeout=5).status_code == 200


def test_bans_and_revoked_keys_reach_every_process_at_once(
    start_proxy: Any, upstream: Upstream, redis_url: str
) -> None:
    # Polls set far beyond the test's patience: only the change announcements can make it in time.
    config = base_config(upstream, redis_url, clients={"trusted_proxies": ["127.0.0.1/32"]}, limits=tiers(10_000))
    config["redis"] |= {"ban_refresh_seconds": 300, "key_cache_seconds": 300}
    proxy = start_proxy(config, workers=2)
    admin = Runtime(build_settings(upstream.url, redis_url), CollectorRegistry())  # as the admin API does
    api_key, _ = admin.keys.create("free", "propagation-test")
    client, keyed = {"X-Forwarded-For": "203.0.113.60"}, {"Authorization": f"Bearer {api_key}"}
    for _ in range(8):  # both workers have the key cached and the client unbanned
        assert requests.get(proxy.url + "/api/v1/users", headers=client, timeout=5).status_code == 200
        assert requests.get(proxy.url + "/api/v1/users", headers=keyed, timeout=5).status_code == 200

    admin.bans.ban("203.0.113.60", "test", "manual", seconds=60)
    admin.keys.update(hash_token(api_key), status="revoked")
    started = time.monotonic()

    def every_answer_is(headers: dict[str, str], status: int) -> bool:
        return all(requests.get(proxy.url + "/api/v1/users", headers=headers, timeout=5).status_code == status
                   for _ in range(8))  # fmt: skip

    wait_until(lambda: every_answer_is(client, 403) and every_answer_is(keyed, 401), timeout=5)
    assert time.monotonic() - started < 5  # against polls of 300 s

    admin.bans.unban("203.0.113.60")
    wait_until(lambda: every_answer_is(client, 200), timeout=5)


def test_client_framing_cannot_smuggle_a_request_past_granian_and_the_proxy(
    start_proxy: Any, serve: Callable[[Script], ScriptedServer], redis_url: str
) -> None:
    # `Content_Length` reaches the WSGI environ as HTTP_CONTENT_LENGTH. Were it forwarded next to a body
    # sent chunked, the upstream would read that body as a second request that no check ever saw.
    upstream = serve(lambda n, head: (ok(b"answer %d" % n), False))
    config = {
        "upstream": {"url": f"http://127.0.0.1:{upstream.port}", "read_timeout_seconds": 5.0},
        "redis": {"url": redis_url, "timeout_ms": 1000},
        "abuse": QUIET_ABUSE,
        "limits": tiers(10_000),
    }
    proxy = start_proxy(config, workers=1)
    smuggled = b"GET /admin/secret HTTP/1.1\r\nHost: x\r\n\r\n"
    attack = (
        b"POST /public HTTP/1.1\r\nHost: x\r\nContent_Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    )
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as conn:
        conn.sendall(attack)
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
    time.sleep(0.5)  # a smuggled request would be on the upstream connection by now
    assert len(upstream.requests) == 1
    head, body = upstream.requests[0].split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /public ") and b"content-length" not in head.lower()
    assert smuggled in body  # carried as the body it was, inside the proxy's own chunked framing


def test_bodies_stream_through_granian_without_buffering(start_proxy: Any, upstream: Upstream, redis_url: str) -> None:
    size = 100 * 1024 * 1024
    config = base_config(upstream, redis_url, clients={"max_body_bytes": 2 * size})
    proxy = start_proxy(config, workers=1)
    baseline = proxy.rss_bytes()
    peak = baseline
    with requests.get(f"{proxy.url}/api/v1/download?size={size}", stream=True, timeout=30) as response:
        received = 0
        for chunk in response.iter_content(1 << 20):
            received += len(chunk)
            peak = max(peak, proxy.rss_bytes())
    assert received == size
    assert peak - baseline < 40 * 1024 * 1024

    def upload() -> Iterator[bytes]:
        nonlocal peak
        for _ in range(100):
            peak = max(peak, proxy.rss_bytes())
            yield b"u" * (1 << 20)

    echoed = requests.post(f"{proxy.url}/api/v1/echo", data=upload(), timeout=60).json()
    assert echoed["body_bytes"] == size
    assert peak - baseline < 40 * 1024 * 1024
    too_big = requests.post(f"{proxy.url}/api/v1/echo", data=(b"u" * (1 << 20) for _ in range(201)), timeout=60)
    assert too_big.status_code == 413


def raw_request(port: int, head: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest


def test_absolute_form_and_host_tricks_reach_only_the_configured_upstream(
    start_proxy: Any, upstream: Upstream, redis_url: str
) -> None:
    proxy = start_proxy(base_config(upstream, redis_url), workers=1)
    request = b"GET http://169.254.169.254/api/v1/echo HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n"
    status, rest = raw_request(proxy.port, request)
    assert status == 200
    body = rest.partition(b"\r\n\r\n")[2]
    assert b'"X-Forwarded-Host":"169.254.169.254"' in body.replace(b" ", b"")
    assert f'"Host":"127.0.0.1:{upstream.port}"'.encode() in body.replace(b" ", b"")
    status, _ = raw_request(proxy.port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 400


def test_admin_metrics_answer_while_redis_is_down_with_the_circuit_open(
    tmp_path: Path, upstream: Upstream, redis_server: RedisServer, redis_url: str
) -> None:
    """Regression: the scrape-time ban count raised while Redis was down, so the admin's /metrics was a
    500 and ``ratelimit_circuit_open`` vanished exactly when its alert was needed. Run as deployed:
    ``vibelux-proxy serve``, workers and the admin process sharing multiprocess metrics."""
    proxy_port, admin_port = free_port(), free_port()
    config = base_config(upstream, redis_url) | {
        "server": {"port": proxy_port, "workers": 1},
        "admin": {"server": {"port": admin_port}},
        "database": {"url": f"sqlite:///{tmp_path / 'proxy.sqlite3'}"},
        "logging": {"level": "ERROR"},
    }
    path = tmp_path / "proxy.yml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "VIBELUX_RATELIMIT_PROXY_CONFIG": str(path), "VIBELUX_RUN_DIR": str(tmp_path)}
    serve = subprocess.Popen([str(ROOT / ".venv/bin/vibelux-proxy"), "serve"], cwd=ROOT, env=env)
    try:
        wait_until(lambda: port_open(proxy_port) and port_open(admin_port), timeout=30)
        metrics = f"http://127.0.0.1:{admin_port}/metrics"
        assert "ratelimit_active_bans 0.0" in requests.get(metrics, timeout=5).text
        redis_server.stop()
        try:
            for _ in range(5):  # fail open; enough failures to open the breaker
                assert requests.get(f"http://127.0.0.1:{proxy_port}/api/v1/users", timeout=5).status_code == 200
            scrape = requests.get(metrics, timeout=5)
            assert scrape.status_code == 200
            assert "\nratelimit_circuit_open 1.0\n" in scrape.text
            assert "\nratelimit_active_bans " not in scrape.text  # unknown while the store is down, not 0
        finally:
            redis_server.start()
    finally:
        serve.terminate()
        serve.wait(15)
