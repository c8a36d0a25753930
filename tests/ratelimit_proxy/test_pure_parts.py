"""Pure helpers: client address resolution, circuit breaker, policy plans and config errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratelimit_proxy.abuse import BanList
from ratelimit_proxy.api_keys import KeyDirectory
from ratelimit_proxy.breaker import CircuitBreaker
from ratelimit_proxy.clientip import client_ip, parse_networks
from ratelimit_proxy.key_ban_storage import KeyRecord, MemoryStore
from ratelimit_proxy.limiter import Limit
from ratelimit_proxy.limiter_storage import MemoryLimiter
from ratelimit_proxy.policy import Policy, PolicyError
from ratelimit_proxy.refusals import OverLimitCache
from ratelimit_proxy.settings import AbuseSettings, LimitSettings, RouteLimitSettings, RouteSettings
from service_kit.requests import hash_token
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
        ("RATELIMIT_PROXY_UPSTREAM__CA_FILE", "/nonexistent/ca.pem", "upstream.ca_file: expected empty, or an"),
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


def test_route_limits_sharing_a_name_must_share_quota_and_window() -> None:
    def route(name: str, path: str, window: int) -> RouteSettings:
        return RouteSettings(name=name, path=path, limits=[RouteLimitSettings("uploads", 10, window)])

    Policy(LimitSettings(routes=[route("a", "/a/*", 60), route("b", "/b/*", 60)]))  # one shared quota: fine
    with pytest.raises(PolicyError) as refused:
        # one counter key for two windows: a short TTL would cut the long window short
        Policy(LimitSettings(routes=[route("a", "/a/*", 60), route("b", "/b/*", 3600)]))
    assert refused.value.key == "limits.routes[1].limits[0]"


def test_key_lookup_that_races_an_announced_change_is_not_cached() -> None:
    class RacingStore(MemoryStore):
        """The change announcement lands while the lookup reads the store."""

        def __init__(self) -> None:
            super().__init__()
            self.reads = 0
            self.directory: KeyDirectory | None = None

        def get_key(self, key_id: str) -> KeyRecord | None:
            self.reads += 1
            record = super().get_key(key_id)
            if self.reads == 1 and self.directory is not None:
                self.put_key(KeyRecord(key_id, "free", "owner", "revoked"))
                self.directory.forget(key_id)
            return record

    store = RacingStore()
    directory = KeyDirectory(store, [], cache_seconds=300)
    store.directory = directory
    digest = hash_token("vbx_race")
    store.put_key(KeyRecord(digest, "free", "owner", "active"))
    assert directory.lookup("vbx_race").status == "active"  # the value read before the change
    assert directory.lookup("vbx_race").status == "revoked"  # not served stale from the cache
    assert store.reads == 2


@settings(max_examples=300, deadline=None)
@given(
    offenses=st.integers(min_value=1, max_value=10**9),
    ban_seconds=st.integers(min_value=1, max_value=86400),
    factor=st.floats(min_value=1.0, max_value=1000.0, allow_nan=False),
    cap=st.integers(min_value=1, max_value=365 * 86400),
)
def test_auto_ban_duration_never_overflows_and_stays_within_the_cap(
    offenses: int, ban_seconds: int, factor: float, cap: int
) -> None:
    """Regression: ``ban_factor ** (offenses - 1)`` was computed before the cap, so after ~700 failed
    auto-bans of one address it overflowed and every request from it became a 500."""
    store = MemoryStore()
    store._offenses["203.0.113.9"] = offenses - 1  # the ban below counts the next offense
    abuse = AbuseSettings(ban_seconds=ban_seconds, ban_factor=factor, ban_max_seconds=cap)
    ban = BanList(store, abuse, clock=lambda: 1000.0).ban("203.0.113.9", "test", "auto")
    assert ban is not None
    seconds = ban.expires_at - ban.created_at
    expected = min(cap, ban_seconds * factor ** (offenses - 1)) if offenses < 50 else None
    assert 1 <= seconds <= max(cap, 1)
    if expected is not None:
        assert abs(seconds - int(expected)) <= 1  # float rounding at a whole second
    elif factor >= 2.0:
        assert seconds == cap  # far past the cap: exactly the cap


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=700), st.integers(min_value=1, max_value=3)), max_size=80
    ),
    quota=st.integers(min_value=1, max_value=6),
)
def test_over_limit_cache_refuses_exactly_what_the_limiter_would(steps: list[tuple[int, int]], quota: int) -> None:
    """A client refused from process memory would have been refused by the store too, and is asked again
    from the first moment it could be admitted: decisions through the cache equal the limiter's alone."""
    limits = (Limit("second", quota, 1, 10), Limit("window", quota * 3, 4, 4))
    at_ms = [1_000_000]
    cache = OverLimitCache(100, clock=lambda: at_ms[0] / 1000)
    through_cache, alone = MemoryLimiter(), MemoryLimiter()
    for gap, cost in steps:
        at_ms[0] += gap
        key = ("key:test", limits, cost)
        decision = cache.check(key)
        if decision is None:
            decision = through_cache.hit("key:test", limits, cost, at_ms[0])
            if not decision.allowed:
                cache.remember(key, decision, at_ms[0] / 1000)
        reference = alone.hit("key:test", limits, cost, at_ms[0])
        assert decision.allowed == reference.allowed, at_ms[0]
        if not decision.allowed:
            # equal, or shorter when the client's cheaper requests were admitted since: never later
            assert decision.retry_after_seconds <= reference.retry_after_seconds
            if len({cost for _, cost in steps}) == 1:
                assert decision.retry_after_seconds == reference.retry_after_seconds


def test_a_cached_refusal_ends_at_the_first_admissible_millisecond_despite_float_seconds() -> None:
    """Regression (found by the property above): the end kept in float seconds, 1001.1 + 0.2, came out
    above 1001.3, so the cache refused at the very millisecond the limiter admits again."""
    limits = (Limit("second", 1, 1, 10),)
    at_ms = [1_001_100]
    cache = OverLimitCache(100, clock=lambda: at_ms[0] / 1000)
    limiter = MemoryLimiter()
    key = ("key:test", limits, 1)
    assert limiter.hit("key:test", limits, 1, 1_000_200).allowed
    refused = limiter.hit("key:test", limits, 1, at_ms[0])
    assert not refused.allowed and refused.refused_for_ms == 200
    cache.remember(key, refused, at_ms[0] / 1000)
    at_ms[0] = 1_001_299
    assert cache.check(key) is not None
    at_ms[0] = 1_001_300
    assert cache.check(key) is None and limiter.hit("key:test", limits, 1, at_ms[0]).allowed
