"""ChannelListener against a real redis-server of its own (it is stopped and started in the test)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
import redis

from service_kit.pubsub import PING_SECONDS, SILENT_SECONDS, ChannelListener
from tests.servers import RedisServer, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[RedisServer]:
    own = RedisServer()
    own.start()
    yield own
    own.close()


def commands_sent(admin: redis.Redis, seconds: float) -> dict[str, int]:
    before = admin.info("commandstats")
    time.sleep(seconds)
    after = admin.info("commandstats")
    return {k: after[k]["calls"] - before.get(k, {"calls": 0})["calls"] for k in after if k != "cmdstat_info"}


def test_messages_arrive_and_an_idle_listener_only_pings_now_and_then(server: RedisServer) -> None:
    received: list[str] = []
    listener = ChannelListener(redis.Redis.from_url(server.url, socket_timeout=2), "changes", received.append)
    listener.start(wait_seconds=5)
    try:
        assert listener.connected.is_set()
        admin = redis.Redis.from_url(server.url)
        admin.publish("changes", "bans")
        wait_until(lambda: received == ["bans"], timeout=5)
        idle = commands_sent(admin, 3.0)
        # A ping per PING_SECONDS: the loop must not spin on the PONG it just read.
        assert 1 <= idle.get("cmdstat_ping", 0) <= 3.0 / PING_SECONDS + 1, idle
    finally:
        listener.close()


def test_listener_reconnects_and_resyncs_after_redis_restarts(server: RedisServer) -> None:
    received: list[str] = []
    connects: list[float] = []
    client = redis.Redis.from_url(server.url, socket_timeout=2, socket_connect_timeout=2)
    listener = ChannelListener(client, "changes", received.append, on_connect=lambda: connects.append(time.time()))
    listener.start(wait_seconds=5)
    try:
        assert len(connects) == 1
        server.stop()
        wait_until(lambda: not listener.connected.is_set(), timeout=10)
        server.start()
        wait_until(lambda: listener.connected.is_set() and len(connects) == 2, timeout=15)
        redis.Redis.from_url(server.url).publish("changes", "key abc")
        wait_until(lambda: received == ["key abc"], timeout=5)
    finally:
        listener.close()


def test_a_frozen_redis_is_noticed_and_the_listener_resyncs_when_it_thaws(server: RedisServer) -> None:
    connects: list[float] = []
    client = redis.Redis.from_url(server.url, socket_timeout=2, socket_connect_timeout=2)
    listener = ChannelListener(client, "changes", lambda data: None, on_connect=lambda: connects.append(time.time()))
    listener.start(wait_seconds=5)
    assert server.process is not None
    try:
        server.process.send_signal(signal.SIGSTOP)  # the connection stays open; nothing answers
        wait_until(lambda: not listener.connected.is_set(), timeout=SILENT_SECONDS + 5)
    finally:
        server.process.send_signal(signal.SIGCONT)
    try:
        wait_until(lambda: listener.connected.is_set() and len(connects) == 2, timeout=15)
    finally:
        listener.close()


@pytest.mark.slow
def test_an_idle_listener_never_reconnects_in_either_decode_mode(server: RedisServer) -> None:
    """Regression: with ``decode_responses=True`` (the proxy's listener client) redis-py hands the PONG
    back in a shape the loop did not recognise, so it reconnected every ~4 s (406 times in 15 minutes)."""
    from ratelimit_proxy.runtime import LISTENER_TIMEOUT_SECONDS

    connects: dict[bool, int] = {True: 0, False: 0}
    listeners = []
    for decode in (True, False):
        client = redis.Redis.from_url(
            server.url,
            socket_timeout=LISTENER_TIMEOUT_SECONDS,
            socket_connect_timeout=LISTENER_TIMEOUT_SECONDS,
            decode_responses=decode,
        )

        def connected(decode: bool = decode) -> None:
            connects[decode] += 1

        listeners.append(ChannelListener(client, "changes", lambda data: None, on_connect=connected))
    admin = redis.Redis.from_url(server.url)
    before = int(admin.info("stats")["total_connections_received"])
    for listener in listeners:
        listener.start(wait_seconds=5)
    try:
        time.sleep(10)  # ten pings, and two and a half of the old bug's reconnect cycles
        assert connects == {True: 1, False: 1}
        # one connection per listener, plus this INFO's own
        assert int(admin.info("stats")["total_connections_received"]) - before <= 3
        assert all(listener.connected.is_set() for listener in listeners)
    finally:
        for listener in listeners:
            listener.close()
