"""Fixtures for the exporters: a real redis-server, a scriptable HTTP dependency, scrape helpers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: object, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll `condition()` until it is truthy; fail the test with its name after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"condition {getattr(condition, '__name__', condition)} not met within {timeout}s")


class RedisServer:
    """A real redis-server on a free port that a test can stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        wait_until(lambda: self._answers(client))
        client.close()

    @staticmethod
    def _answers(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(5)
            self._process = None


@pytest.fixture(scope="session")
def exporter_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    assert shutil.which("redis-server"), "redis-server is a system dependency (scripts/system-deps.sh)"
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


class DependencyHandler(BaseHTTPRequestHandler):
    """Routes a fake dependency answers: healthy and degraded bodies, errors, a slow and a trickling one."""

    def do_GET(self) -> None:
        if self.path == "/trickle":  # answers one byte at a time forever: defeats a per-read client timeout
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
            return
        if self.path == "/slow":
            time.sleep(0.3)
        status, body = {
            "/ok": (200, {"status": "ok"}),
            "/slow": (200, {"status": "ok"}),
            "/degraded": (200, {"status": "degraded"}),
            "/nested": (200, {"status": {"indicator": "none"}}),
            "/broken-body": (200, {"status": "on fire"}),
            "/error": (503, {"status": "down"}),
        }.get(self.path, (404, {}))
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests assert on behaviour, not on access logs."""


@pytest.fixture(scope="session")
def dependency_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), DependencyHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) and never answers: a hung dependency."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


class ExporterProcess:
    """An exporter started as its console script would be (`python -m exporters.<name>.cli`)."""

    def __init__(self, name: str, config: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.port = port
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"exporters.{name}.cli", "--config", str(config)],
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_until(self._answers, timeout=15)

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            assert self.process.stderr is not None
            raise AssertionError(
                f"exporter exited {self.process.returncode}: {self.process.stderr.read().decode()}"
            )
        try:
            return requests.get(self.url, timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def scrape(self) -> tuple[str, float]:
        """(body, seconds the scrape took)."""
        started = time.perf_counter()
        response = requests.get(self.url, timeout=5)
        response.raise_for_status()
        return response.text, time.perf_counter() - started

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)
        assert self.process.stderr is not None
        self.process.stderr.close()


def sample(body: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of one sample in a text exposition, None when absent."""
    for family in text_string_to_metric_families(body):
        for sample_ in family.samples:
            if sample_.name == name and sample_.labels == (labels or {}):
                return float(sample_.value)
    return None


def write_config(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path
