"""Sliding-window counter: the pure core every backend shares.

Each limit splits its window into ``buckets`` sub-windows and keeps one count per sub-window. The
requests of the rolling window ``(now - W, now]`` all sit in the current bucket and the ``buckets``
before it, so their sum, with the oldest, partly expired bucket counted in full, is an upper bound of
the rolling count. Admitting only while that sum plus the cost stays within the quota guarantees that
no rolling window of length W ever holds more than the quota.

Why not the textbook two-counter version (previous window weighted by its overlap)? It assumes the
previous window's requests were spread evenly; a client that spends its quota at the end of a window
gets close to twice the quota inside one rolling window (vector ``weighted_counter_pitfall``). The
bucketed counter costs ``buckets + 1`` small integers per limit and gives back at most one bucket of
time (W / buckets) when a client runs flat out.

Everything is integer milliseconds, so ratelimit.lua and this module decide bit for bit alike.

A call may ask for a *lease*: up to ``want`` requests charged at once, which the caller admits one by one
in process memory while the current bucket of every limit lasts (ratelimit_proxy/leases.py). Requests
spent from a lease inside the bucket they were charged to are counted exactly as if each had been
charged on arrival, so no rolling window ever admits more than its quota. A lease takes at most a
``LEASE_SHARE``-th of the room the tightest limit has left, so the last requests before a quota are still
decided one by one; what a lease did not spend is given back (``give_back``) to the bucket it was
charged to, while that bucket still counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

Buckets = Mapping[int, int]
"""Counts of one limit by bucket index (``now_ms // bucket_ms``); only the live ones matter."""


@dataclass(frozen=True)
class Limit:
    """One quota over one rolling window, e.g. ``Limit("minute", 100, 60)``."""

    name: str
    quota: int
    window_seconds: int
    buckets: int = 10

    def __post_init__(self) -> None:
        if self.quota < 1 or self.window_seconds < 1 or self.buckets < 1:
            raise ValueError(f"limit {self.name!r}: quota, window and buckets must be positive")
        if self.window_ms % self.buckets:
            raise ValueError(f"limit {self.name!r}: {self.buckets} buckets do not divide {self.window_ms} ms")

    @property
    def window_ms(self) -> int:
        return self.window_seconds * 1000

    @property
    def bucket_ms(self) -> int:
        return self.window_ms // self.buckets

    def bucket(self, now_ms: int) -> int:
        return now_ms // self.bucket_ms

    def oldest_live(self, now_ms: int) -> int:
        """Index of the oldest bucket that still overlaps the rolling window ending now."""
        return self.bucket(now_ms) - self.buckets

    def expires_at(self, bucket: int) -> int:
        """Moment a bucket stops counting: when it no longer overlaps any rolling window."""
        return (bucket + self.buckets + 1) * self.bucket_ms


LEASE_SHARE = 4


@dataclass(frozen=True)
class Unspent:
    """What an ended lease did not spend: ``units`` to give back to the bucket each limit charged
    (``charged``, one index per limit, in the plan's order)."""

    units: int
    charged: tuple[int, ...]


@dataclass(frozen=True)
class WindowStatus:
    """What a response tells the client about one limit after the decision."""

    limit: Limit
    remaining: int
    reset_seconds: int
    violated: bool
    reset_ms: int = 0  # reset_seconds before rounding up: how long a violated limit refuses for sure


@dataclass(frozen=True)
class Decision:
    allowed: bool
    windows: tuple[WindowStatus, ...]
    now_ms: int
    cached: bool = False  # answered from process memory (the over-limit cache, a lease), without the store
    granted: int = 1  # requests charged by an admitting decision (more than one: a lease); 0 when refused

    @property
    def refused_for_ms(self) -> int:
        """How long a refusal surely stands: until every violated limit has room for the request again.
        Other clients' hits (on any replica) can only make the wait longer, never shorter."""
        return max((w.reset_ms for w in self.windows if w.violated), default=0)

    def aged(self, elapsed_ms: int) -> Decision:
        """The same refusal ``elapsed_ms`` later: resets count down, the verdict stands (cached)."""
        return Decision(self.allowed, self._counted_down(elapsed_ms, 0), self.now_ms + elapsed_ms, cached=True)

    def spent(self, elapsed_ms: int, unspent_units: int, cached: bool = True) -> Decision:
        """A request admitted from this decision's lease ``elapsed_ms`` later, ``unspent_units`` still left in
        the lease: charged but not spent, they are room the client still has."""
        windows = self._counted_down(elapsed_ms, unspent_units)
        return Decision(True, windows, self.now_ms + elapsed_ms, cached=cached, granted=0)

    def _counted_down(self, elapsed_ms: int, extra_remaining: int) -> tuple[WindowStatus, ...]:
        return tuple(
            replace(
                w,
                remaining=w.remaining + extra_remaining,
                reset_ms=max(0, w.reset_ms - elapsed_ms),
                reset_seconds=max(0, math.ceil((w.reset_ms - elapsed_ms) / 1000)),
            )
            for w in self.windows
        )

    @property
    def retry_after_seconds(self) -> int:
        """Whole seconds until every violated limit admits the request again: at least 1, never
        earlier than any violated window's reset."""
        return max([1] + [w.reset_seconds for w in self.windows if w.violated])

    @property
    def violated(self) -> list[str]:
        return [w.limit.name for w in self.windows if w.violated]

    @property
    def tightest(self) -> WindowStatus | None:
        """The limit with the least room left (ties: the shorter window), for X-RateLimit-*."""
        if not self.windows:
            return None
        return min(self.windows, key=lambda w: (w.remaining, w.limit.window_seconds))


def live(limit: Limit, counts: Buckets, now_ms: int) -> dict[int, int]:
    """The buckets that still count at ``now_ms``."""
    oldest = limit.oldest_live(now_ms)
    return {index: n for index, n in counts.items() if index >= oldest and n > 0}


def wait_ms(limit: Limit, counts: Buckets, now_ms: int, cost: int) -> int:
    """Milliseconds until ``cost`` fits (0 if it fits now): the oldest buckets expire one by one.
    A cost above the quota never fits (config validation rules that out); a whole window is returned
    as the honest upper bound."""
    used = sum(counts.values())
    if cost > limit.quota:
        return limit.window_ms
    if used + cost <= limit.quota:
        return 0
    for index in sorted(counts):
        used -= counts[index]
        if used + cost <= limit.quota:
            return limit.expires_at(index) - now_ms
    raise AssertionError("unreachable: with every bucket expired the cost fits")


def status(limit: Limit, counts: Buckets, now_ms: int, cost: int, violated: bool) -> WindowStatus:
    """Headers' view of one limit; ``counts`` are live and already charged if admitted. Reset is when
    this request would fit (violated) or when the oldest counted bucket stops counting."""
    if not violated:
        return admitting_status(limit, sum(counts.values()), min(counts) if counts else None, now_ms)
    reset_ms = wait_ms(limit, counts, now_ms, cost)
    remaining = max(0, limit.quota - sum(counts.values()))
    return WindowStatus(limit, remaining, math.ceil(reset_ms / 1000), True, reset_ms)


def admitting_status(limit: Limit, used: int, oldest: int | None, now_ms: int) -> WindowStatus:
    """``status`` of a limit with room for the request, from its summary: the count in its live buckets
    and the oldest of them (what the Redis script returns instead of every bucket)."""
    reset_ms = limit.expires_at(oldest) - now_ms if oldest is not None else 0
    return WindowStatus(limit, max(0, limit.quota - used), math.ceil(reset_ms / 1000), False, reset_ms)


def lease_size(limits: Sequence[Limit], used: Sequence[int], cost: int, want: int) -> int:
    """Requests of ``cost`` to charge for an admitted request: ``want`` at most, never more than a
    ``LEASE_SHARE``-th of the tightest limit's room, and always the one request itself."""
    if cost <= 0 or want <= 1:
        return 1
    room = min(lim.quota - u for lim, u in zip(limits, used, strict=True))
    return max(1, min(want, room // (cost * LEASE_SHARE)))


def give_back(
    limits: Sequence[Limit], counts: Sequence[Buckets], now_ms: int, charged: Sequence[int], units: int
) -> list[dict[int, int]]:
    """The live buckets once a lease's ``units`` unspent are returned to the bucket each limit charged
    (``charged``: its index). A bucket that no longer counts, or holds fewer units, keeps what it has."""
    current = [live(lim, c, now_ms) for lim, c in zip(limits, counts, strict=True)]
    if units > 0:
        for c, index in zip(current, charged, strict=True):
            if c.get(index, 0) >= units:
                c[index] -= units
    return current


def decide(
    limits: Sequence[Limit], counts: Sequence[Buckets], now_ms: int, cost: int, want: int = 1
) -> tuple[Decision, list[dict[int, int]]]:
    """Check every limit; charge all of them only if all admit, with a lease of up to ``want`` requests.
    Returns the decision and the live buckets after it (charged only when allowed)."""
    current = [live(lim, c, now_ms) for lim, c in zip(limits, counts, strict=True)]
    used = [sum(c.values()) for c in current]
    fits = [u + cost <= lim.quota for lim, u in zip(limits, used, strict=True)]
    allowed = all(fits)
    granted = lease_size(limits, used, cost, want) if allowed else 0
    if allowed and cost:
        for lim, c in zip(limits, current, strict=True):
            index = lim.bucket(now_ms)
            c[index] = c.get(index, 0) + cost * granted
    windows = tuple(
        status(lim, c, now_ms, cost, violated=not ok) for lim, c, ok in zip(limits, current, fits, strict=True)
    )
    return Decision(allowed, windows, now_ms, granted=granted), current
