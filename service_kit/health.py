"""Liveness (`/healthz`: the process answers) and readiness (`/readyz`: its dependencies answer)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue

from service_kit.scrub import DEFAULT_SCRUBBER

Check = Callable[[], object]


class Degraded:
    """What a check returns when the service still serves, with less: ``/readyz`` stays 200 (taking every
    replica out of a load balancer would turn a degraded service into an outage) and says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Health:
    def __init__(self, service: str, timeout_seconds: float = 2.0) -> None:
        self.service = service
        self.timeout_seconds = timeout_seconds
        self.checks: dict[str, Check] = {}
        # Checks run in threads so one hung dependency cannot hold the probe past its timeout.
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")

    def add_check(self, name: str, check: Check) -> None:
        """``check()`` raises (or returns False) when the dependency is not usable."""
        self.checks[name] = check

    def run_checks(self) -> tuple[bool, dict[str, Any]]:
        started = {name: (time.perf_counter(), self._executor.submit(check)) for name, check in self.checks.items()}
        results: dict[str, Any] = {}
        for name, (start, future) in started.items():
            degraded = None
            try:
                outcome = future.result(timeout=max(0.0, self.timeout_seconds - (time.perf_counter() - start)))
                ok, error = outcome is not False, None if outcome is not False else "check returned false"
                degraded = outcome.reason if isinstance(outcome, Degraded) else None
            except FutureTimeout:
                ok, error = False, f"timed out after {self.timeout_seconds:g}s"
            except Exception as exc:
                ok, error = False, DEFAULT_SCRUBBER.scrub_text(f"{type(exc).__name__}: {str(exc)[:200]}")
            results[name] = {
                "status": "degraded" if degraded else "ok" if ok else "fail",
                "duration_seconds": round(time.perf_counter() - start, 4),
            }
            if error or degraded:
                results[name]["error"] = error or f"degraded: {degraded}"
        return all(r["status"] != "fail" for r in results.values()), results

    def init_app(self, app: Flask) -> None:
        blueprint = Blueprint("service_kit_health", __name__)

        @blueprint.get("/healthz")
        def healthz() -> ResponseReturnValue:
            return jsonify({"status": "ok", "service": self.service})

        @blueprint.get("/readyz")
        def readyz() -> ResponseReturnValue:
            ready, checks = self.run_checks()
            degraded = any(c["status"] == "degraded" for c in checks.values())
            status = "fail" if not ready else "degraded" if degraded else "ok"
            body = {"status": status, "service": self.service, "checks": checks}
            return jsonify(body), 200 if ready else 503

        app.register_blueprint(blueprint)
