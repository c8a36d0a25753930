"""A Redis primary SIGKILLed under bounded load, on Sentinel and on Cluster (tests/ratelimit_proxy/failover.py
runs it; bench/redis_failover.py reports the same figures). Each test starts its own topology: nodes die.

Goals (issue 11): no 5xx; the limiter fails open only until a replica is promoted, and limits resume by
themselves within detection time + 2 s; ``/readyz`` says degraded while it lasts; on a cluster, clients of
the other shards stay limited throughout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ratelimit_proxy import failover
from tests.ratelimit_proxy.conftest import Upstream

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RESUME_GOAL_SECONDS = 2.0  # after the promotion


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_killed_primary_fails_open_until_promotion_then_limits_resume(
    topology: str, tmp_path: Path, upstream: Upstream
) -> None:
    result = failover.run(topology, tmp_path, upstream.url)
    assert result.statuses.keys() <= {200, 429}, result.statuses  # fail open: never a 5xx
    assert result.undecided("victim") > 0  # the kill did reach the victim's requests
    assert result.resumed_seconds <= result.detection_seconds + RESUME_GOAL_SECONDS, (
        result.detection_seconds,
        result.resumed_seconds,
    )
    assert result.returned_as == "slave"  # the killed primary ran again, as a replica ...
    assert result.undecided("victim", after=result.resumed_seconds) == 0  # ... and requests stay decided
    # Limits hold again: the victim is back to its quota of 5 a second, not the 40 it sends.
    end = max(s.at for s in result.samples)
    assert result.admitted_per_second("victim", result.resumed_seconds + 0.5, end) <= 7
    states = [status for at, status in result.readiness if 0.5 < at < result.resumed_seconds - 0.5]
    assert "degraded" in states, result.readiness
    assert result.readiness[-1][1] == "ok", result.readiness[-5:]
    if topology == "cluster":
        assert result.undecided("other", after=-10.0) == 0  # one breaker per shard: the others stay limited
