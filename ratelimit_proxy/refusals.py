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
        # until and sent at in whole milliseconds, as the limiter counts: in float seconds a refusal could
        # outlast its end by rounding (1001.4 + 0.4 > 1001.8) and refuse at the first admissible moment
        self._entries: dict[Key, tuple[int, Decision, int]] = {}
        self._prune_lock = threading.Lock()

    def check(self, key: Key) -> Decision | None:
        """The standing refusal for ``key``, its resets counted down; None once the store must decide."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        until_ms, decision, sent_ms = entry
        now_ms = self._now_ms()
        if now_ms >= until_ms:
            self._entries.pop(key, None)
            return None
        return decision.aged(now_ms - sent_ms)

    def remember(self, key: Key, decision: Decision, sent_at: float) -> None:
        """Keep a refusal the store just made, for as long as it surely stands."""
        wait_ms = decision.refused_for_ms
        if self._max <= 0 or wait_ms <= 0:
            return
        if len(self._entries) >= self._max:
            self._prune()
        sent_ms = round(sent_at * 1000)
        self._entries[key] = (sent_ms + wait_ms, decision, sent_ms)

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    def _prune(self) -> None:
        """Drop what has expired; if a flood of distinct clients fills it anyway, start over (the cache
        only saves work: an empty one is still correct)."""
        if not self._prune_lock.acquire(blocking=False):
            return
        try:
            now_ms = self._now_ms()
            for key in [k for k, (until_ms, _, _) in list(self._entries.items()) if until_ms <= now_ms]:
                self._entries.pop(key, None)
            if len(self._entries) >= self._max:
                self._entries.clear()
        finally:
            self._prune_lock.release()

    def __len__(self) -> int:
        return len(self._entries)
