"""The controller's state machine on a real Redis: inconclusive holds, operator commands, refusals, the
lease, the gate and the migration-check hook. Prometheus and the colours' HTTP answers are scripted here
(plain functions of the query and the URL); tests/releases/test_scenarios.py runs the real ones."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ratelimit_proxy.settings import PoolSettings, RedisSettings, UpstreamSettings
from ratelimit_proxy.upstreams import Pools
from releases.controller import Controller, ReleaseRefused, queue_command, start_release
from releases.settings import AnalysisSettings, GateSettings, ReleaseSettings
from releases.store import ReleaseStore
from service_kit.redis_connect import connect

pytestmark = pytest.mark.integration
COLOURS = UpstreamSettings(
    pools=[PoolSettings("blue", "http://blue.test", 100), PoolSettings("green", "http://green.test", 0)]
)
SETTINGS = ReleaseSettings(
    steps=[10, 100],
    gate=GateSettings(timeout_seconds=10, retry_seconds=1, smoke=[]),
    analysis=AnalysisSettings(interval_seconds=5, window_seconds=5, max_inconclusive=3, min_requests=10),
)
HEALTHY = {"requests": 100.0, "error_ratio": 0.0, "p99_seconds": 0.01}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Prometheus:
    """Answers the controller's three queries per colour from ``values[colour][name]`` (None: empty result)."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, float | None]] = {"blue": dict(HEALTHY), "green": dict(HEALTHY)}

    def __call__(self, expr: str) -> float | None:
        colour = re.search(r'colour="(\w+)"', expr)
        assert colour is not None, expr
        name = "p99_seconds" if "histogram_quantile" in expr else "error_ratio" if " / " in expr else "requests"
        return self.values[colour.group(1)][name]


@pytest.fixture
def parts(redis_url: str) -> dict[str, Any]:
    redis = connect(RedisSettings(url=redis_url), timeout_seconds=1.0, decode_responses=True)
    return {"pools": Pools(COLOURS, redis, CollectorRegistry()), "store": ReleaseStore(redis), "audit": []}


@pytest.fixture
def controller(parts: dict[str, Any]) -> Callable[..., Controller]:
    def make(settings: ReleaseSettings = SETTINGS, ready: Callable[[str, str], int] = lambda m, u: 200) -> Controller:
        def audit(action: str, target: str, before: Any, after: Any) -> None:
            parts["audit"].append(action)

        prometheus = parts.setdefault("prometheus", Prometheus())
        clock = parts.setdefault("clock", Clock())
        return Controller(settings, parts["pools"], parts["store"], prometheus, ready, audit, clock)

    return make


def events(parts: dict[str, Any]) -> list[str]:
    return [e["event"] for e in parts["store"].state()["events"]]


def test_controller_no_data_holds_the_step_says_so_and_pauses_after_max_inconclusive(
    parts: dict[str, Any], controller: Callable[..., Controller]
) -> None:
    ctl = controller()
    start_release(parts["store"], parts["pools"], "green")
    ctl.tick()  # gate passes, step 1: green at 10%
    parts["prometheus"].values["green"] = {"requests": None, "error_ratio": None, "p99_seconds": None}
    for _ in range(2):
        parts["clock"].now += 5
        state = ctl.tick()
        assert state is not None and state["status"] == "progressing" and state["weight"] == 10
        assert "not promoting: no data" in state["message"]
    parts["clock"].now += 5
    state = ctl.tick()
    assert state is not None and state["status"] == "paused" and state["weight"] == 10
    assert parts["pools"].read().weights == {"blue": 90, "green": 10}
    assert events(parts)[-2:] == ["inconclusive", "paused"]


def test_controller_pause_resume_and_promote_as_queued(
    parts: dict[str, Any], controller: Callable[..., Controller]
) -> None:
    ctl = controller()
    start_release(parts["store"], parts["pools"], "green")
    ctl.tick()
    queue_command(parts["store"], "pause")
    parts["clock"].now += 50
    assert ctl.tick()["status"] == "paused"  # type: ignore[index]
    assert ctl.tick()["weight"] == 10  # type: ignore[index]  # paused: no analysis, no step
    queue_command(parts["store"], "resume")
    ctl.tick()
    queue_command(parts["store"], "promote")
    state = ctl.tick()
    assert state is not None and state["status"] == "succeeded"
    assert parts["pools"].read().weights == {"blue": 0, "green": 100}
    assert events(parts)[-3:] == ["paused", "resumed", "promoted"]
    assert {"release.paused", "release.resumed", "release.promoted", "release.step"} <= set(parts["audit"])


def test_controller_abort_puts_the_old_colour_back(
    parts: dict[str, Any], controller: Callable[..., Controller]
) -> None:
    ctl = controller()
    start_release(parts["store"], parts["pools"], "green")
    ctl.tick()
    queue_command(parts["store"], "abort")
    state = ctl.tick()
    assert state is not None and state["status"] == "aborted"
    assert parts["pools"].read().weights == {"blue": 100, "green": 0}
    with pytest.raises(ReleaseRefused, match="no release is running"):
        queue_command(parts["store"], "pause")


def test_controller_healthy_release_steps_then_succeeds(
    parts: dict[str, Any], controller: Callable[..., Controller]
) -> None:
    ctl = controller()
    start_release(parts["store"], parts["pools"], "green")
    ctl.tick()
    parts["clock"].now += 5
    assert ctl.tick()["weight"] == 100  # type: ignore[index]
    parts["prometheus"].values["blue"] = {"requests": None, "error_ratio": None, "p99_seconds": None}  # at 100%
    parts["clock"].now += 5
    state = ctl.tick()
    assert state is not None and state["status"] == "succeeded"
    assert "thresholds only" in state["events"][-2]["message"]


@pytest.mark.parametrize(
    ("to", "source", "field", "status"),
    [("purple", None, "to", 404), ("blue", None, "to", 409), ("green", "purple", "from", 404)],
)
def test_start_release_refuses_bad_colours_naming_the_field(
    parts: dict[str, Any], to: str, source: str | None, field: str, status: int
) -> None:
    with pytest.raises(ReleaseRefused) as caught:
        start_release(parts["store"], parts["pools"], to, source)
    assert caught.value.field == field and caught.value.status == status


def test_start_release_refuses_a_second_release_while_one_runs(parts: dict[str, Any]) -> None:
    start_release(parts["store"], parts["pools"], "green")
    with pytest.raises(ReleaseRefused) as caught:
        start_release(parts["store"], parts["pools"], "green")
    assert caught.value.status == 409


def test_controller_lease_admits_one_controller_at_a_time(parts: dict[str, Any]) -> None:
    first, second = parts["store"].lease(5), parts["store"].lease(5)
    assert first.acquire(token="one")
    assert not second.acquire(token="two")
    first.release()
    assert second.acquire(token="two")


def test_controller_gate_waits_for_readiness_then_fails_naming_what_answered(
    parts: dict[str, Any], controller: Callable[..., Controller]
) -> None:
    ctl = controller(ready=lambda method, url: 503)
    start_release(parts["store"], parts["pools"], "green")
    state = ctl.tick()
    assert state is not None and state["status"] == "gating"
    assert "GET http://green.test/readyz: status 503, expected 200" in state["message"]
    parts["clock"].now = state["started_at"] + 11
    state = ctl.tick()
    assert state is not None and state["status"] == "gate_failed"
    assert parts["pools"].read().weights == {"blue": 100, "green": 0}


def test_controller_migration_check_hook_failing_stops_the_gate(
    parts: dict[str, Any], controller: Callable[..., Controller]
) -> None:
    ctl = controller(replace(SETTINGS, migration_check=["sh", "-c", "echo drops column users.email; exit 1"]))
    start_release(parts["store"], parts["pools"], "green")
    state = ctl.tick()
    assert state is not None and state["status"] == "gating"
    assert "migration check failed (exit 1): drops column users.email" in state["message"]
