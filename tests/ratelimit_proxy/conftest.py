"""Fixtures of the proxy's tests: a real demo upstream process, settings pointing at it and at the
shared real Redis, the ``app``/``client`` pair, an admin app with an admin token."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from ratelimit_proxy.admin import create_admin_app
from ratelimit_proxy.app import create_app
from ratelimit_proxy.forward import Upstream as UpstreamClient
from ratelimit_proxy.settings import (
    AbuseSettings,
    ClientSettings,
    LimitSettings,
    ProxySettings,
    RedisSettings,
    TierSettings,
    UpstreamSettings,
)
from service_kit.auth import create_token
from service_kit.db import make_engine, upgrade
from service_kit.settings import DatabaseSettings, LoggingSettings
from tests.servers import free_port, port_open, wait_until

ROOT = Path(__file__).parents[2]


class Upstream:
    """The demo upstream API as its own process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "demo.upstream", "--port", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.port))

    def served(self, path: str) -> int:
        return int(requests.get(f"{self.url}/_demo/served", timeout=5).json().get(path, 0))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


TEST_TIERS = {
    "free": TierSettings(burst_per_second=5, per_minute=20, per_hour=100, ai_per_day=3),
    "startup": TierSettings(burst_per_second=10, per_minute=50, per_hour=500, ai_per_day=10),
    "professional": TierSettings(burst_per_second=20, per_minute=100, per_hour=1000, ai_per_day=20),
    "enterprise": TierSettings(burst_per_second=1000, per_minute=5000, per_hour=10000, ai_per_day=100),
}


def build_settings(upstream_url: str, redis_url: str = "", **sections: Any) -> ProxySettings:
    """Settings for tests: quiet logs, tiers small enough to hit, abuse rules off unless given."""
    off = dataclasses.replace(AbuseSettings().scanning, mode="off")
    abuse = AbuseSettings(limit_breaches=off, scanning=off, attack_paths=off, many_keys=off)
    base = ProxySettings(
        logging=LoggingSettings(level="WARNING"),
        upstream=UpstreamSettings(url=upstream_url, connect_timeout_seconds=1.0, read_timeout_seconds=1.0),
        # 1 s, not the production 50 ms: on a loaded CI machine a slow answer would fail open and spoil exact
        # counts; the outage tests stop Redis, which refuses at once.
        redis=RedisSettings(url=redis_url, timeout_ms=1000, breaker_reset_seconds=0.5, ban_refresh_seconds=0.2),
        limits=LimitSettings(tiers=TEST_TIERS),
        clients=ClientSettings(max_body_bytes=1024 * 1024, max_header_bytes=4096),
        abuse=abuse,
        log_proxied_requests=False,
    )
    return dataclasses.replace(base, **sections)


@pytest.fixture
def settings_for(upstream: Upstream, redis_url: str) -> Callable[..., ProxySettings]:
    def make(**sections: Any) -> ProxySettings:
        return build_settings(upstream.url, redis_url, **sections)

    return make


@pytest.fixture
def app(settings_for: Callable[..., ProxySettings]) -> Iterator[Flask]:
    app = create_app(settings_for())
    yield app
    app.extensions["ratelimit_proxy"].close()  # its change listener


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def database(tmp_path: Path) -> DatabaseSettings:
    return DatabaseSettings(url=f"sqlite:///{tmp_path / 'proxy.sqlite3'}")


def admin_token(url: str, role: str = "admin") -> str:
    engine = make_engine(url)
    upgrade(engine)
    with Session(engine) as session:
        plain, _ = create_token(session, "ops", role)
        session.commit()
    return plain


@pytest.fixture
def pair(settings_for: Callable[..., ProxySettings], database: DatabaseSettings) -> tuple[Flask, FlaskClient, dict]:
    """A proxy app and an admin app sharing one runtime, plus admin headers."""
    settings = settings_for(database=database)
    proxy = create_app(settings)
    admin = create_admin_app(settings, runtime=proxy.extensions["ratelimit_proxy"])
    headers = {"Authorization": f"Bearer {admin_token(database.url)}"}
    return proxy, admin.test_client(), headers


# One scripted answer: (raw response bytes, close the connection afterwards).
Script = Callable[[int, bytes], tuple[bytes, bool]]


class ScriptedServer:
    """Accepts connections and answers each request head (and Content-Length body) with the script's
    bytes; records the requests and how many connections were opened."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()  # a client that did not trust us
                return
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                if b"transfer-encoding: chunked" in head.lower():
                    while b"0\r\n\r\n" not in buffer:
                        buffer += conn.recv(65536)
                    length = buffer.index(b"0\r\n\r\n") + 5
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                self.requests.append(head + b"\r\n\r\n" + body)
                answer, close = self.script(len(self.requests), head)
                conn.sendall(answer)
                if close:
                    return

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def upstream(self, **options: Any) -> UpstreamClient:
        return UpstreamClient(UpstreamSettings(url=self.url, read_timeout_seconds=2.0, **options))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        servers.append(ScriptedServer(script, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)
