"""Leases of a client's budget (ratelimit_proxy/leases.py): never more than a quota in any rolling window,
on any number of workers, and nothing lost: what a lease did not spend goes back to the client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from ratelimit_proxy.app import create_app
from ratelimit_proxy.leases import LeaseCache
from ratelimit_proxy.limiter import Decision, Limit
from ratelimit_proxy.limiter_storage import MemoryLimiter
from ratelimit_proxy.settings import LimitSettings, ProxySettings, TierSettings
from tests.ratelimit_proxy.conftest import TEST_TIERS


def through_lease(
    leases: LeaseCache, store: MemoryLimiter, key: tuple[str, tuple[Limit, ...], int], at_ms: int
) -> Decision:
    """What Runtime.decide does around the store (without its breaker and metrics)."""
    bucket, limits, cost = key
    leased = leases.spend(key)
    if leased is not None:
        return leased
    ask = leases.ask(key)
    return leases.answered(
        key, ask.leasing, store.hit(bucket, limits, cost, at_ms, ask.want, ask.unspent), at_ms / 1000
    )


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.one_of(
                st.integers(min_value=0, max_value=40), st.integers(min_value=0, max_value=1500)
            ),  # bursts, pauses
            st.integers(min_value=0, max_value=2),
            st.booleans(),
        ),
        max_size=300,
    ),
    quota=st.integers(min_value=1, max_value=60),
)
def test_no_rolling_window_admits_more_than_its_quota_through_leases(
    steps: list[tuple[int, int, bool]], quota: int
) -> None:
    """Three workers, each with its leases, on one store: the admitted requests of every rolling window of
    every limit stay within its quota, whatever the arrival times and sweeps."""
    limits = (Limit("second", quota, 1, 10), Limit("window", quota * 3, 4, 4))
    at_ms = [1_000_000]
    workers = [LeaseCache(32, clock=lambda: at_ms[0] / 1000) for _ in range(3)]
    store = MemoryLimiter()
    key = ("key:test", limits, 1)
    admitted: list[int] = []
    for gap, worker, sweep in steps:
        at_ms[0] += gap
        if sweep:
            for returned_key, unspent in workers[worker].sweep():
                store.hit(returned_key[0], limits, 0, at_ms[0], unspent=unspent)
        if through_lease(workers[worker], store, key, at_ms[0]).allowed:
            admitted.append(at_ms[0])
    for limit in limits:
        assert most_in_a_window(admitted, limit) <= limit.quota, limit.name


def most_in_a_window(admitted: list[int], limit: Limit) -> int:
    """The most requests admitted in any rolling window of the limit (the times in ms)."""
    return max((sum(1 for t in admitted if end - limit.window_ms < t <= end) for end in admitted), default=0)


def test_a_lease_ends_with_the_bucket_it_was_charged_to() -> None:
    """Spent later, its requests would sit where the store no longer counts them: a lease of 7 left at the
    start of a second, spent at its end, and a full quota admitted just after, would make 47 in one second."""
    second = Limit("second", 40, 1, 10)
    at_ms = [1_000_000]
    leases, store = LeaseCache(32, clock=lambda: at_ms[0] / 1000), MemoryLimiter()
    key = ("ip:test", (second,), 1)
    admitted = []
    for moment in [*range(1, 9), *[950] * 7, *range(1100, 1160)]:
        at_ms[0] = 1_000_000 + moment
        if through_lease(leases, store, key, at_ms[0]).allowed:
            admitted.append(at_ms[0])
    assert most_in_a_window(admitted, second) == 40


class CountedLimiter(MemoryLimiter):
    """The in-memory store, counting the calls a proxy would send to Redis."""

    calls = 0

    def hit(self, *args: Any, **kwargs: Any) -> Decision:
        self.calls += 1
        return super().hit(*args, **kwargs)


def used(store: MemoryLimiter, key: tuple[str, tuple[Limit, ...], int], at_ms: int) -> int:
    window = store.peek(key[0], key[1], at_ms).windows[0]
    return window.limit.quota - window.remaining


def test_a_busy_client_leases_more_as_it_spends_and_a_quiet_one_never_leases() -> None:
    limits = (Limit("second", 10_000, 1, 10),)
    at_ms = [1_000_000]
    leases, store = LeaseCache(32, clock=lambda: at_ms[0] / 1000), CountedLimiter()
    busy, quiet = ("ip:busy", limits, 1), ("ip:quiet", limits, 1)
    for _ in range(80):  # 80 requests within one 100 ms bucket
        at_ms[0] += 1
        assert through_lease(leases, store, busy, at_ms[0]).allowed
    assert store.calls == 7  # leases of 1, 2, 4, 8, 16, 32 and 32 requests, not 80 calls
    assert used(store, busy, at_ms[0]) == 95
    for _ in range(5):  # one request every 1.1 s: the last one's bucket no longer counts
        at_ms[0] += 1100
        assert through_lease(leases, store, quiet, at_ms[0]).allowed
        assert used(store, quiet, at_ms[0]) == 1  # itself only: nothing charged ahead


def test_what_an_ended_lease_did_not_spend_goes_back() -> None:
    """With the client's next call, or by the sweep when it sends none; the headers count it as room."""
    limits = (Limit("minute", 1_000, 60, 10),)
    at_ms = [1_000_000]
    leases, store = LeaseCache(32, clock=lambda: at_ms[0] / 1000), MemoryLimiter()
    key = ("ip:test", limits, 1)
    for _ in range(12):  # leases of 1, 2, 4 and 8: 15 charged, 12 spent
        at_ms[0] += 1
        decision = through_lease(leases, store, key, at_ms[0])
    assert used(store, key, at_ms[0]) == 15
    assert decision.windows[0].remaining == 1_000 - 12
    at_ms[0] += 1_000  # the lease has ended: its 3 go back, and the next lease is what the last one spent
    decision = through_lease(leases, store, key, at_ms[0])
    assert used(store, key, at_ms[0]) == 12 + 5
    assert decision.windows[0].remaining == 1_000 - 13
    at_ms[0] += 1_000
    for returned_key, unspent in leases.sweep():
        store.hit(returned_key[0], limits, 0, at_ms[0], unspent=unspent)
    assert used(store, key, at_ms[0]) == 13
    assert leases.sweep() == []  # handed out once


@pytest.mark.integration
@pytest.mark.parametrize("over_limit_cache", [0, 100_000], ids=["over-limit-cache-off", "over-limit-cache-on"])
def test_two_proxies_on_one_redis_admit_a_busy_client_its_quota_and_no_more(
    settings_for: Callable[..., ProxySettings], over_limit_cache: int
) -> None:
    """Sixteen threads over two proxies (each its own leases) flood one anonymous client with a quota of 300
    a minute: never more than 300 admitted, most of them from leases, and, with the over-limit cache off,
    every one of the 300 in the end (what leases held back went back). The over-limit cache may refuse for
    a while after a refusal that a later give-back proved early: then at most that much fewer."""
    tier = TierSettings(burst_per_second=100_000, per_minute=300, per_hour=100_000, ai_per_day=100)
    limits = LimitSettings(tiers={**TEST_TIERS, "free": tier}, over_limit_cache_entries=over_limit_cache)
    apps = [create_app(settings_for(limits=limits)) for _ in range(2)]
    deadline = time.monotonic() + 3.0

    def flood(app: Flask) -> tuple[int, int]:
        client, allowed, refused = app.test_client(), 0, 0
        while time.monotonic() < deadline:
            status = client.get("/api/v1/users").status_code
            assert status in (200, 429), status
            allowed, refused = allowed + (status == 200), refused + (status == 429)
        return allowed, refused

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(flood, [apps[i % 2] for i in range(16)]))
        admitted = sum(allowed for allowed, _ in results)
        leased = sum(
            app.extensions["service_kit"].metrics.registry.get_sample_value("ratelimit_leased_total") for app in apps
        )
        assert sum(refused for _, refused in results) > 0  # the quota was reached
        assert admitted <= 300
        assert leased > 100  # most admitted requests made no Redis call
        if not over_limit_cache:
            assert admitted == 300
        else:
            assert admitted >= 300 - 2 * 32
    finally:
        for app in apps:
            app.extensions["ratelimit_proxy"].close()


class SlowStore:
    """A store that answers in 30 ms, as a loaded Redis might (the in-memory one underneath), counting calls."""

    def __init__(self) -> None:
        self.memory, self.calls = MemoryLimiter(), 0

    def hit(self, *args: Any, **kwargs: Any) -> Decision:
        self.calls += 1
        time.sleep(0.03)
        return self.memory.hit(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.memory, name)


def test_requests_that_find_the_lease_spent_wait_for_the_next_instead_of_asking_the_store(
    settings_for: Callable[..., ProxySettings],
) -> None:
    """Sixteen requests at once while the client's lease is spent: one asks, the others wait for its answer,
    and those it did not serve ask for a lease twice as large in turn. Without that, 16 store calls."""
    store = SlowStore()
    app = create_app(settings_for(), limiter=store)
    runtime = app.extensions["ratelimit_proxy"]
    limits = (Limit("ten-seconds", 100_000, 10, 10),)  # 1 s buckets: the leases last their full second
    try:
        for _ in range(3):  # leases of 1 and 2, both spent
            assert runtime.decide("ip:test", limits, 1).allowed
        assert store.calls == 2
        start = threading.Barrier(16)

        def one() -> bool:
            start.wait()
            decision = runtime.decide("ip:test", limits, 1)
            return decision is not None and decision.allowed

        with ThreadPoolExecutor(16) as pool:
            assert all(pool.map(lambda _: one(), range(16)))
        assert store.calls - 2 <= 4  # leases of 4, 8 and 16: three calls, one spare for a slow thread
    finally:
        runtime.close()


def test_a_lease_that_comes_while_the_last_one_has_requests_left_takes_them() -> None:
    """A request that raced past the lease (another was answered in between) asks for a new one: the
    requests left in the old one are spent from the new one, not left charged and unspendable."""
    limits = (Limit("minute", 1_000, 60, 10),)
    at_ms = [1_000_000]
    leases, store = LeaseCache(32, clock=lambda: at_ms[0] / 1000), MemoryLimiter()
    key = ("ip:test", limits, 1)
    for _ in range(2):  # leases of 1, then 2: one request left
        at_ms[0] += 1
        through_lease(leases, store, key, at_ms[0])
    ask = leases.ask(key)  # as a request that found no lease a moment ago would
    leases.answered(key, ask.leasing, store.hit("ip:test", limits, 1, at_ms[0], ask.want, ask.unspent), at_ms[0] / 1000)
    admitted = 3
    while leases.spend(key) is not None:
        admitted += 1
    assert used(store, key, at_ms[0]) == admitted
