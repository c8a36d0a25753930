"""Health exporter: grading rule, each probe kind against real dependencies, timeouts, exposition."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client import CollectorRegistry, generate_latest

from exporters.health.collector import HealthBook, HealthCollector
from exporters.health.exporter import HealthExporter
from exporters.health.probes import (
    PROBE_FACTORIES,
    BodyCheck,
    ProbeReport,
    ProbeSpec,
    build_probe,
    check_target,
    grade,
)
from exporters.scheduling import Attempt, PeriodicJob
from service_kit.redis_connect import REDIS_ERRORS
from tests.conftest import RedisUnderTest
from tests.exporters.helpers import SLACK_SECONDS
from tests.servers import RedisServer, free_port, wait_until


def attempt(
    value: ProbeReport | None = None,
    error: BaseException | None = None,
    timed_out: bool = False,
    duration: float = 0.1,
) -> Attempt[ProbeReport]:
    return Attempt(value, error, timed_out, duration, 1_700_000_000.0)


@pytest.mark.parametrize(
    ("case", "degraded_after", "expected"),
    [
        (attempt(ProbeReport()), None, ("healthy", "success")),
        (attempt(ProbeReport(), duration=2.0), 1.0, ("degraded", "degraded")),
        (attempt(ProbeReport(), duration=0.5), 1.0, ("healthy", "success")),
        (attempt(ProbeReport(degraded=True)), None, ("degraded", "degraded")),
        (attempt(error=ConnectionError("refused")), None, ("down", "failure")),
        (attempt(error=TimeoutError("hung"), timed_out=True), None, ("down", "timeout")),
        # The probe's own client timeout, equal to the job's, can fire first (CI saw it under load).
        (attempt(error=requests.ReadTimeout("read timed out")), None, ("down", "timeout")),
        (attempt(error=requests.ConnectTimeout("connect timed out")), None, ("down", "timeout")),
        (attempt(error=redis.TimeoutError("Timeout reading from socket")), None, ("down", "timeout")),
        (attempt(error=TimeoutError("timed out")), None, ("down", "timeout")),  # socket.timeout
    ],
    ids=[
        "answered",
        "too-slow",
        "fast-enough",
        "body-says-degraded",
        "error",
        "timeout",
        "http-read-timeout",
        "http-connect-timeout",
        "redis-timeout",
        "socket-timeout",
    ],
)
def test_grade_maps_attempt_to_status_and_outcome(
    case: Attempt[ProbeReport], degraded_after: float | None, expected: tuple[str, str]
) -> None:
    assert grade(case, degraded_after) == expected


def run(spec: ProbeSpec) -> tuple[str, str, Attempt[ProbeReport]]:
    """One scheduled attempt of the spec's real probe, graded."""
    results: list[Attempt[ProbeReport]] = []
    job = PeriodicJob("test", build_probe(spec), results.append, spec.interval_seconds, spec.timeout_seconds)
    done = job.run_once()
    assert results == [done]
    return (*grade(done, spec.degraded_after_seconds), done)


BODY = BodyCheck(field="status")


@pytest.mark.parametrize(
    ("path", "body", "degraded_after", "expected"),
    [
        ("/ok", BODY, None, ("healthy", "success")),
        ("/ok", None, None, ("healthy", "success")),
        ("/degraded", BODY, None, ("degraded", "degraded")),
        ("/slow", BODY, 0.1, ("degraded", "degraded")),
        ("/nested", BodyCheck("status.indicator", healthy=["none"]), None, ("healthy", "success")),
        ("/broken-body", BODY, None, ("down", "failure")),
        ("/error", None, None, ("down", "failure")),
        ("/missing", None, None, ("down", "failure")),
        ("/ok", BodyCheck(field="version"), None, ("down", "failure")),
    ],
)
def test_http_probe_grades_status_code_body_and_latency(
    dependency_url: str,
    path: str,
    body: BodyCheck | None,
    degraded_after: float | None,
    expected: tuple[str, str],
) -> None:
    spec = ProbeSpec(
        "http",
        dependency_url + path,
        timeout_seconds=2,
        degraded_after_seconds=degraded_after,
        body=body,
    )
    status, outcome, _ = run(spec)
    assert (status, outcome) == expected


def test_http_probe_against_silent_server_times_out_within_its_timeout(silent_port: int) -> None:
    status, outcome, done = run(ProbeSpec("http", f"http://127.0.0.1:{silent_port}/", timeout_seconds=0.5))
    assert (status, outcome) == ("down", "timeout")
    assert done.duration_seconds < 0.5 + SLACK_SECONDS


def test_http_probe_against_trickling_server_is_cut_off_by_the_hard_timeout(dependency_url: str) -> None:
    started = time.perf_counter()
    status, outcome, _ = run(ProbeSpec("http", dependency_url + "/trickle", timeout_seconds=0.5))
    assert (status, outcome) == ("down", "timeout")
    assert time.perf_counter() - started < 0.5 + SLACK_SECONDS


@pytest.mark.integration
def test_redis_probe_is_healthy_then_down_when_redis_stops() -> None:
    server = RedisServer()
    server.start()
    spec = ProbeSpec("redis", server.url, timeout_seconds=0.5)
    probe = build_probe(spec)
    job_results: list[Attempt[ProbeReport]] = []
    job = PeriodicJob("redis", probe, job_results.append, 1, spec.timeout_seconds)
    assert grade(job.run_once(), None) == ("healthy", "success")
    server.close()
    down = job.run_once()
    assert grade(down, None)[0] == "down"
    assert down.duration_seconds < spec.timeout_seconds + SLACK_SECONDS


def test_sql_probe_on_sqlite_file_and_on_unopenable_path(tmp_path: Path) -> None:
    database = tmp_path / "platform.sqlite3"
    sqlite3.connect(database).close()
    assert run(ProbeSpec("sql", f"sqlite:///{database}"))[:2] == ("healthy", "success")
    missing = tmp_path / "missing.sqlite3"
    assert run(ProbeSpec("sql", f"sqlite:///{missing}"))[:2] == ("down", "failure")
    assert not missing.exists()  # the probe must not create the database it checks


@pytest.mark.integration
def test_sql_probe_on_real_postgresql_is_healthy(postgres_url: str) -> None:
    assert run(ProbeSpec("sql", postgres_url, timeout_seconds=2))[:2] == ("healthy", "success")


def test_sql_probe_on_postgresql_url_with_nothing_listening_is_down() -> None:
    url = f"postgresql+psycopg://vibelux:secret@127.0.0.1:{free_port()}/platform"
    assert run(ProbeSpec("sql", url, timeout_seconds=2))[:2] == ("down", "failure")


def test_tcp_probe_connects_or_fails(silent_port: int) -> None:
    assert run(ProbeSpec("tcp", f"127.0.0.1:{silent_port}"))[:2] == ("healthy", "success")
    assert run(ProbeSpec("tcp", f"127.0.0.1:{free_port()}"))[:2] == ("down", "failure")


def test_tcp_probe_rejects_target_without_port() -> None:
    with pytest.raises(ValueError, match="host:port"):
        build_probe(ProbeSpec("tcp", "localhost"))


def test_collector_exposition_after_recorded_attempts() -> None:
    book = HealthBook(["api", "redis", "payments"])
    book.record("api", attempt(ProbeReport(), duration=0.25), 1.0)
    book.record("api", attempt(ProbeReport(), duration=1.5), 1.0)
    book.record("redis", attempt(error=TimeoutError("hung"), timed_out=True, duration=0.5), None)
    registry = CollectorRegistry()
    registry.register(HealthCollector(book))
    assert generate_latest(registry).decode() == EXPECTED_HEALTH_EXPOSITION


EXPECTED_HEALTH_EXPOSITION = """\
# HELP service_up 1 if the service answered its last probe (healthy or degraded).
# TYPE service_up gauge
service_up{service="api"} 1.0
service_up{service="redis"} 0.0
# HELP service_status Status of the service from its last probe (one-hot).
# TYPE service_status gauge
service_status{service="api",status="healthy"} 0.0
service_status{service="api",status="degraded"} 1.0
service_status{service="api",status="down"} 0.0
service_status{service="redis",status="healthy"} 0.0
service_status{service="redis",status="degraded"} 0.0
service_status{service="redis",status="down"} 1.0
# HELP service_probe_duration_seconds Duration of the last probe in seconds.
# TYPE service_probe_duration_seconds gauge
service_probe_duration_seconds{service="api"} 1.5
service_probe_duration_seconds{service="redis"} 0.5
# HELP service_probe_results_total Probe results by outcome.
# TYPE service_probe_results_total counter
service_probe_results_total{outcome="success",service="api"} 1.0
service_probe_results_total{outcome="degraded",service="api"} 1.0
service_probe_results_total{outcome="failure",service="api"} 0.0
service_probe_results_total{outcome="timeout",service="api"} 0.0
service_probe_results_total{outcome="success",service="payments"} 0.0
service_probe_results_total{outcome="degraded",service="payments"} 0.0
service_probe_results_total{outcome="failure",service="payments"} 0.0
service_probe_results_total{outcome="timeout",service="payments"} 0.0
service_probe_results_total{outcome="success",service="redis"} 0.0
service_probe_results_total{outcome="degraded",service="redis"} 0.0
service_probe_results_total{outcome="failure",service="redis"} 0.0
service_probe_results_total{outcome="timeout",service="redis"} 1.0
# HELP service_last_success_timestamp_seconds Unix time of the last answered probe (healthy or degraded).
# TYPE service_last_success_timestamp_seconds gauge
service_last_success_timestamp_seconds{service="api"} 1.7e+09
"""


def test_a_hung_probe_does_not_stall_the_others_or_the_scrape(dependency_url: str, silent_port: int) -> None:
    fast = {"interval_seconds": 0.2, "timeout_seconds": 0.5}
    exporter = HealthExporter(
        {
            "api": ProbeSpec("http", dependency_url + "/ok", interval_seconds=0.2, timeout_seconds=5),
            "ai": ProbeSpec("http", dependency_url + "/trickle", **fast),
            "payments": ProbeSpec("http", f"http://127.0.0.1:{silent_port}/", **fast),
        }
    )
    exporter.start()
    try:
        value = exporter.registry.get_sample_value
        wait_until(lambda: value("service_probe_results_total", {"service": "api", "outcome": "success"}) >= 3)
        for hung in ("ai", "payments"):
            wait_until(
                lambda hung=hung: value("service_probe_results_total", {"service": hung, "outcome": "timeout"}) >= 2
            )
        started = time.perf_counter()
        generate_latest(exporter.registry)
        assert time.perf_counter() - started < 0.25  # probes time out at 0.5 s
        assert value("service_up", {"service": "api"}) == 1.0
        assert value("service_up", {"service": "ai"}) == 0.0
        assert value("service_up", {"service": "payments"}) == 0.0
    finally:
        exporter.stop()


def test_a_failing_job_logs_when_it_starts_failing_and_when_it_recovers(caplog: pytest.LogCaptureFixture) -> None:
    outcomes = iter([ConnectionError("refused"), ConnectionError("refused"), None, None])

    def work() -> ProbeReport:
        error = next(outcomes)
        if error is not None:
            raise error
        return ProbeReport()

    job = PeriodicJob("probe-redis", work, lambda _: None, interval=1, timeout=1)
    with caplog.at_level("INFO", logger="exporters.scheduling"):
        for _ in range(4):
            job.run_once()
    assert [record.getMessage() for record in caplog.records] == [
        "probe-redis failed: ConnectionError: refused",
        "probe-redis recovered",
    ]


def test_redis_probe_pings_every_topology_with_its_password(any_redis: RedisUnderTest) -> None:
    connection = any_redis.connection
    spec = ProbeSpec(
        "redis",
        any_redis.url,
        timeout_seconds=2.0,
        password=connection.password,
        sentinel_password=connection.sentinel_password,
    )
    check_target("redis", spec.target)
    assert PROBE_FACTORIES["redis"](spec)().detail == "PONG"
    if any_redis.password:
        with pytest.raises(REDIS_ERRORS, match="invalid username-password"):
            PROBE_FACTORIES["redis"](dataclasses.replace(spec, password="wrong"))()
