"""Probes of the platform's dependencies (HTTP, Redis, SQL, TCP) and the pure rule that grades a result.

A probe is a callable that returns a `ProbeReport` or raises; it never decides healthy/degraded/down on its
own except where the dependency says so itself (a health body reporting "degraded"). `grade()` turns one
attempt into a status and an outcome, so the rule is tested without any network.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import redis
import requests
import sqlalchemy

from exporters.database import read_only_engine
from exporters.scheduling import Attempt
from service_kit.config import checked, positive, secret
from service_kit.redis_connect import RedisConnection, connect, redis_url_check

STATUSES = ("healthy", "degraded", "down")
OUTCOMES = ("success", "degraded", "failure", "timeout")
# A probe's client gives up after the same timeout as its job, so either may fire first: both are a timeout.
CLIENT_TIMEOUTS: tuple[type[BaseException], ...] = (TimeoutError, requests.Timeout, redis.TimeoutError)


class ProbeFailure(Exception):
    """The dependency answered, but not as a healthy one does (wrong status code, bad body)."""


@dataclass(frozen=True)
class BodyCheck:
    """A JSON health body: the value at dotted `field` must be one of `healthy` (or `degraded`)."""

    field: str = "status"
    healthy: list[str] = dataclasses.field(default_factory=lambda: ["ok", "pass", "healthy", "up"])
    degraded: list[str] = dataclasses.field(default_factory=lambda: ["degraded", "warn"])


@dataclass(frozen=True)
class ProbeSpec:
    """How to probe one service (the service name is its key in the config): what, where, how often."""

    kind: Literal["http", "redis", "sql", "tcp"] = "http"
    target: str = ""  # URL for http/redis/sql, host:port for tcp
    interval_seconds: float = checked(15.0, positive)
    timeout_seconds: float = checked(5.0, positive)
    degraded_after_seconds: float | None = None  # slower than this (but answered) counts as degraded
    expect_status: list[int] = dataclasses.field(default_factory=lambda: [200])
    body: BodyCheck | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    # redis: the ACL user and passwords, as in every service's redis section (the URL carries none)
    username: str = ""
    password: str = secret()
    sentinel_password: str = secret()


@dataclass(frozen=True)
class ProbeReport:
    """A probe that completed: `degraded` when the dependency itself said so; `detail` for logs."""

    degraded: bool = False
    detail: str = ""


def grade(attempt: Attempt[ProbeReport], degraded_after_seconds: float | None) -> tuple[str, str]:
    """(status, outcome) of one attempt: status in STATUSES, outcome in OUTCOMES."""
    if attempt.timed_out or isinstance(attempt.error, CLIENT_TIMEOUTS):
        return "down", "timeout"
    if attempt.error is not None or attempt.value is None:
        return "down", "failure"
    too_slow = degraded_after_seconds is not None and attempt.duration_seconds > degraded_after_seconds
    if attempt.value.degraded or too_slow:
        return "degraded", "degraded"
    return "healthy", "success"


def lookup(document: Any, dotted: str) -> Any:
    """Value at a dotted path ("status.indicator") in parsed JSON; ProbeFailure if it is not there."""
    value = document
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ProbeFailure(f"health body has no field {dotted!r}")
        value = value[part]
    return value


def http_probe(spec: ProbeSpec) -> Callable[[], ProbeReport]:
    session = requests.Session()

    def probe() -> ProbeReport:
        response = session.get(spec.target, timeout=spec.timeout_seconds, headers=spec.headers, allow_redirects=False)
        if response.status_code not in spec.expect_status:
            raise ProbeFailure(f"HTTP {response.status_code}")
        if spec.body is None:
            return ProbeReport(detail=f"HTTP {response.status_code}")
        try:
            document = response.json()
        except ValueError as error:
            raise ProbeFailure("health body is not JSON") from error
        value = str(lookup(document, spec.body.field))
        if value in spec.body.healthy:
            return ProbeReport(detail=value)
        if value in spec.body.degraded:
            return ProbeReport(degraded=True, detail=value)
        raise ProbeFailure(f"health body says {spec.body.field}={value!r}")

    return probe


def redis_probe(spec: ProbeSpec) -> Callable[[], ProbeReport]:
    """PING in any topology (service_kit.redis_connect): the primary a Sentinel names, or every primary
    of a cluster (one that does not answer fails the probe: its clients are served without limits)."""
    connection = RedisConnection(spec.target, spec.username, spec.password, spec.sentinel_password)
    client = connect(connection, timeout_seconds=spec.timeout_seconds)

    def probe() -> ProbeReport:
        if client.ping() is not True:
            raise ProbeFailure("PING did not answer PONG")
        return ProbeReport(detail="PONG")

    return probe


def sql_probe(spec: ProbeSpec) -> Callable[[], ProbeReport]:
    engine = read_only_engine(spec.target, spec.timeout_seconds)

    def probe() -> ProbeReport:
        with engine.connect() as connection:
            if connection.execute(sqlalchemy.text("SELECT 1")).scalar() != 1:
                raise ProbeFailure("SELECT 1 did not return 1")
        return ProbeReport(detail="SELECT 1")

    return probe


def tcp_address(target: str) -> tuple[str, int]:
    """(host, port) of a "host:port" target; ValueError naming the problem."""
    address = urlsplit(f"//{target}")
    if address.hostname is None or address.port is None:
        raise ValueError(f"host:port, got {target!r}")
    return address.hostname, address.port


TARGET_SCHEMES = {"http": ("http", "https")}


def check_target(kind: str, target: str) -> None:
    """Raise ValueError when `target` cannot be a target of this kind of probe (checked at start-up)."""
    if not target:
        raise ValueError("a target (URL, or host:port for tcp)")
    if kind == "tcp":
        tcp_address(target)
    elif kind == "sql":
        try:
            sqlalchemy.make_url(target)
        except sqlalchemy.exc.ArgumentError as error:
            raise ValueError(f"a SQLAlchemy URL, got {target!r}") from error
    elif kind == "redis":
        if expected := redis_url_check(target):
            raise ValueError(f"{expected}, got {target!r}")
    elif urlsplit(target).scheme not in TARGET_SCHEMES[kind]:
        raise ValueError(f"a {' or '.join(TARGET_SCHEMES[kind])} URL, got {target!r}")


def tcp_probe(spec: ProbeSpec) -> Callable[[], ProbeReport]:
    host, port = tcp_address(spec.target)

    def probe() -> ProbeReport:
        with socket.create_connection((host, port), timeout=spec.timeout_seconds):
            return ProbeReport(detail="connected")

    return probe


PROBE_FACTORIES: dict[str, Callable[[ProbeSpec], Callable[[], ProbeReport]]] = {
    "http": http_probe,
    "redis": redis_probe,
    "sql": sql_probe,
    "tcp": tcp_probe,
}


def build_probe(spec: ProbeSpec) -> Callable[[], ProbeReport]:
    """The probe callable for a spec (clients and engines are created once and reused)."""
    return PROBE_FACTORIES[spec.kind](spec)
