"""Pure helpers: client address resolution, circuit breaker, policy plans and config errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ratelimit_proxy.breaker import CircuitBreaker
from ratelimit_proxy.clientip import client_ip, parse_networks
from ratelimit_proxy.policy import Policy
from ratelimit_proxy.settings import LimitSettings, RouteLimitSettings, RouteSettings
from tests.ratelimit_proxy.conftest import ROOT

LB = parse_networks(["10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "hops", "expected"),
    [
        ("198.51.100.4", "6.6.6.6", (), 0, "198.51.100.4"),  # nobody trusted: the header is ignored
        ("10.0.0.2", "203.0.113.5", LB, 0, "203.0.113.5"),
        ("10.0.0.2", "6.6.6.6, 203.0.113.5, 10.0.0.9", LB, 0, "203.0.113.5"),  # skip trusted hops only
        ("198.51.100.4", "203.0.113.5", LB, 0, "198.51.100.4"),  # untrusted peer cannot pick an address
        ("10.0.0.2", "not-an-ip", LB, 0, "10.0.0.2"),
        ("10.0.0.2", "6.6.6.6, 203.0.113.5", (), 1, "203.0.113.5"),  # one proxy in front: last entry
        ("10.0.0.2", "6.6.6.6, 203.0.113.5", (), 2, "6.6.6.6"),
        ("10.0.0.2", "203.0.113.5", (), 2, "10.0.0.2"),  # fewer entries than hops: the peer
    ],
)
def test_client_ip_resolution(peer: str, forwarded: str, trusted: tuple, hops: int, expected: str) -> None:
    assert client_ip(peer, forwarded, trusted, hops) == expected


def test_breaker_opens_after_failures_and_lets_one_trial_through_after_reset() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, reset_seconds=5, clock=lambda: now[0])
    assert breaker.allow() and not breaker.failure()
    assert breaker.failure() and breaker.is_open
    assert not breaker.allow()
    now[0] = 5.0
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one at a time
    assert breaker.success() and not breaker.is_open
    assert not breaker.success()  # already closed: nothing to report


def test_policy_adds_ai_quota_and_route_overrides_only_where_they_match() -> None:
    route = RouteSettings(
        name="export", path="/api/v1/exports*", methods=["POST"], cost=3,
        limits=[RouteLimitSettings(name="exports", quota=10, window_seconds=3600)],
    )  # fmt: skip
    policy = Policy(LimitSettings(routes=[route]))
    names = lambda plan: [lim.name for lim in plan.limits]  # noqa: E731
    assert names(policy.plan("free", "GET", "/api/v1/users")) == ["burst", "minute", "hour"]
    assert names(policy.plan("free", "POST", "/api/ai/complete")) == ["burst", "minute", "hour", "ai-day"]
    export = policy.plan("startup", "POST", "/api/v1/exports/7")
    assert (names(export), export.cost) == (["burst", "minute", "hour", "route-exports"], 3)
    assert policy.plan("startup", "GET", "/api/v1/exports/7").cost == 1


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RATELIMIT_PROXY_LIMITS__ANONYMOUS_TIER", "gold", "limits.anonymous_tier: expected one of free"),
        ("RATELIMIT_PROXY_REDIS__FAILURE_MODE", "maybe", "redis.failure_mode: expected one of open, closed"),
        ("RATELIMIT_PROXY_UPSTREAM__URL", "ftp://x", "upstream.url: expected http(s)://host[:port]"),
        ("RATELIMIT_PROXY_CLIENTS__TRUSTED_PROXIES", "[nonsense]", "clients.trusted_proxies: expected IP networks"),
    ],
)
def test_bad_config_stops_with_one_line_naming_key_and_file(variable: str, value: str, message: str) -> None:
    env = {"PATH": "/usr/bin:/bin", variable: value}
    done = subprocess.run(
        [sys.executable, "-m", "ratelimit_proxy.cli", "check-config"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
