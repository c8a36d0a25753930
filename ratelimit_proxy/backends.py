"""Where the limiter's counters live: Redis (shared by every replica) or process memory (embedded default).

Both take the same call and return the same Decision; one behaviour suite, driven by the JSON vectors
in tests/vectors/ratelimit_proxy/, runs against both.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, Protocol

import redis
import redis.connection

from ratelimit_proxy.limiter import Decision, Limit, admitting_status, decide, live, status


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
    """Counters in Redis, decided by ratelimit.lua: one EVALSHA per request.

    The call goes around redis-py's command layer and connection pool, which cost about 60 µs of CPU per
    call here, three times the round trip itself (bench/RESULTS.md): the command is written as RESP with
    each plan's arguments encoded once, on connections kept in a last-in first-out list. redis-py still
    connects, applies the timeouts and parses the reply (hiredis). On NOSCRIPT (a restarted Redis) the
    script is loaded again and the call repeated once."""

    MAX_IDLE_CONNECTIONS = 64

    def __init__(self, client: redis.Redis, use_redis_clock: bool = True) -> None:
        self._client = client
        self._source = resources.files("ratelimit_proxy").joinpath("ratelimit.lua").read_text()
        # Redis names a script by its SHA-1.
        self._sha = hashlib.sha1(self._source.encode(), usedforsecurity=False).hexdigest().encode()
        self._use_redis_clock = use_redis_clock
        pool = client.connection_pool
        self._connect: Callable[[], redis.connection.AbstractConnection] = lambda: pool.connection_class(
            **pool.connection_kwargs
        )
        self._idle: list[redis.connection.AbstractConnection] = []  # append/pop are atomic: no lock
        self._encoded_args: dict[tuple[int, int, tuple[Limit, ...]], tuple[int, bytes]] = {}

    def hit(self, bucket: str, limits: Sequence[Limit], cost: int = 1, at_ms: int | None = None) -> Decision:
        # The Redis clock by default: every replica then agrees on the bucket boundaries.
        clock = at_ms if at_ms is not None else (-1 if self._use_redis_clock else now_ms())
        reply = self._evalsha([counter_key(bucket, lim).encode() for lim in limits], self._args(clock, cost, limits))
        allowed, now = bool(reply[0]), int(reply[1])
        windows = []
        for lim, (fits, used, oldest, *flat) in zip(limits, reply[2:], strict=True):
            if fits:
                windows.append(admitting_status(lim, used, oldest if oldest >= 0 else None, now))
            else:
                counts = {flat[j]: flat[j + 1] for j in range(0, len(flat), 2)}
                windows.append(status(lim, counts, now, cost, violated=True))
        return Decision(allowed, tuple(windows), now)

    def _args(self, clock: int, cost: int, limits: Sequence[Limit]) -> tuple[int, bytes]:
        """ARGV as RESP, with its count. With the Redis clock (-1) it is the same for every request of a
        plan, so it is encoded once per plan."""
        cache_key = (clock, cost, tuple(limits))
        cached = self._encoded_args.get(cache_key)
        if cached is None:
            values = [clock, cost]
            for lim in limits:
                values += [lim.quota, lim.window_ms, lim.buckets]
            cached = (len(values), b"".join(_bulk(str(v).encode()) for v in values))
            if clock == -1 and len(self._encoded_args) < 10_000:
                self._encoded_args[cache_key] = cached
        return cached

    def _evalsha(self, keys: list[bytes], args: tuple[int, bytes]) -> Any:
        count, encoded_args = args
        head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (3 + len(keys) + count, self._sha)
        command = b"".join([head, _bulk(b"%d" % len(keys)), *map(_bulk, keys), encoded_args])
        try:
            connection, reused = self._idle.pop(), True
        except IndexError:
            connection, reused = self._connect(), False
        try:
            try:
                reply = self._call(connection, command)
            except redis.ConnectionError:
                if not reused:
                    raise
                # An idle connection to a Redis that restarted (or closed it): the command never ran
                # there, so it goes once more on a new connection instead of failing the request and
                # counting towards the circuit breaker.
                connection.disconnect()
                reply = self._call(connection, command)
        except redis.RedisError as exc:
            connection.disconnect()
            raise StorageUnavailable(str(exc)) from exc
        except BaseException:
            connection.disconnect()  # a reply may still be in flight: never reuse the connection
            raise
        if len(self._idle) < self.MAX_IDLE_CONNECTIONS:
            self._idle.append(connection)
        else:
            connection.disconnect()
        return reply

    def _call(self, connection: redis.connection.AbstractConnection, command: bytes) -> Any:
        """One EVALSHA; on NOSCRIPT (a restarted Redis) the script is loaded and the call repeated."""
        try:
            connection.send_packed_command([command], check_health=False)
            return connection.read_response()
        except redis.exceptions.NoScriptError:
            self._client.script_load(self._source)
            connection.send_packed_command([command], check_health=False)
            return connection.read_response()

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


def _bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)
