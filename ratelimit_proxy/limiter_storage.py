"""Where the limiter's counters live: Redis (shared by every replica) or process memory (embedded default).

Both take the same call and return the same Decision; one behaviour suite, driven by the JSON vectors
in tests/vectors/ratelimit_proxy/, runs against both.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, Protocol

import redis
import redis.cluster
import redis.connection
from redis.crc import key_slot

from ratelimit_proxy.limiter import Decision, Limit, Unspent, admitting_status, decide, give_back, live, status
from service_kit.errors import ServiceUnavailableError
from service_kit.redis_connect import REDIS_ERRORS, AnyRedis

log = logging.getLogger("ratelimit_proxy")


class StorageUnavailable(ServiceUnavailableError):
    """The backend could not answer; the caller decides between fail-open and fail-closed. Where nobody
    decides (an admin write), the kit answers 503 with Retry-After."""

    code = "storage_unavailable"


def counter_key(bucket: str, limit: Limit) -> str:
    """``rl:{bucket}:name``: the braces make every key of one client hash to one Cluster slot."""
    return f"rl:{{{bucket}}}:{limit.name}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class LimiterBackend(Protocol):
    def hit(
        self,
        bucket: str,
        limits: Sequence[Limit],
        cost: int = 1,
        at_ms: int | None = None,
        want: int = 1,
        unspent: Unspent | None = None,
    ) -> Decision:
        """Check every limit of one request and charge all of them, or none; with ``want`` above 1, charge a
        lease of up to that many requests (``Decision.granted``). ``unspent`` is given back first."""
        ...

    def peek(self, bucket: str, limits: Sequence[Limit], at_ms: int | None = None) -> Decision:
        """Current usage without charging (admin view)."""
        ...

    def shard(self, bucket: str) -> str:
        """Which part of the storage decides ``bucket`` (its circuit breaker's name)."""
        ...

    def shards(self) -> set[str]:
        """Every shard deciding requests now."""
        ...

    def ping_shards(self) -> dict[str, bool]:
        """Whether each shard's storage answers now (readiness); empty when nothing is remote."""
        ...


class MemoryLimiter:
    """One process's counters under a lock. Stale buckets are dropped on every touch and idle keys
    swept now and then, so memory stays bounded by the clients seen in the longest window."""

    SWEEP_EVERY = 10_000

    def __init__(self) -> None:
        self._counts: dict[str, tuple[dict[int, int], Limit]] = {}
        self._lock = threading.Lock()
        self._hits = 0

    def hit(
        self,
        bucket: str,
        limits: Sequence[Limit],
        cost: int = 1,
        at_ms: int | None = None,
        want: int = 1,
        unspent: Unspent | None = None,
    ) -> Decision:
        now = now_ms() if at_ms is None else at_ms
        keys = [counter_key(bucket, lim) for lim in limits]
        with self._lock:
            counts = self._load(keys)
            if unspent is not None:
                counts = give_back(limits, counts, now, unspent.charged, unspent.units)
                for key, lim, returned in zip(keys, limits, counts, strict=True):
                    self._counts[key] = (returned, lim)
            decision, updated = decide(limits, counts, now, cost, want)
            if decision.allowed:
                for key, lim, charged in zip(keys, limits, updated, strict=True):
                    self._counts[key] = (charged, lim)
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

    def shard(self, bucket: str) -> str:
        return ""

    def shards(self) -> set[str]:
        return {""}

    def ping_shards(self) -> dict[str, bool]:
        return {}

    def _sweep(self, now: int) -> None:
        idle = [k for k, (counts, lim) in self._counts.items() if not live(lim, counts, now)]
        for key in idle:
            del self._counts[key]


class NodeConnections:
    """Idle connections to one Redis node, reused most recent first (append and pop are atomic: no lock)."""

    MAX_IDLE = 64

    def __init__(self, pool: redis.connection.ConnectionPool) -> None:
        self._connect: Callable[[], redis.connection.AbstractConnection] = lambda: pool.connection_class(
            **pool.connection_kwargs
        )
        self._idle: list[redis.connection.AbstractConnection] = []

    def take(self) -> tuple[redis.connection.AbstractConnection, bool]:
        """A connected connection, and whether it was idle (so possibly closed by the server since)."""
        try:
            return self._idle.pop(), True
        except IndexError:
            return connected(self._connect()), False

    def give_back(self, connection: redis.connection.AbstractConnection) -> None:
        if len(self._idle) < self.MAX_IDLE:
            self._idle.append(connection)
        else:
            connection.disconnect()


class RedisLimiter:
    """Counters in Redis, decided by ratelimit.lua: one EVALSHA per request (or per lease of a busy
    client's requests, ratelimit_proxy/leases.py), on the node that owns it.

    The call goes around redis-py's command layer and connection pool, which cost about 60 µs of CPU per
    call here, three times the round trip itself (bench/RESULTS.md): the command is written as RESP with
    each plan's arguments encoded once, on connections kept per node. redis-py still connects, applies the
    timeouts and parses the reply (hiredis). Where the command goes is redis-py's too:

    - one server, or the primary a Sentinel names (a new connection asks the Sentinels again, so after a
      failover the retry on a new connection reaches the new primary);
    - on a Redis Cluster, the primary of the client's slot in ``RedisCluster``'s slot map. A MOVED reply
      updates that map (``move_slot``) and the call goes again to the new owner; ASK sends it once to the
      importing node; a node that stops answering makes a background thread refresh the map until the
      cluster has promoted a replica (``shard`` then names the new node, whose breaker is closed).

    NOSCRIPT (a restarted Redis, a promoted replica, a new node: each has its own script cache) loads the
    script on that connection and repeats the call once."""

    REFRESH_SECONDS = 0.25  # how often the slot map is re-read while a node is failing
    REFRESH_ATTEMPTS = 120  # ... for at most this many rounds (30 s) after the last failure

    def __init__(self, client: AnyRedis, use_redis_clock: bool = True) -> None:
        self._client = client
        self._source = resources.files("ratelimit_proxy").joinpath("ratelimit.lua").read_text()
        # Redis names a script by its SHA-1.
        self._sha = hashlib.sha1(self._source.encode(), usedforsecurity=False).hexdigest().encode()
        self._use_redis_clock = use_redis_clock
        self._cluster = client if isinstance(client, redis.cluster.RedisCluster) else None
        self._single = (
            None if isinstance(client, redis.cluster.RedisCluster) else NodeConnections(client.connection_pool)
        )
        self._nodes: dict[str, NodeConnections] = {}
        self._encoded_args: dict[tuple[int, int, tuple[Limit, ...]], tuple[int, bytes]] = {}
        self._refresh_rounds = 0
        self._refresh_lock = threading.Lock()

    def shard(self, bucket: str) -> str:
        """The node that decides ``bucket`` now ("" without a cluster): the unit of the circuit breaker,
        so one failing primary leaves the other shards' clients limited."""
        if self._cluster is None:
            return ""
        return self._node_of(counter_key(bucket, _ANY_LIMIT).encode()).name

    def hit(
        self,
        bucket: str,
        limits: Sequence[Limit],
        cost: int = 1,
        at_ms: int | None = None,
        want: int = 1,
        unspent: Unspent | None = None,
    ) -> Decision:
        # The Redis clock by default: every replica then agrees on the bucket boundaries.
        clock = at_ms if at_ms is not None else (-1 if self._use_redis_clock else now_ms())
        count, plan_args = self._args(clock, cost, limits)
        if unspent is None:
            lease_args = _bulk(b"%d" % want) + b"$1\r\n0\r\n"
        else:
            lease_args = b"".join(_bulk(b"%d" % v) for v in (want, unspent.units, *unspent.charged))
        reply = self._evalsha(
            [counter_key(bucket, lim).encode() for lim in limits],
            (count + 2 + (len(limits) if unspent is not None else 0), plan_args + lease_args),
        )
        allowed, now, granted = bool(reply[0]), int(reply[1]), int(reply[2])
        windows = []
        for lim, (fits, used, oldest, *flat) in zip(limits, reply[3:], strict=True):
            if fits:
                windows.append(admitting_status(lim, used, oldest if oldest >= 0 else None, now))
            else:
                counts = {flat[j]: flat[j + 1] for j in range(0, len(flat), 2)}
                windows.append(status(lim, counts, now, cost, violated=True))
        return Decision(allowed, tuple(windows), now, granted=granted)

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

    def _node_of(self, key: bytes) -> redis.cluster.ClusterNode:
        assert self._cluster is not None
        return self._cluster.nodes_manager.get_node_from_slot(key_slot(key))

    def _connections(self, key: bytes) -> NodeConnections:
        if self._single is not None:
            return self._single
        node = self._node_of(key)
        connections = self._nodes.get(node.name)
        if connections is None:
            assert self._cluster is not None
            pool = self._cluster.get_redis_connection(node).connection_pool
            connections = self._nodes.setdefault(node.name, NodeConnections(pool))
        return connections

    def _evalsha(self, keys: list[bytes], args: tuple[int, bytes]) -> Any:
        count, encoded_args = args
        head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (3 + len(keys) + count, self._sha)
        command = b"".join([head, _bulk(b"%d" % len(keys)), *map(_bulk, keys), encoded_args])
        try:
            for _ in range(3):  # a slot that moved twice while we asked: let the next request try
                node = self._connections(keys[0])
                try:
                    return self._call_node(node, command)
                except redis.exceptions.MovedError as moved:
                    assert self._cluster is not None
                    self._cluster.nodes_manager.move_slot(moved)
                except redis.exceptions.AskError as ask:
                    return self._call_asking(ask, command)
            raise StorageUnavailable("the slot kept moving")
        except redis.exceptions.SlotNotCoveredError as exc:
            self._refresh_topology()
            raise StorageUnavailable(str(exc)) from exc
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError) as exc:
            self._refresh_topology()
            raise StorageUnavailable(str(exc)) from exc
        except REDIS_ERRORS as exc:
            raise StorageUnavailable(str(exc)) from exc

    def _call_node(self, node: NodeConnections, command: bytes) -> Any:
        connection, reused = node.take()
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
                reply = self._call(connected(connection), command)
        except (redis.exceptions.AskError, redis.exceptions.NoScriptError):
            node.give_back(connection)  # a whole error reply was read: the connection is in step
            raise
        except BaseException:
            connection.disconnect()  # a reply may still be in flight: never reuse the connection
            raise
        node.give_back(connection)
        return reply

    def _call(self, connection: redis.connection.AbstractConnection, command: bytes) -> Any:
        """One EVALSHA; on NOSCRIPT the script is loaded on this connection's node and the call repeated."""
        try:
            connection.send_packed_command([command], check_health=False)
            return connection.read_response()
        except redis.exceptions.NoScriptError:
            connection.send_command("SCRIPT", "LOAD", self._source)
            connection.read_response()
            connection.send_packed_command([command], check_health=False)
            return connection.read_response()

    def _call_asking(self, ask: redis.exceptions.AskError, command: bytes) -> Any:
        """A slot being migrated: this one call goes to the importing node, after ASKING."""
        assert self._cluster is not None
        node = self._cluster.nodes_manager.get_node(host=ask.host, port=ask.port) or redis.cluster.ClusterNode(
            ask.host, ask.port
        )
        connection = self._cluster.get_redis_connection(node).connection_pool.get_connection()
        try:
            connection.send_packed_command([b"*1\r\n$6\r\nASKING\r\n", command], check_health=False)
            connection.read_response()
            return connection.read_response()
        finally:
            self._cluster.get_redis_connection(node).connection_pool.release(connection)

    def _refresh_topology(self) -> None:
        """On a cluster, re-read the slot map in the background until the failing node's slots have a
        new primary; the request path never waits for it."""
        if self._cluster is None:
            return
        with self._refresh_lock:
            running = self._refresh_rounds > 0
            self._refresh_rounds = self.REFRESH_ATTEMPTS
        if not running:
            threading.Thread(target=self._refresh_loop, name="ratelimit-slots", daemon=True).start()

    def _refresh_loop(self) -> None:
        assert self._cluster is not None
        while True:
            with self._refresh_lock:
                if self._refresh_rounds <= 0:
                    return
                self._refresh_rounds -= 1
            try:
                self._cluster.nodes_manager.initialize()
            except REDIS_ERRORS as exc:
                log.debug("slot map refresh failed: %s", exc)
            time.sleep(self.REFRESH_SECONDS)

    def ping_shards(self) -> dict[str, bool]:
        """Whether each primary answers (readiness): one entry per shard. A silent one also makes the slot
        map be read again, so a promoted replica replaces it in the next answer."""
        if self._cluster is None:
            return {"": _answers(self._client)}
        answers = {
            node.name: _answers(self._cluster.get_redis_connection(node)) for node in self._cluster.get_primaries()
        }
        if not all(answers.values()):
            self._refresh_topology()
        return answers

    def shards(self) -> set[str]:
        """The shards that decide requests now (a replaced primary is no longer one)."""
        if self._cluster is None:
            return {""}
        return {node.name for node in self._cluster.get_primaries()}

    def peek(self, bucket: str, limits: Sequence[Limit], at_ms: int | None = None) -> Decision:
        now = now_ms() if at_ms is None else at_ms
        try:
            # one client's keys share a slot: a plain (non-transactional) pipeline goes to one node
            with self._client.pipeline(transaction=False) as pipe:
                for lim in limits:
                    pipe.hgetall(counter_key(bucket, lim))
                rows = pipe.execute()
        except REDIS_ERRORS as exc:
            raise StorageUnavailable(str(exc)) from exc
        counts = [{int(k): int(v) for k, v in row.items()} for row in rows]
        return decide(limits, counts, now, 0)[0]


def connected(connection: redis.connection.AbstractConnection) -> redis.connection.AbstractConnection:
    """Connect through the connection's own ``connect``: a Sentinel-managed one asks the Sentinels for the
    primary there, which sending a command on a closed connection would skip (it reconnects to the last
    address, the dead primary's)."""
    connection.connect()
    return connection


def _answers(client: AnyRedis) -> bool:
    try:
        return bool(client.ping())
    except REDIS_ERRORS:
        return False


_ANY_LIMIT = Limit("any", 1, 1, 1)  # every limit of a bucket shares its hash tag, so any name gives its slot


def _bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)
