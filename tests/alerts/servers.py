"""Real Prometheus and Alertmanager processes for the alerting tests, on free loopback ports in temp dirs."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    workdir: Path

    def log(self) -> str:
        return (self.workdir / "server.log").read_text(errors="replace")


@contextmanager
def run_server(
    command: Sequence[str], ready_url: str, workdir: Path, timeout: float = 20.0
) -> Iterator[Server]:
    """Start `command` in `workdir`, wait until `ready_url` answers 200, stop it on exit."""
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    server = Server(url=ready_url.rsplit("/-/", 1)[0], process=process, workdir=workdir)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {process.returncode}:\n{server.log()}")
            try:
                if requests.get(ready_url, timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} not ready after {timeout}s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def alertmanager_config(webhook_url: str | None = None, timings: dict[str, str] | None = None) -> dict:
    """config/alertmanager.yml as tests run it: the real tree, optionally a test webhook and short timers."""
    config = yaml.safe_load((REPO / "config" / "alertmanager.yml").read_text())
    if timings:
        config["route"].update(timings)
        for route in config["route"]["routes"]:
            for key in timings:
                route.pop(key, None)
    if webhook_url:
        for receiver in config["receivers"]:
            for webhook in receiver.get("webhook_configs", []):
                webhook["url"] = webhook_url
    return config


@contextmanager
def run_alertmanager(workdir: Path, config: dict, secrets: dict[str, str] | None = None) -> Iterator[Server]:
    """Run prometheus-alertmanager the way scripts/alertmanager.sh does: config and secrets/ side by side."""
    (workdir / "secrets").mkdir(parents=True, exist_ok=True)
    for name, value in (secrets or {}).items():
        (workdir / "secrets" / name).write_text(value)
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        shutil.which("prometheus-alertmanager") or "prometheus-alertmanager",
        "--config.file=alertmanager.yml",
        "--storage.path=data",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    with run_server(command, f"http://127.0.0.1:{port}/-/ready", workdir) as server:
        yield server


@contextmanager
def run_prometheus(workdir: Path, config: dict) -> Iterator[Server]:
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        shutil.which("prometheus") or "prometheus",
        "--config.file=prometheus.yml",
        "--storage.tsdb.path=data",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
    ]
    with run_server(command, f"http://127.0.0.1:{port}/-/ready", workdir, timeout=30) as server:
        yield server
