"""The release's shared state in Redis: the current release (JSON), the queue of operator commands, the
event counters the admin API's /metrics exposes, and the controller's lease. All keys share the
``{release}`` hash tag (one Cluster slot). State in Redis is what lets a controller stop, restart or be
replaced (another replica's) mid-release: the next one to hold the lease carries on from the last step
written."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.lock import Lock

from ratelimit_proxy.limiter_storage import StorageUnavailable
from service_kit.redis_connect import REDIS_ERRORS, AnyRedis

STATE_KEY = "rl:{release}:state"
COMMANDS_KEY = "rl:{release}:commands"
EVENTS_KEY = "rl:{release}:events"
EVENT_TIMES_KEY = "rl:{release}:event_times"
LEASE_KEY = "rl:{release}:lease"
# The events a release can record: the metric's ``event`` label takes only these.
EVENTS = (
    "started",
    "migration_check",
    "gate_passed",
    "gate_failed",
    "step",
    "analysis_passed",
    "inconclusive",
    "paused",
    "resumed",
    "promoted",
    "aborted",
    "rolled_back",
    "succeeded",
)
COMMANDS = ("pause", "resume", "abort", "promote")
ACTIVE = ("gating", "progressing", "paused")


class ReleaseStore:
    def __init__(self, redis: AnyRedis) -> None:
        self.redis = redis

    def state(self) -> dict[str, Any] | None:
        raw = self.redis.get(STATE_KEY)
        return json.loads(raw) if raw else None

    def save(self, state: dict[str, Any]) -> None:
        state["updated_at"] = time.time()
        self.redis.set(STATE_KEY, json.dumps(state))

    def command(self, name: str) -> None:
        self.redis.rpush(COMMANDS_KEY, name)

    def take_commands(self) -> list[str]:
        taken = []
        while (name := self.redis.lpop(COMMANDS_KEY)) is not None:
            taken.append(name.decode() if isinstance(name, bytes) else str(name))
        return taken

    def clear_commands(self) -> None:
        self.redis.delete(COMMANDS_KEY)

    def event(self, name: str, at: float | None = None) -> None:
        assert name in EVENTS, name
        self.redis.hincrby(EVENTS_KEY, name, 1)
        self.redis.hset(EVENT_TIMES_KEY, name, at or time.time())

    def events(self) -> tuple[dict[str, int], dict[str, float]]:
        counts = {_text(k): int(v) for k, v in self.redis.hgetall(EVENTS_KEY).items()}
        times = {_text(k): float(v) for k, v in self.redis.hgetall(EVENT_TIMES_KEY).items()}
        return counts, times

    def lease(self, seconds: float) -> Lock:
        """One controller at a time: a token-checked lock (redis-py's, a Lua compare-and-set) that expires
        when its holder stops renewing it."""
        return Lock(self.redis, LEASE_KEY, timeout=seconds, blocking=False, thread_local=False)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def new_release_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class ReleaseCollector(Collector):
    """``release_events_total{event}``, ``release_last_event_timestamp_seconds{event}`` (the dashboards'
    release annotation) and ``release_traffic_weight{colour}``, read from Redis at scrape time: right under
    any number of controllers and replicas. While Redis is down the samples are left out."""

    def __init__(self, store: ReleaseStore, weights: Any) -> None:
        self.store = store
        self.weights = weights  # () -> dict colour -> weight

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> tuple[CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily("release_events", "Release events by kind.", labels=["event"]),
            GaugeMetricFamily(
                "release_last_event_timestamp_seconds",
                "When each kind of release event last happened.",
                labels=["event"],
            ),
            GaugeMetricFamily("release_traffic_weight", "Weight of each upstream colour now.", labels=["colour"]),
        )

    def collect(self) -> Iterable[Metric]:
        counts_family, times_family, weights_family = self._families()
        try:
            counts, times = self.store.events()
            weights = self.weights()
        except (*REDIS_ERRORS, StorageUnavailable):
            return [counts_family, times_family, weights_family]
        for event in EVENTS:
            if event in counts:
                counts_family.add_metric([event], counts[event])
            if event in times:
                times_family.add_metric([event], times[event])
        for colour, weight in weights.items():
            weights_family.add_metric([colour], weight)
        return [counts_family, times_family, weights_family]
