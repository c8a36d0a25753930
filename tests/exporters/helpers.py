"""Helpers for the exporters' tests: a scriptable HTTP dependency, exporter processes, exposition reading."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import wait_until

# How late a thread may wake up on a busy 2-core machine shared with other test runs: timing assertions
# check "gave up at its timeout" as timeout + this, never as exact wall times.
SLACK_SECONDS = 1.0


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


class ExporterProcess:
    """An exporter started as its console script would be (`python -m exporters.<name>.cli`)."""

    def __init__(self, name: str, config: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.port = port
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"exporters.{name}.cli", "--config", str(config), "serve"],
            # faulthandler: a SIGABRT prints every thread's stack, for an exporter that will not stop
            env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_until(self._answers, timeout=60)  # 15 s was too short for the infra exporter on a loaded machine
        except BaseException:  # nobody holds this object yet to stop it: a slow start left exporters running
            self.process.kill()
            self.process.wait()
            raise

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            assert self.process.stderr is not None
            raise AssertionError(f"exporter exited {self.process.returncode}: {self.process.stderr.read().decode()}")
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

    def stop(self, strict: bool = True) -> None:
        """SIGTERM, and the exporter must exit within 10 s. One that does not is aborted so that it prints
        its threads' stacks; `strict` fails on it (the exporters' own tests), otherwise the stacks go to
        stderr (a shared stack's teardown, which tests no exporter's shutdown; warnings are errors here)."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.stderr is not None
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(10)
            stacks = self.process.stderr.read().decode(errors="replace")[-6000:]
            self.process.stderr.close()
            message = f"exporter on port {self.port} did not exit within 10 s of SIGTERM:\n{stacks}"
            if strict:
                raise AssertionError(message) from None
            print(message, file=sys.stderr)
            return
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


def run_cli(exporter: str, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of an exporter's command line, run in this process (fast)."""
    main = importlib.import_module(f"exporters.{exporter}.cli").main
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


def promtool_findings(text: str) -> list[str]:
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


# node_exporter's own /proc/meminfo names (MemTotal, SwapFree, ...) are camelCase; promtool flags them on
# node_exporter too. Compatibility is the point of these names, so that one finding is the only one allowed.
def is_meminfo_camelcase_finding(line: str) -> bool:
    return line.startswith("node_memory_") and "should be written in 'snake_case' not 'camelCase'" in line
