"""Real processes for release scenarios, shared by tests/releases/ and bench/releases.py: two demo upstream
colours, the proxy (``vibelux-proxy serve``: granian proxy and admin API), a Prometheus scraping the
proxy's admin /metrics, the release controller as its own process, and a steady keep-alive load."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.servers import ManagedProcess, PrometheusServer, free_port, port_open

ROOT = Path(__file__).parents[2]
BIG = {"burst_per_second": 100_000, "per_minute": 10_000_000, "per_hour": 100_000_000, "ai_per_day": 100_000_000}
KEYS = [f"release-load-{i}" for i in range(200)]  # sticky by key: 200 callers spread over the colours
QUIET_ABUSE = {rule: {"mode": "off"} for rule in ("limit_breaches", "scanning", "attack_paths", "many_keys")}


class DemoColour(ManagedProcess):
    """``demo.upstream`` as one colour; change ``fail_percent``/``never_ready`` and restart on the same port."""

    name = "demo-colour"

    def __init__(self, colour: str, fail_percent: int = 0, never_ready: bool = False) -> None:
        super().__init__()
        self.colour, self.fail_percent, self.never_ready = colour, fail_percent, never_ready

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "demo.upstream", "--port", str(self.port), "--colour", self.colour]
        command += ["--fail-percent", str(self.fail_percent)] + (["--never-ready"] if self.never_ready else [])
        return command

    def served(self) -> dict[str, int]:
        answer: dict[str, int] = requests.get(f"{self.url}/_demo/served", timeout=5).json()
        return answer


def proxy_config(
    blue: DemoColour, green: DemoColour, redis_url: str, prometheus_url: str, **release: Any
) -> dict[str, Any]:
    """The proxy's config for a release rig; ``release`` overrides keys of its release section."""
    analysis = {
        "prometheus_url": prometheus_url,
        "selector": 'job="ratelimit-proxy"',
        "interval_seconds": 3.0,
        "window_seconds": 3.0,
        "per_step": 1,
        "min_requests": 10,
        "max_error_ratio": 0.05,
        "max_inconclusive": 20,
        **release.pop("analysis", {}),
    }
    return {
        "log_proxied_requests": False,
        "logging": {"level": "WARNING"},
        "upstream": {
            "connect_timeout_seconds": 1.0,
            "read_timeout_seconds": 5.0,
            "pools": [
                {"name": "blue", "url": blue.url, "weight": 100},
                {"name": "green", "url": green.url, "weight": 0},
            ],
        },
        "redis": {"url": redis_url, "timeout_ms": 1000, "breaker_reset_seconds": 0.5},
        "limits": {"tiers": dict.fromkeys(("free", "startup", "professional", "enterprise"), BIG)},
        "abuse": QUIET_ABUSE,
        "cache": {"routes": [{"name": "api", "path": "/api/v1/*"}]},  # as shipped: the cache keeps colours apart
        "static_keys": [
            {"sha256": hashlib.sha256(k.encode()).hexdigest(), "tier": "enterprise", "owner": k} for k in KEYS
        ],
        "release": {
            "steps": [25, 100],
            "poll_seconds": 0.2,
            "lease_seconds": 2.0,
            "gate": {"timeout_seconds": 3.0, "retry_seconds": 0.5, "smoke": [{"path": "/api/v1/users"}]},
            "analysis": analysis,
            **release,
        },
    }


class ProxyStack(ManagedProcess):
    """``python -m ratelimit_proxy.cli serve`` (one proxy worker and the admin API) with a written config."""

    name = "release-proxy"

    def __init__(self, workers: int = 1) -> None:
        super().__init__()
        self.admin_port = free_port()
        self.workers = workers
        self.config: dict[str, Any] = {}  # set before start(): it may name servers built after this one
        self.config_path = self.workdir / "ratelimit_proxy.yml"
        self.token = "release-test-admin-token"

    def start(self) -> None:
        config = {
            **self.config,
            "server": {"host": "127.0.0.1", "port": self.port, "workers": self.workers, "blocking_threads": 32},
            "admin": {"server": {"host": "127.0.0.1", "port": self.admin_port, "workers": 1}},
            "database": {"url": f"sqlite:///{self.workdir / 'proxy.sqlite3'}"},
        }
        self.config_path.write_text(yaml.safe_dump(config))
        super().start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def environment(self) -> dict[str, str]:
        return {
            "VIBELUX_RATELIMIT_PROXY_CONFIG": str(self.config_path),
            "VIBELUX_RUN_DIR": str(self.workdir / ".run"),
            "RATELIMIT_PROXY_ADMIN__TOKEN": self.token,
        }

    def command(self) -> list[str]:
        return [sys.executable, "-m", "ratelimit_proxy.cli", "serve"]

    def ready(self) -> bool:
        if not (port_open(self.port) and port_open(self.admin_port)):
            return False
        return requests.get(f"{self.admin_url}/metrics", timeout=2).status_code == 200

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return requests.request(method, f"{self.admin_url}/api/v1{path}", headers=headers, timeout=10, **kwargs)

    def release_cli(self, *args: str, wait: bool = True) -> subprocess.Popen[str]:
        """``vibelux-release ARGS`` against this proxy's config, as its own process."""
        env = {**os.environ, **self.environment()}
        process = subprocess.Popen(
            [sys.executable, "-m", "releases.cli", *args],
            env=env,
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if wait:
            process.wait(120)
        return process


def prometheus_for(stack: ProxyStack, scrape_seconds: float = 1.0) -> PrometheusServer:
    interval = f"{scrape_seconds * 1000:g}ms"  # "0.5s" is not a Prometheus duration
    return PrometheusServer(
        {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {"job_name": "ratelimit-proxy", "static_configs": [{"targets": [f"127.0.0.1:{stack.admin_port}"]}]}
            ],
        }
    )


@dataclass
class LoadReport:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    colours: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # exceptions (resets, timeouts) by type
    proxy_errors: int = 0  # 5xx the proxy made itself (no colour header): an upstream it could not reach
    colour_after: dict[str, float] = field(default_factory=dict)  # last time each colour answered
    colour_first: dict[str, float] = field(default_factory=dict)
    first_error: dict[str, float] = field(default_factory=dict)  # first 5xx each colour answered
    latencies: list[float] = field(default_factory=list)  # seconds, every answered request

    @property
    def failed(self) -> int:
        """Requests that got no answer, or an answer that was not 2xx."""
        return sum(self.failures.values()) + sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


class Load:
    """``rps`` requests per second over keep-alive sessions, half GET /api/v1/users and half POST
    /api/v1/echo, each from one of KEYS in turn; stops when ``stop()`` is called."""

    def __init__(self, url: str, rps: float, threads: int = 8) -> None:
        self.url, self.rps, self.threads = url, rps, threads
        self.report = LoadReport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._number = 0
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> Load:
        self._started = time.monotonic()
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> LoadReport:
        self._stop.set()
        for worker in self._workers:
            worker.join(15)
        return self.report

    def _ticket(self) -> tuple[int, float]:
        with self._lock:
            number = self._number
            self._number += 1
        return number, self._started + number / self.rps

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            number, due = self._ticket()
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            key = KEYS[number % len(KEYS)]
            headers = {"Authorization": f"Bearer {key}"}
            sent = time.perf_counter()
            try:
                if number % 2:
                    answer = session.post(f"{self.url}/api/v1/echo", json={"n": number}, headers=headers, timeout=10)
                else:
                    answer = session.get(f"{self.url}/api/v1/users", headers=headers, timeout=10)
            except requests.RequestException as exc:
                with self._lock:
                    self.report.sent += 1
                    self.report.failures[type(exc).__name__] += 1
                continue
            colour = answer.headers.get("X-Demo-Colour", "")
            now, elapsed = time.time(), time.perf_counter() - sent
            with self._lock:
                self.report.latencies.append(elapsed)
                if colour and answer.status_code >= 500:
                    self.report.first_error.setdefault(colour, now)
                self.report.sent += 1
                self.report.statuses[answer.status_code] += 1
                if colour:
                    self.report.colours[colour] += 1
                    self.report.colour_after[colour] = now
                    self.report.colour_first.setdefault(colour, now)
                elif answer.status_code >= 500:
                    self.report.proxy_errors += 1


def weights(stack: ProxyStack) -> dict[str, int]:
    answer = stack.admin("GET", "/upstreams")
    answer.raise_for_status()
    return {p["name"]: p["weight"] for p in answer.json()["pools"]}


def release_state(stack: ProxyStack) -> dict[str, Any] | None:
    answer = stack.admin("GET", "/releases/current")
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    state: dict[str, Any] = answer.json()
    return state
