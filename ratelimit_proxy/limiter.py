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
    cached: bool = False  # a refusal answered from the over-limit cache, without asking the store

    @property
    def refused_for_ms(self) -> int:
        """How long a refusal surely stands: until every violated limit has room for the request again.
        Other clients' hits (on any replica) can only make the wait longer, never shorter."""
        return max((w.reset_ms for w in self.windows if w.violated), default=0)

    def aged(self, elapsed_ms: int) -> Decision:
        """The same refusal ``elapsed_ms`` later: resets count down, the verdict stands (cached)."""
        windows = tuple(
            replace(
                w,
                reset_ms=max(0, w.reset_ms - elapsed_ms),
                reset_seconds=max(0, math.ceil((w.reset_ms - elapsed_ms) / 1000)),
            )
            for w in self.windows
        )
        return Decision(self.allowed, windows, self.now_ms + elapsed_ms, cached=True)

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


def decide(
    limits: Sequence[Limit], counts: Sequence[Buckets], now_ms: int, cost: int
) -> tuple[Decision, list[dict[int, int]]]:
    """Check every limit; charge all of them only if all admit. Returns the decision and the live
    buckets after it (charged only when allowed)."""
    current = [live(lim, c, now_ms) for lim, c in zip(limits, counts, strict=True)]
    fits = [sum(c.values()) + cost <= lim.quota for lim, c in zip(limits, current, strict=True)]
    allowed = all(fits)
    if allowed and cost:
        for lim, c in zip(limits, current, strict=True):
            index = lim.bucket(now_ms)
            c[index] = c.get(index, 0) + cost
    windows = tuple(
        status(lim, c, now_ms, cost, violated=not ok) for lim, c, ok in zip(limits, current, fits, strict=True)
    )
    return Decision(allowed, windows, now_ms), current
