"""The over-limit cache (Envoy's local cache of over-limit keys, made exact): a client that was refused is
refused again from process memory, with no Redis call, until the earliest moment it could be admitted.

That moment is known from the refusal itself: every violated limit needs its oldest buckets to expire
(``Decision.refused_for_ms``), and hits by anyone else, on any replica, can only push it later. So a
cached refusal is never wrong, and nothing is admitted beyond its quota: from that moment on the store
decides again. The time is counted from when the request was *sent* to Redis, a little before Redis
decided, so the entry ends no later than it must.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ratelimit_proxy.limiter import Decision, Limit

Key = tuple[str, tuple[Limit, ...], int]  # bucket, the plan's limits, cost


class OverLimitCache:
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._clock = clock
        self._entries: dict[Key, tuple[float, Decision, float]] = {}  # until, refusal, sent at
        self._prune_lock = threading.Lock()

    def check(self, key: Key) -> Decision | None:
        """The standing refusal for ``key``, its resets counted down; None once the store must decide."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, decision, sent_at = entry
        now = self._clock()
        if now >= until:
            self._entries.pop(key, None)
            return None
        return decision.aged(int((now - sent_at) * 1000))

    def remember(self, key: Key, decision: Decision, sent_at: float) -> None:
        """Keep a refusal the store just made, for as long as it surely stands."""
        wait_ms = decision.refused_for_ms
        if self._max <= 0 or wait_ms <= 0:
            return
        if len(self._entries) >= self._max:
            self._prune()
        self._entries[key] = (sent_at + wait_ms / 1000, decision, sent_at)

    def _prune(self) -> None:
        """Drop what has expired; if a flood of distinct clients fills it anyway, start over (the cache
        only saves work: an empty one is still correct)."""
        if not self._prune_lock.acquire(blocking=False):
            return
        try:
            now = self._clock()
            for key in [k for k, (until, _, _) in list(self._entries.items()) if until <= now]:
                self._entries.pop(key, None)
            if len(self._entries) >= self._max:
                self._entries.clear()
        finally:
            self._prune_lock.release()

    def __len__(self) -> int:
        return len(self._entries)
