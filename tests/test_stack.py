"""`make up` end to end: the stack starts on the default ports, every service answers, Ctrl-C stops all.

Runs scripts/up.sh (what `make up` runs after installing) exactly as a user would, so it needs the default
ports free; it is skipped nowhere: CI machines have them free.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from unittest.mock import ANY

import psutil
import pytest
import requests

from tests.servers import wait_until
from tests.test_index_pages import NOT_OURS, printed_ports

REPO = Path(__file__).resolve().parents[1]
HEALTH_METRICS = "http://127.0.0.1:9102/metrics"

# name in the Procfile -> port that serves /metrics, /healthz and /readyz
ENDPOINTS = {
    "proxy": 9180,
    "tickets": 8081,
    "flags": 8082,
    "reports": 8083,
    "exporter-infra": 9101,
    "exporter-health": 9102,
    "exporter-business": 9103,
    "backup": 9104,
}


def query(expr: str) -> list[dict]:
    """The local Prometheus's answer to an instant query."""
    body = requests.get("http://127.0.0.1:9090/api/v1/query", params={"query": expr}, timeout=5).json()
    result: list[dict] = body["data"]["result"]
    return result


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(360)  # about twenty processes start, with the demo data, on two cores
def test_make_up_serves_every_service_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procfile = REPO / ".run" / "Procfile"
    procfile.unlink(missing_ok=True)
    log = (tmp_path / "up.log").open("wb")
    stack = subprocess.Popen(
        ["scripts/up.sh"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        wait_until(procfile.exists, timeout=30)
        started = {line.split(":")[0] for line in procfile.read_text().splitlines() if line}
        for name in [*ENDPOINTS, "demo", "redis", "prometheus", "alertmanager", "s3", "backup-replicate"]:
            assert name in started, f"make up does not start {name}"
        wait_until(lambda: requests.get("http://127.0.0.1:8000/healthz", timeout=2).ok, timeout=60)
        for name, port in ENDPOINTS.items():
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda b=base: requests.get(f"{b}/healthz", timeout=2).status_code == 200, timeout=120)
            assert requests.get(f"{base}/readyz", timeout=5).status_code == 200, name
            assert "# TYPE" in requests.get(f"{base}/metrics", timeout=5).text, name
        wait_until(lambda: requests.get("http://127.0.0.1:9090/-/ready", timeout=2).ok, timeout=60)
        wait_until(lambda: requests.get("http://127.0.0.1:9093/-/ready", timeout=2).ok, timeout=60)
        # Links point where the stack is reached (config/urls.yml): Prometheus and Alertmanager know their
        # public addresses, and every rule Prometheus loaded links a runbook page the desk serves.
        prometheus_flags = requests.get("http://127.0.0.1:9090/api/v1/status/flags", timeout=5).json()["data"]
        assert prometheus_flags["web.external-url"] == "http://127.0.0.1:9090"
        (alertmanager,) = [
            p for p in psutil.Process(stack.pid).children(recursive=True) if p.name() == "prometheus-alertmanager"
        ]
        assert "--web.external-url=http://127.0.0.1:9093" in alertmanager.cmdline()
        groups = requests.get("http://127.0.0.1:9090/api/v1/rules?type=alert", timeout=5).json()["data"]["groups"]
        pages = {rule["annotations"]["runbook_url"].partition("#")[0] for g in groups for rule in g["rules"]}
        assert len(pages) > 5 and all(page.startswith("http://127.0.0.1:8081/runbooks/") for page in pages)
        for page in pages:
            assert requests.get(page, timeout=5).status_code == 200, page
        # API traffic flows through the proxy to the demo upstream, with the rate-limit headers.
        proxied = requests.get("http://127.0.0.1:8080/api/v1/users", timeout=5)
        assert proxied.status_code == 200
        assert "RateLimit-Policy" in proxied.headers
        assert "RateLimit" in proxied.headers
        # Every URL printed at start that is the stack's own answers at `/` (tests/test_index_pages.py).
        for port in printed_ports() - set(NOT_OURS):
            assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200, port
        # A developer's probe of an attack path bans nobody under make up (loopback in abuse.allow, Procfile).
        assert requests.get("http://127.0.0.1:8080/.env", timeout=5).status_code == 404
        time.sleep(1)  # past the anonymous tier's one-second burst
        assert requests.get("http://127.0.0.1:8080/api/v1/users", timeout=5).status_code == 200
        # The health grid is green offline: AI and payments probe the demo's stand-in status pages.
        for service in ("api", "database", "redis", "ai", "payments"):
            wait_until(
                lambda s=service: f'service_up{{service="{s}"}} 1.0' in requests.get(HEALTH_METRICS, timeout=2).text,
                timeout=60,
            )
        # The backup jobs ran at start: the desk's and flags' databases are replicated and drilled.
        for store in ("tickets", "flags"):
            wait_until(
                lambda s=store: (
                    f'restore_drill_last_success_timestamp_seconds{{store="{s}"}}'
                    in requests.get("http://127.0.0.1:9104/metrics", timeout=5).text
                ),
                timeout=120,
            )
        # A fresh start is healthy: once every target is scraped and the rules have run on it, nothing is
        # pending or firing but the Watchdog (host alerts left out: they measure this shared machine).
        wait_until(lambda: query("min(up)") == [{"metric": {}, "value": [ANY, "1"]}], timeout=90)
        time.sleep(35)  # two rule evaluations after every target answered
        alerts = query('ALERTS{alertname!~"Watchdog|Host.+"}')
        assert [(a["metric"]["alertname"], a["metric"].get("job"), a["metric"].get("service")) for a in alerts] == []
        # Redis answers nobody without the run's password (it held every API key and ban).
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as redis_socket:
            redis_socket.sendall(b"SET rl:{keys}:minted x\r\n")
            assert redis_socket.recv(64).startswith(b"-NOAUTH")
        children = psutil.Process(stack.pid).children(recursive=True)
        assert len(children) >= len(ENDPOINTS)
        log.flush()
        assert "pub/sub" not in (tmp_path / "up.log").read_text()  # the change listeners never reconnected
    finally:
        os.killpg(stack.pid, signal.SIGINT)  # what one Ctrl-C in the terminal sends
        stack.wait(60)
        log.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(child.is_running() and child.status() != "zombie" for child in children):
        time.sleep(0.2)
    left = [child.pid for child in children if child.is_running() and child.status() != "zombie"]
    assert left == [], f"processes left after Ctrl-C: {left}\n{(tmp_path / 'up.log').read_text()[-3000:]}"
