"""Where the limiter's counters live: Redis (shared by every replica) or process memory (embedded default).

Both take the same call and return the same Decision; one behaviour suite, driven by the JSON vectors
in tests/vectors/ratelimit_proxy/, runs against both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from importlib import resources
from typing import Protocol

import redis

from ratelimit_proxy.limiter import Decision, Limit, decide, live, status


class StorageUnavailable(Exception):
    """The backend could not answer; the caller decides between fail-open and fail-closed."""


def counter_key(bucket: str, limit: Limit) -> str:
    """``rl:{bucket}:name``: the braces make every key of one client hash to one Cluster slot."""
    return f"rl:{{{bucket}}}:{limit.name}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class LimiterBackend(Protocol):
    def hit(self, bucket: str, limits: Sequence[Limit], cost: int = 1, at_ms: int | None = None) -> Decision:
        """Check every limit of one request and charge all of them, or none."""
        ...

    def peek(self, bucket: str, limits: Sequence[Limit], at_ms: int | None = None) -> Decision:
        """Current usage without charging (admin view)."""
        ...


class MemoryLimiter:
    """One process's counters under a lock. Stale buckets are dropped on every touch and idle keys
    swept now and then, so memory stays bounded by the clients seen in the longest window."""

    SWEEP_EVERY = 10_000

    def __init__(self) -> None:
        self._counts: dict[str, tuple[dict[int, int], Limit]] = {}
        self._lock = threading.Lock()
        self._hits = 0

    def hit(self, bucket: str, limits: Sequence[Limit], cost: int = 1, at_ms: int | None = None) -> Decision:
        now = now_ms() if at_ms is None else at_ms
        keys = [counter_key(bucket, lim) for lim in limits]
        with self._lock:
            decision, updated = decide(limits, self._load(keys), now, cost)
            if decision.allowed:
                for key, lim, counts in zip(keys, limits, updated, strict=True):
                    self._counts[key] = (counts, lim)
            self._hits += 1
            if self._hits % self.SWEEP_EVERY == 0:
                self._sweep(now)
        return decision

    def peek(self, bucket: str, limits: Sequence[Limit], at_ms: int | None = None) -> Decision:
        now = now_ms() if at_ms is None else at_ms
        with self._lock:
            counts = self._load([counter_key(bucket, lim) for lim in limits])
        return decide(limits, counts, now, 0)[0]

    def _load(self, keys: Sequence[str]) -> list[dict[int, int]]:
        return [dict(self._counts[k][0]) if k in self._counts else {} for k in keys]

    def _sweep(self, now: int) -> None:
        idle = [k for k, (counts, lim) in self._counts.items() if not live(lim, counts, now)]
        for key in idle:
            del self._counts[key]


class RedisLimiter:
    """Counters in Redis, decided by ratelimit.lua: one EVALSHA per request (redis-py loads the
    script again on NOSCRIPT, e.g. after a Redis restart)."""

    def __init__(self, client: redis.Redis, use_redis_clock: bool = True) -> None:
        self._client = client
        source = resources.files("ratelimit_proxy").joinpath("ratelimit.lua").read_text()
        self._script = client.register_script(source)
        self._use_redis_clock = use_redis_clock

    def hit(self, bucket: str, limits: Sequence[Limit], cost: int = 1, at_ms: int | None = None) -> Decision:
        # The Redis clock by default: every replica then agrees on the bucket boundaries.
        clock = at_ms if at_ms is not None else (-1 if self._use_redis_clock else now_ms())
        args: list[int] = [clock, cost]
        for lim in limits:
            args += [lim.quota, lim.window_ms, lim.buckets]
        try:
            reply = self._script(keys=[counter_key(bucket, lim) for lim in limits], args=args)
        except redis.RedisError as exc:
            raise StorageUnavailable(str(exc)) from exc
        allowed, now = bool(reply[0]), int(reply[1])
        windows = []
        for lim, per_limit in zip(limits, reply[2:], strict=True):
            fits, flat = per_limit[0], per_limit[1:]
            counts = {int(flat[j]): int(flat[j + 1]) for j in range(0, len(flat), 2)}
            windows.append(status(lim, counts, now, cost, violated=not fits))
        return Decision(allowed, tuple(windows), now)

    def peek(self, bucket: str, limits: Sequence[Limit], at_ms: int | None = None) -> Decision:
        now = now_ms() if at_ms is None else at_ms
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for lim in limits:
                    pipe.hgetall(counter_key(bucket, lim))
                rows = pipe.execute()
        except redis.RedisError as exc:
            raise StorageUnavailable(str(exc)) from exc
        counts = [{int(k): int(v) for k, v in row.items()} for row in rows]
        return decide(limits, counts, now, 0)[0]
