"""``ChannelListener``: one Redis pub/sub channel followed in a daemon thread, reconnecting on its own.

Messages reach the handler as text whatever the client's decode mode. The channel is classic (SUBSCRIBE,
PUBLISH) in every topology, Redis Cluster included: there PUBLISH is broadcast over the cluster bus to every
node, so a listener may subscribe on any node and, when that node dies, resubscribe on any other at once
instead of waiting for a shard's failover. Sharded pub/sub (SSUBSCRIBE) saves bus traffic, which matters
for busy channels; these carry a few admin changes a minute.

Pub/sub delivers at most once: whatever is published while a listener is disconnected is lost. So
``on_connect`` runs after every (re)subscription, for the owner to re-read what it caches, and owners
keep a slower path (a poll, a database read) that works without the channel.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

import redis
import redis.cluster

from service_kit.redis_connect import REDIS_ERRORS, AnyRedis

log = logging.getLogger("service_kit.pubsub")
PING_SECONDS = 1.0
SILENT_SECONDS = 3 * PING_SECONDS  # without a PONG for this long the connection counts as lost
# Our pings carry this payload, so their PONG is recognised in either decode mode: with
# decode_responses=True redis-py 8 returns a subscribed PONG as the bare payload, which ``get_message``
# then drops as an unknown message type (the listener saw silence and reconnected every few seconds).
PING_PAYLOAD = "vibelux-listener-ping"
_PONGS = (PING_PAYLOAD, PING_PAYLOAD.encode(), ["pong", PING_PAYLOAD], [b"pong", PING_PAYLOAD.encode()])


def publish(client: AnyRedis, channel: str, message: str) -> None:
    """PUBLISH, still delivered while a node is down. One server or Sentinel: once more after a connection
    error (the retry reconnects, to the new primary after a failover). Cluster: PUBLISH reaches every node
    from any one, but redis-py sends it to a random known node, the dead one included, so each primary is
    tried in turn. Raises the last error when none answers."""
    if not isinstance(client, redis.cluster.RedisCluster):
        try:
            client.publish(channel, message)
        except redis.ConnectionError:
            client.publish(channel, message)
        return
    error: redis.RedisError = redis.ConnectionError("no cluster node known")
    for node in random.sample(client.get_primaries(), len(client.get_primaries())):
        try:
            client.publish(channel, message, target_nodes=node)
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            error = exc
    raise error


class ChannelListener:
    """``client`` may also be a list of equivalent servers (the Sentinels of one deployment): each attempt
    subscribes on the next in turn."""

    def __init__(
        self,
        client: AnyRedis | Sequence[redis.Redis],
        channel: str,
        on_message: Callable[[str], None],
        on_connect: Callable[[], None] = lambda: None,
        name: str = "pubsub",
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_message = on_message
        self._on_connect = on_connect
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self, wait_seconds: float = 0.0) -> None:
        """Start listening; optionally wait up to ``wait_seconds`` for the first subscription."""
        self._thread.start()
        if wait_seconds:
            self.connected.wait(wait_seconds)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(3)

    def _pubsub(self, turn: int) -> redis.client.PubSub:
        """On a cluster, each attempt subscribes on the next node in turn (replicas too): PUBLISH reaches
        them all, so a dead node costs one attempt, not a wait for its failover."""
        if isinstance(self._client, redis.cluster.RedisCluster):
            nodes = sorted(self._client.get_nodes(), key=lambda node: node.name)
            node = nodes[turn % len(nodes)] if nodes else None
            return self._client.pubsub(node=node, ignore_subscribe_messages=True)
        if isinstance(self._client, Sequence):
            return self._client[turn % len(self._client)].pubsub(ignore_subscribe_messages=True)
        return self._client.pubsub(ignore_subscribe_messages=True)

    def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            pubsub = self._pubsub(turn)
            turn += 1
            try:
                pubsub.subscribe(self._channel)
                self._on_connect()
                self.connected.set()
                pinged = heard = time.monotonic()
                while not self._stop.is_set():
                    # get_message, unrolled: parse_response reads one reply, handle_message shapes it.
                    response = pubsub.parse_response(block=False, timeout=PING_SECONDS)
                    now = time.monotonic()
                    if response is not None:
                        heard = now  # a message or the PONG of our last ping
                        message = None if response in _PONGS else pubsub.handle_message(response, True)
                        if message and message["type"] == "message":
                            data = message["data"]
                            self._on_message(data.decode() if isinstance(data, bytes) else data)
                    if now - heard > SILENT_SECONDS:  # a frozen server or a half-open connection
                        raise redis.ConnectionError(f"no answer to pings for {now - heard:.1f} s")
                    # get_message also returns at once after reading a PONG: ping on a clock, not on None.
                    if now - pinged >= PING_SECONDS:
                        pubsub.ping(PING_PAYLOAD)
                        pinged = now
            except (*REDIS_ERRORS, OSError):
                if self.connected.is_set():
                    log.warning("redis pub/sub on %s lost; reconnecting", self._channel)
                self.connected.clear()
                self._stop.wait(1.0)
            except Exception:  # a failing handler must not end the listener
                log.exception("handling a message on %s failed", self._channel)
                self._stop.wait(1.0)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()
