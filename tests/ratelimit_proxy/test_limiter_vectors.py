"""One behaviour suite, driven by the JSON vectors, against both limiter backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ratelimit_proxy.limiter import Limit, Unspent
from ratelimit_proxy.limiter_storage import LimiterBackend, MemoryLimiter, RedisLimiter
from tests.conftest import TOPOLOGIES, redis_under_test

VECTORS = sorted((Path(__file__).parents[1] / "vectors" / "ratelimit_proxy").glob("*.json"))


@pytest.fixture(params=["memory", *[pytest.param(t, marks=pytest.mark.integration) for t in TOPOLOGIES]])
def backend(request: pytest.FixtureRequest) -> LimiterBackend:
    """Memory, and Redis in every topology: one server, Sentinel, a 3-master Cluster."""
    if request.param == "memory":
        return MemoryLimiter()
    return RedisLimiter(redis_under_test(request, request.param).client())


@pytest.mark.parametrize("vector", [pytest.param(p, id=p.stem) for p in VECTORS])
def test_backend_follows_vector(backend: LimiterBackend, vector: Path) -> None:
    spec = json.loads(vector.read_text())
    limits = [Limit(**lim) for lim in spec["limits"]]
    for number, step in enumerate(spec["steps"], 1):
        expect = step["expect"]
        unspent = None
        if "give_back" in step:
            charged_at = step["give_back"]["charged_at_ms"]
            unspent = Unspent(step["give_back"]["units"], tuple(lim.bucket(charged_at) for lim in limits))
        for _ in range(step.get("repeat", 1)):
            decision = backend.hit(
                step.get("client", "key:test"), limits, step.get("cost", 1), step["at_ms"], step.get("want", 1), unspent
            )
            assert decision.allowed is expect["allowed"], f"step {number}"
        where = f"step {number} of {vector.stem}"
        windows = {w.limit.name: w for w in decision.windows}
        if "granted" in expect:
            assert decision.granted == expect["granted"], where
        if "violated" in expect:
            assert decision.violated == expect["violated"], where
        for name, remaining in expect.get("remaining", {}).items():
            assert windows[name].remaining == remaining, where
        for name, reset in expect.get("reset", {}).items():
            assert windows[name].reset_seconds == reset, where
        if "retry_after" in expect:
            assert decision.retry_after_seconds == expect["retry_after"], where


def test_vectors_are_found() -> None:
    assert len(VECTORS) >= 5
