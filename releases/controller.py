"""The release controller: one state machine, advanced by ``Controller.tick()`` while holding the lease.

A release goes, as in Argo Rollouts' canary strategy:

1. ``gating``: the migration check hook (``release.migration_check``), then the new colour's ready path
   and every smoke request, straight to its URL. Nothing moves until they pass; retried for
   ``gate.timeout_seconds``, then ``gate_failed`` with what failed (status, or the connection error),
   never Kamal's bare "target failed to become healthy".
2. ``progressing``: weights set to each step in turn (new colour ``step``%, old the rest). Every
   ``analysis.interval_seconds`` Prometheus is asked about both colours (releases/analysis.py):
   - pass: after ``per_step`` passes, the next step; after the 100% step, ``succeeded``;
   - inconclusive: hold at this step (never promote on silence) and say so in the message; after
     ``max_inconclusive`` in a row, ``paused`` for a person;
   - fail: ``rolled_back`` at once (old colour 100%), the message naming the check and its value.
3. Operator commands, queued in Redis and taken at the next tick: pause, resume, abort (old colour back
   to 100%), promote (new colour to 100% now: Argo's full promotion).

Every transition is an event (``release_events_total{event}``), an audit record (actor
``release-controller``) and part of the state, written to Redis before the next step, so a restarted or
another replica's controller carries on from there.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ratelimit_proxy.upstreams import Pools
from releases.analysis import Measurement, Thresholds, Verdict, analyse
from releases.settings import ReleaseSettings
from releases.store import ACTIVE, ReleaseStore, new_release_id

log = logging.getLogger("releases")
Audit = Callable[[str, str, Any, Any], None]  # action, target, before, after
Query = Callable[[str], "float | None"]
Probe = Callable[[str, str], int]  # method, url -> status (raises OSError-like on no answer)


class ReleaseRefused(Exception):
    """A release that cannot start or a command that does not apply: ``field`` names the input, ``status``
    the HTTP status the admin API answers: 404 for a colour that is not configured, 409 for a release that
    would go nowhere (from a colour to itself) or while another runs."""

    def __init__(self, field: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.field, self.status = field, status


def current_colour(pools: Pools) -> str:
    """The colour with the largest weight now (ties: the first configured)."""
    table = pools.read()
    return max(pools.names, key=lambda n: (table.weights.get(n, 0), -pools.names.index(n)))


def start_release(store: ReleaseStore, pools: Pools, to: str, source: str | None = None) -> dict[str, Any]:
    """Write a new release in ``gating``; the controller holding the lease takes it from there."""
    if to not in pools.names:
        raise ReleaseRefused("to", f"{to!r} is not a configured pool (pools: {', '.join(pools.names)})", 404)
    source = source or current_colour(pools)
    if source not in pools.names:
        raise ReleaseRefused("from", f"{source!r} is not a configured pool (pools: {', '.join(pools.names)})", 404)
    if source == to:
        raise ReleaseRefused("to", f"{to} already serves the traffic (the release would go from {to} to {to})")
    running = store.state()
    if running is not None and running["status"] in ACTIVE:
        raise ReleaseRefused("release", f"release {running['id']} is {running['status']}: abort it first", 409)
    store.clear_commands()
    now = time.time()
    state = {
        "id": new_release_id(),
        "from": source,
        "to": to,
        "status": "gating",
        "step": -1,
        "weight": 0,
        "passes": 0,
        "inconclusive": 0,
        "next_analysis_at": 0.0,
        "started_at": now,
        "message": f"health gate of {to}",
        "last_analysis": None,
        "events": [],
    }
    _record(state, "started", now, f"release from {source} to {to}")
    store.save(state)
    store.event("started", now)
    return state


def queue_command(store: ReleaseStore, name: str) -> dict[str, Any]:
    state = store.state()
    if state is None or state["status"] not in ACTIVE:
        raise ReleaseRefused("release", "no release is running", 409)
    if name == "resume" and state["status"] != "paused":
        raise ReleaseRefused("release", f"release {state['id']} is {state['status']}, not paused", 409)
    store.command(name)
    return state


def _record(state: dict[str, Any], event: str, at: float, message: str) -> None:
    state["events"] = [*state["events"][-49:], {"event": event, "at": at, "message": message}]
    state["message"] = message


def colour_queries(selector: str, colour: str, window: float) -> dict[str, str]:
    """The PromQL of one colour over the window (the proxy's per-colour metrics, ratelimit_proxy/upstreams.py)."""
    match = f'{selector}, colour="{colour}"' if selector else f'colour="{colour}"'
    w = f"{max(1, round(window))}s"
    requests = f"sum(increase(ratelimit_pool_requests_total{{{match}}}[{w}]))"
    return {
        "requests": requests,
        "error_ratio": f"sum(increase(ratelimit_pool_errors_total{{{match}}}[{w}])) / {requests}",
        "p99_seconds": (
            f"histogram_quantile(0.99, sum by (le) (rate(ratelimit_pool_duration_seconds_bucket{{{match}}}[{w}])))"
        ),
    }


@dataclass
class Controller:
    settings: ReleaseSettings
    pools: Pools
    store: ReleaseStore
    query: Query
    probe: Probe
    audit: Audit
    clock: Callable[[], float] = time.time

    def thresholds(self) -> Thresholds:
        a = self.settings.analysis
        return Thresholds(
            a.min_requests,
            a.max_error_ratio,
            a.max_error_ratio_increase,
            a.max_p99_seconds,
            a.max_p99_factor,
            a.p99_margin_seconds,
            a.min_latency_requests,
        )

    def tick(self) -> dict[str, Any] | None:
        """Advance the current release by what is due now; returns its state (None: no release)."""
        state = self.store.state()
        if state is None or state["status"] not in ACTIVE:
            return state
        for command in self.store.take_commands():
            self._command(state, command)
            if state["status"] not in ACTIVE:
                return state
        if state["status"] == "gating":
            self._gate(state)
        elif state["status"] == "progressing" and self.clock() >= state["next_analysis_at"]:
            self._analyse(state)
        return state

    # -- transitions: each one saves the state, counts the event and writes the audit record --

    def _event(self, state: dict[str, Any], event: str, message: str, audit: dict[str, Any] | None = None) -> None:
        now = self.clock()
        _record(state, event, now, message)
        self.store.save(state)
        self.store.event(event, now)
        self.audit(f"release.{event}", state["id"], None, {"message": message, **(audit or {})})
        log.warning("release %s: %s: %s", state["id"], event, message)

    def _weights(self, state: dict[str, Any], weight: int) -> dict[str, int]:
        weights = {state["to"]: weight, state["from"]: 100 - weight}
        self.pools.write(weights)
        state["weight"] = weight
        return weights

    def _command(self, state: dict[str, Any], command: str) -> None:
        if command == "pause" and state["status"] != "paused":
            state["paused_from"] = state["status"]
            state["status"] = "paused"
            self._event(state, "paused", f"paused at {state['weight']}% on {state['to']}")
        elif command == "resume" and state["status"] == "paused":
            state["status"] = state.pop("paused_from", "progressing")
            state["inconclusive"] = 0
            state["next_analysis_at"] = self.clock() + self.settings.analysis.interval_seconds
            self._event(state, "resumed", f"resumed at {state['weight']}% on {state['to']}")
        elif command == "abort":
            weights = self._weights(state, 0)
            state["status"] = "aborted"
            self._event(state, "aborted", f"aborted: {state['from']} back to 100%", {"weights": weights})
        elif command == "promote":
            weights = self._weights(state, 100)
            state["status"] = "succeeded"
            self._event(
                state, "promoted", f"promoted: {state['to']} to 100% without further analysis", {"weights": weights}
            )

    def _gate(self, state: dict[str, Any]) -> None:
        now = self.clock()
        if now < state.get("gate_retry_at", 0.0):
            return
        problem = self.migration_check(state)
        if problem is None:
            problem = self.gate_problem(state["to"])
        if problem is None:
            self._event(state, "gate_passed", f"{state['to']} is ready and its smoke requests passed")
            self._next_step(state)
            return
        gate = self.settings.gate
        if now - state["started_at"] >= gate.timeout_seconds:
            state["status"] = "gate_failed"
            message = f"health gate failed after {gate.timeout_seconds:g} s, no traffic moved: {problem}"
            self._event(state, "gate_failed", message)
            return
        state["gate_retry_at"] = now + gate.retry_seconds
        state["message"] = f"waiting for the health gate of {state['to']}: {problem}"
        self.store.save(state)

    def migration_check(self, state: dict[str, Any]) -> str | None:
        """The hook for the migration safety check (issue 17 item 4, ``vibelux-migrations check``, built
        separately): ``release.migration_check`` is the command; its failure stops the gate. Run once."""
        command = self.settings.migration_check
        if state.get("migration_checked"):
            return None
        if not command:
            state["migration_checked"] = True
            self._event(state, "migration_check", "migration check skipped: release.migration_check is empty")
            return None
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"migration check {' '.join(command)} could not run: {exc}"
        if done.returncode != 0:
            lines = (done.stdout + done.stderr).strip().splitlines()
            return f"migration check failed (exit {done.returncode}): {lines[-1] if lines else ''}"
        state["migration_checked"] = True
        self._event(state, "migration_check", "migration check passed")
        return None

    def gate_problem(self, colour: str) -> str | None:
        """What keeps ``colour`` from taking traffic: its ready path, then each smoke request."""
        base = self.pools.pools[colour].url.rstrip("/")
        checks = [("GET", self.pools.ready_paths[colour], 200)]
        checks += [(s.method, s.path, s.status) for s in self.settings.gate.smoke]
        for method, path, expected in checks:
            try:
                status = self.probe(method, base + path)
            except Exception as exc:  # any failure to get an answer is the gate's finding, not a crash
                return f"{method} {base}{path}: no answer ({type(exc).__name__}: {exc})"
            if status != expected:
                return f"{method} {base}{path}: status {status}, expected {expected}"
        return None

    def _next_step(self, state: dict[str, Any]) -> None:
        state["step"] += 1
        weight = self.settings.steps[state["step"]]
        weights = self._weights(state, weight)
        state["status"] = "progressing"
        state["passes"] = 0
        state["inconclusive"] = 0
        state["next_analysis_at"] = self.clock() + self.settings.analysis.interval_seconds
        self._event(
            state,
            "step",
            f"step {state['step'] + 1}/{len(self.settings.steps)}: {state['to']} at {weight}%",
            {"weights": weights},
        )

    def measure(self, colour: str) -> Measurement:
        a = self.settings.analysis
        values = {name: self.query(q) for name, q in colour_queries(a.selector, colour, a.window_seconds).items()}
        return Measurement(values["requests"], values["error_ratio"], values["p99_seconds"])

    def _analyse(self, state: dict[str, Any]) -> None:
        try:
            new, old = self.measure(state["to"]), self.measure(state["from"])
        except Exception as exc:  # Prometheus down or refusing: no verdict is an inconclusive one
            verdict = Verdict("inconclusive", "prometheus", None, f"no data: Prometheus did not answer ({exc})")
        else:
            verdict = analyse(new, old, self.thresholds(), state["to"], state["from"])
        state["last_analysis"] = {
            "result": verdict.result,
            "check": verdict.check,
            "value": verdict.value,
            "message": verdict.message,
            "checks": [c.__dict__ for c in verdict.checks],
        }
        state["next_analysis_at"] = self.clock() + self.settings.analysis.interval_seconds
        if verdict.result == "fail":
            weights = self._weights(state, 0)
            state["status"] = "rolled_back"
            message = f"rolled back to {state['from']}: {verdict.message}"
            self._event(
                state, "rolled_back", message, {"weights": weights, "check": verdict.check, "value": verdict.value}
            )
        elif verdict.result == "inconclusive":
            state["inconclusive"] += 1
            limit = self.settings.analysis.max_inconclusive
            held = f"holding {state['to']} at {state['weight']}%, not promoting"
            message = f"{held}: {verdict.message} ({state['inconclusive']}/{limit} in a row)"
            self._event(state, "inconclusive", message, {"check": verdict.check})
            if state["inconclusive"] >= limit:
                state["paused_from"] = "progressing"
                state["status"] = "paused"
                self._event(state, "paused", f"paused after {limit} inconclusive analyses in a row: {verdict.message}")
        else:
            state["passes"] += 1
            state["inconclusive"] = 0
            self._event(state, "analysis_passed", f"{state['to']} at {state['weight']}%: {verdict.message}")
            if state["passes"] >= self.settings.analysis.per_step:
                if state["weight"] >= 100:
                    state["status"] = "succeeded"
                    self._event(state, "succeeded", f"{state['to']} serves 100%; {state['from']} can be retired")
                else:
                    self._next_step(state)

    def run(
        self, owner: str, stop: Callable[[], bool], on_state: Callable[[dict[str, Any] | None], None] = lambda s: None
    ) -> None:
        """Tick while holding the lease until ``stop()``; without the lease, wait for it (another controller
        is running the release)."""
        lease = self.store.lease(self.settings.lease_seconds)
        held, failing = False, False
        while not stop():
            try:
                if not held:
                    held = bool(lease.acquire(token=owner))
                else:
                    lease.reacquire()
                if held:
                    on_state(self.tick())
                else:
                    on_state(self.store.state())
                if failing:
                    log.warning("release controller rounds work again")
                failing = False
            except Exception:  # Redis away, a lost lease: drop the lease, try again next round; log once
                if not failing:
                    log.exception("release controller round failed (logged once until a round works)")
                failing, held = True, False
            time.sleep(self.settings.poll_seconds)
        if held:
            try:
                lease.release()
            except Exception:
                log.warning("lease not released (expired already?)")
