"""Leases of a client's budget: a hot client's requests admitted from process memory, a few at a time.

When one client keeps a worker busy, the worker asks the store to charge several of its requests at once
(``want``, ``Decision.granted``) and admits them one by one with no Redis call, until the lease is spent or
the current bucket of any of the plan's limits ends, whichever comes first. Charged before they are
spent, and spent inside the bucket they were charged to, leased requests count exactly as if each had
been charged on arrival: no rolling window admits more than its quota, on any number of replicas. What a
lease costs is the other way: its unspent requests are room no other worker can use until it ends and
they are given back (piggybacked on the next call for the client, or by ``sweep``), and the store never
leases more than a quarter of the room left (``limiter.LEASE_SHARE``), so the last requests before a
quota are decided one by one, as without leases.

How many to ask for follows the client's rate: one at first (a client seen now and then never leases),
twice the last lease when requests found it spent before it ended, and what was spent when it ended
with some left. The time is counted from when the request was *sent*, so a lease ends no later than its
bucket does (as in refusals.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ratelimit_proxy.limiter import Decision, Limit, Unspent

Key = tuple[str, tuple[Limit, ...], int]  # bucket, the plan's limits, cost

LONGEST_MS = 1_000  # a lease ends within a second even when every limit's bucket is longer
IDLE_MS = 10_000  # an ended, spent lease is forgotten this long after its end (its rate with it)


class Ask(NamedTuple):
    want: int  # requests to charge
    unspent: Unspent | None  # an ended lease's, to give back first
    leasing: bool  # this request asks for the client's next lease (call ``answered`` or ``unanswered``)
    pending: threading.Event | None = None  # or another one does: set when its answer is in


@dataclass
class Lease:
    decision: Decision  # the store's decision that charged it
    granted: int
    left: int  # requests charged and not yet spent
    charged: tuple[int, ...]  # the bucket index each limit charged
    sent_ms: int
    until_ms: int
    short: bool = False  # a request found it spent before it ended


class LeaseCache:
    def __init__(
        self, max_requests: int, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_requests = max_requests
        self._max_entries = max_entries
        self._clock = clock
        self._leases: dict[Key, Lease] = {}
        # a lease is being asked for: other requests wait for it (``renewed``), not ask the store themselves
        self._asking: dict[Key, threading.Event] = {}
        self._returns: list[tuple[Key, Unspent]] = []  # unspent requests of leases another replaced
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._max_requests > 1

    def spend(self, key: Key) -> Decision | None:
        """A request admitted from the client's lease, or None: the store decides."""
        lease = self._leases.get(key)
        if lease is None:
            return None
        now_ms = self._now_ms()
        if now_ms >= lease.until_ms:
            return None
        with self._lock:
            if lease.left <= 0:
                lease.short = True
                return None
            lease.left -= 1
            left = lease.left
        return lease.decision.spent(now_ms - lease.sent_ms, left * key[2])

    def ask(self, key: Key) -> Ask:
        """What to ask the store for. One request at a time asks for the client's next lease; the others
        learn whose answer to wait for (``renewed``), or else ask for themselves only."""
        if self._max_requests <= 1:
            return Ask(1, None, False)
        with self._lock:
            pending = self._asking.get(key)
            if pending is not None:
                return Ask(1, None, False, pending)
            self._asking[key] = threading.Event()
            lease = self._leases.get(key)
            if lease is None:
                return Ask(1, None, True)
            spent = lease.granted - lease.left
            want = min(self._max_requests, 2 * lease.granted if lease.short else max(1, spent))
            unspent = None
            if lease.left > 0 and self._now_ms() >= lease.until_ms:
                unspent = Unspent(lease.left * key[2], lease.charged)
                lease.left = 0
            return Ask(want, unspent, True)

    def answered(self, key: Key, leasing: bool, decision: Decision, sent_at: float) -> Decision:
        """Keep the lease the store just charged; the decision this request gets (room counting the
        lease's unspent requests)."""
        if not leasing:
            return decision
        with self._lock:
            if not decision.allowed or not decision.windows:
                self._leases.pop(key, None)
                self._answer(key)
                return decision
            if len(self._leases) >= self._max_entries:
                self._prune()
            sent_ms = round(sent_at * 1000)
            ends_ms = min((w.limit.bucket(decision.now_ms) + 1) * w.limit.bucket_ms for w in decision.windows)
            lasts_ms = min(ends_ms - decision.now_ms, LONGEST_MS)
            lease = Lease(
                decision,
                decision.granted,
                decision.granted - 1,
                tuple(w.limit.bucket(decision.now_ms) for w in decision.windows),
                sent_ms,
                sent_ms + lasts_ms,
            )
            self._keep_unspent(key, lease)
            self._leases[key] = lease
            self._answer(key)  # after the lease is in place: the requests waiting for it spend from it
        return decision.spent(0, lease.left * key[2], cached=False) if lease.left else decision

    def _keep_unspent(self, key: Key, lease: Lease) -> None:
        """A lease that came while the last one still had requests (another request asked in between): the
        new one takes them if they were charged to the same buckets, or they go back with the next sweep."""
        previous = self._leases.get(key)
        if previous is None or previous.left <= 0:
            return
        if previous.charged == lease.charged and self._now_ms() < previous.until_ms:
            lease.left += previous.left
            lease.granted += previous.granted
            lease.until_ms = min(lease.until_ms, previous.until_ms)
        else:
            self._returns.append((key, Unspent(previous.left * key[2], previous.charged)))
        previous.left = 0

    def unanswered(self, key: Key, leasing: bool) -> None:
        """The store did not answer: what it was to be given back stays charged until its buckets end."""
        if leasing:
            with self._lock:
                self._answer(key)

    @staticmethod
    def renewed(ask: Ask, timeout_seconds: float) -> bool:
        """For a request that found the client's lease spent while another asks for the next one: wait for
        that answer (single-flight, as the cache's fills), then decide from memory again. False: nobody was
        asking, or no answer came in time."""
        return ask.pending is not None and ask.pending.wait(timeout_seconds)

    def _answer(self, key: Key) -> None:
        asking = self._asking.pop(key, None)
        if asking is not None:
            asking.set()

    def sweep(self) -> list[tuple[Key, Unspent]]:
        """Ended leases' unspent requests, to give back now (each handed out once); long-idle leases forgotten."""
        now_ms = self._now_ms()
        with self._lock:
            returns, self._returns = self._returns, []
            for key, lease in list(self._leases.items()):
                if now_ms < lease.until_ms or key in self._asking:
                    continue
                if lease.left > 0:
                    returns.append((key, Unspent(lease.left * key[2], lease.charged)))
                    lease.left = 0
                elif now_ms >= lease.until_ms + IDLE_MS:
                    del self._leases[key]
        return returns

    def _prune(self) -> None:
        """A flood of distinct hot clients: forget every ended lease (their unspent requests stay charged
        until their buckets end), then all of them if that is not enough."""
        now_ms = self._now_ms()
        for key in [k for k, lease in self._leases.items() if lease.until_ms <= now_ms and k not in self._asking]:
            del self._leases[key]
        if len(self._leases) >= self._max_entries:
            self._leases.clear()

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    def __len__(self) -> int:
        return len(self._leases)
