"""schemathesis, run as a user runs it: the ``st`` CLI against a real server and the service's own
``/openapi.json``, with every check, every phase (examples, coverage, fuzzing, stateful) and a fixed seed.

Each service's fuzz test calls :func:`fuzz` and asserts ``report.failures == []``; the counts of
operations and cases are printed so a run records them (pytest ``-s`` or the captured output).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from werkzeug.serving import make_server

SEED = 20261201
MAX_EXAMPLES = 20  # per operation, as in the report that found the desk's 500s


@dataclass(frozen=True)
class FuzzReport:
    operations: int
    cases: int
    failures: list[str]
    output: str


def fuzz(
    base_url: str,
    workdir: Path,
    *,
    headers: dict[str, str] | None = None,
    max_examples: int = MAX_EXAMPLES,
    document: str = "/openapi.json",
    exclude_checks: tuple[str, ...] = (),
    timeout: float = 600,
) -> FuzzReport:
    """Fuzz the API at ``base_url`` with its own document; returns what schemathesis found."""
    report_dir = workdir / "schemathesis"
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{base_url}{document}",
        "--url",
        base_url,
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",  # no .schemathesis/ cache left in the checkout; the seed makes runs repeatable
        "--workers",
        "1",  # one worker: with the seed, the same cases in the same order on every run
        "--request-timeout",
        "10",
        "--no-color",
        "--report",
        "ndjson",
        "--report-dir",
        str(report_dir),
    ]
    for check in exclude_checks:
        command += ["--exclude-checks", check]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=workdir, check=False)
    output = done.stdout + done.stderr
    operations, cases, failures = _read_events(report_dir)
    if done.returncode not in (0, 1):  # 1 means failures found; anything else is a broken run
        raise RuntimeError(f"schemathesis exited {done.returncode}:\n{output[-4000:]}")
    if done.returncode == 1 and not failures:
        failures = [output[-4000:]]
    print(f"schemathesis {base_url}: {operations} operations, {cases} cases, {len(failures)} failures")
    return FuzzReport(operations, cases, failures, output)


def _read_events(report_dir: Path) -> tuple[int, int, list[str]]:
    """Operations, cases and failure descriptions from schemathesis' NDJSON event stream."""
    operations: set[str] = set()
    cases = 0
    failures: list[str] = []
    for path in report_dir.glob("*.ndjson"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            (kind, body), *_ = event.items()
            if kind != "ScenarioFinished" or not isinstance(body, dict):
                continue
            recorder = body.get("recorder") or {}
            label = recorder.get("label") or body.get("label") or ""
            if label:
                operations.add(label.split(" -> ")[0])
            cases += len(recorder.get("cases") or {})
            for check_list in (recorder.get("checks") or {}).values():
                for check in check_list:
                    if str(check.get("status")).lower() == "failure":
                        failure = check.get("failure_info") or {}
                        failures.append(f"{label}: {check.get('name')}: {json.dumps(failure)[:600]}")
    return len(operations), cases, failures


@contextmanager
def served(app: Flask) -> Iterator[str]:
    """``app`` on a real HTTP server (werkzeug's, threaded) on a free loopback port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
