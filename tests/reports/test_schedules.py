"""Schedules: cron occurrences (pure), catch-up after downtime with a limit, exactly one run per occurrence
across replicas, a runner killed mid-run losing nothing, validation and access."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from reports_service.app import create_app
from reports_service.scheduler import Scheduler, message_id, next_after, plan_occurrences
from reports_service.settings import ReportsSettings
from reports_service.storage import ReportRun, ReportSchedule, utcnow
from service_kit.jobs import JobSchedule
from tests.reports.conftest import with_reports

T0 = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)  # a Monday


def test_next_after_is_strictly_after_and_follows_the_time_zone() -> None:
    assert next_after("0 7 * * 1", "UTC", T0) == T0 + timedelta(weeks=1)
    assert next_after("0 7 * * 1", "UTC", T0 - timedelta(seconds=1)) == T0
    # 07:00 in Berlin is 06:00 UTC in winter
    assert next_after("0 7 * * *", "Europe/Berlin", T0) == datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def test_plan_runs_the_due_occurrence_alone_when_nothing_was_missed() -> None:
    plan = plan_occurrences("*/15 * * * *", "UTC", T0, T0 + timedelta(minutes=3), catch_up_limit=3)
    assert plan.run == [T0] and plan.skipped == 0


def test_plan_after_downtime_keeps_the_latest_occurrences_up_to_the_limit_and_skips_the_rest() -> None:
    # down from 07:00 to 08:10: 07:00, 07:15, … 08:00 were due (5 occurrences)
    plan = plan_occurrences("*/15 * * * *", "UTC", T0, T0 + timedelta(minutes=70), catch_up_limit=2)
    assert plan.run == [T0 + timedelta(minutes=30), T0 + timedelta(minutes=45), T0 + timedelta(minutes=60)]
    assert plan.skipped == 2
    assert plan_occurrences("*/15 * * * *", "UTC", T0, T0 + timedelta(minutes=70), catch_up_limit=0).run == [
        T0 + timedelta(minutes=60)
    ]


def test_plan_of_a_future_occurrence_is_empty() -> None:
    assert plan_occurrences("0 7 * * 1", "UTC", T0, T0 - timedelta(seconds=1), 3).run == []


def test_message_id_is_fixed_per_occurrence() -> None:
    assert message_id(4, T0, "reports@example.com") == "<report-4-20261130T070000Z@example.com>"


def _schedule(
    client: FlaskClient, headers: dict[str, str], report_id: int, cron: str = "*/15 * * * *"
) -> dict[str, Any]:
    response = client.post(
        "/api/v1/schedules",
        json={"report_id": report_id, "cron": cron, "recipients": ["ops@example.com"]},
        headers=headers,
    )
    assert response.status_code == 201, response.json
    schedule: dict[str, Any] = response.json  # type: ignore[assignment]
    return schedule


def _set_due(app: Flask, schedule_id: int, due: datetime) -> None:
    with Session(app.extensions["database"].engine) as session:
        session.execute(update(ReportSchedule).where(ReportSchedule.id == schedule_id).values(next_run_at=due))
        session.commit()


def _runs(app: Flask) -> list[ReportRun]:
    with Session(app.extensions["database"].engine) as session:
        return list(session.scalars(select(ReportRun).order_by(ReportRun.scheduled_for)))


def _latest_quarter(now: datetime) -> datetime:
    return now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)


def test_after_a_restart_the_missed_occurrences_run_once_up_to_the_limit(
    app: Flask, client: FlaskClient, agent: dict[str, str], create_report: Callable[..., dict[str, Any]]
) -> None:
    """The service was down for five occurrences; the first sweep after start runs the latest three
    (catch_up_limit 2 + the due one), counts two as skipped, and the next sweep runs nothing more."""
    schedule = _schedule(client, agent, create_report()["id"])
    latest = _latest_quarter(utcnow())
    _set_due(app, schedule["id"], latest - timedelta(minutes=60))
    jobs = app.extensions["jobs"]
    jobs.run_due()
    runs = _runs(app)
    assert [r.scheduled_for.replace(tzinfo=UTC) for r in runs] == [latest - timedelta(minutes=m) for m in (30, 15, 0)]
    assert [r.trigger for r in runs] == ["catch_up", "catch_up", "schedule"]
    assert {r.status for r in runs} == {"kept"}  # no SMTP host configured: rendered and kept
    after = client.get(f"/api/v1/schedules/{schedule['id']}", headers=agent).json
    assert after["skipped_runs"] == 2
    assert after["next_run_at"] == (latest + timedelta(minutes=15)).isoformat().replace("+00:00", "Z")
    registry = app.extensions["service_kit"].metrics.registry
    assert registry.get_sample_value("reports_runs_total", {"trigger": "schedule", "status": "skipped"}) == 2
    assert registry.get_sample_value("reports_runs_total", {"trigger": "catch_up", "status": "kept"}) == 2
    _set_job_due(app)
    jobs.run_due()
    assert len(_runs(app)) == 3


def _set_job_due(app: Flask) -> None:
    """Make the kit's sweep job due again at once (its interval has not passed in a fast test)."""
    with Session(app.extensions["database"].engine) as session:
        session.execute(update(JobSchedule).values(next_due_at=utcnow() - timedelta(seconds=1)))
        session.commit()


def test_a_sweep_over_its_budget_leaves_the_rest_due_without_skipping_more(
    settings: ReportsSettings, agent: dict[str, str]
) -> None:
    app = create_app(with_reports(settings, max_runs_per_sweep=2, catch_up_limit=3), start_jobs=False)
    client = app.test_client()
    from tests.reports.conftest import USAGE_SPEC

    headers = _token(app, "agent", "agent-1")
    report = client.post("/api/v1/reports", json={"name": "r", "spec": USAGE_SPEC}, headers=headers).json
    schedule = _schedule(client, headers, report["id"])
    latest = _latest_quarter(utcnow())
    _set_due(app, schedule["id"], latest - timedelta(minutes=45))  # 4 occurrences due, all within the limit
    app.extensions["jobs"].run_due()
    assert len(_runs(app)) == 2
    _set_job_due(app)
    app.extensions["jobs"].run_due()
    runs = _runs(app)
    assert [r.scheduled_for.replace(tzinfo=UTC) for r in runs] == [
        latest - timedelta(minutes=m) for m in (45, 30, 15, 0)
    ]
    assert client.get(f"/api/v1/schedules/{schedule['id']}", headers=headers).json["skipped_runs"] == 0


def _token(app: Flask, role: str, subject: str) -> dict[str, str]:
    from service_kit.auth import create_token

    with Session(app.extensions["database"].engine) as session:
        plain, _ = create_token(session, role, role, subject)
        session.commit()
    return {"Authorization": f"Bearer {plain}"}


def test_two_replicas_sweeping_at_once_run_each_occurrence_exactly_once(settings: ReportsSettings) -> None:
    """Three apps on one database (replicas, each its own runner) race, three times, over schedules that
    were down for a while: every due occurrence within the catch-up limit runs once, none twice."""
    settings = with_reports(settings, max_runs_per_sweep=50, catch_up_limit=2)
    replicas = [create_app(settings, start_jobs=False) for _ in range(3)]
    for index, replica in enumerate(replicas):
        replica.extensions["jobs"].runner = f"replica-{index}"
    first = replicas[0]
    client = first.test_client()
    headers = _token(first, "agent", "agent-1")
    from tests.reports.conftest import USAGE_SPEC

    expected: set[tuple[int, datetime]] = set()
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)  # daily: no new one during the test
    for round_ in range(3):
        for missed in (0, round_ + 2):
            report = client.post("/api/v1/reports", json={"name": "r", "spec": USAGE_SPEC}, headers=headers).json
            schedule = _schedule(client, headers, report["id"], cron="0 0 * * *")
            _set_due(first, schedule["id"], midnight - timedelta(days=missed))
            expected |= {(schedule["id"], midnight - timedelta(days=m)) for m in range(min(missed, 2) + 1)}
        _set_job_due(first)
        barrier = threading.Barrier(len(replicas))

        def sweep(replica: Flask, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            replica.extensions["jobs"].run_due()

        threads = [threading.Thread(target=sweep, args=(replica,)) for replica in replicas]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    occurrences = [(r.schedule_id, r.scheduled_for.replace(tzinfo=UTC)) for r in _runs(first)]
    assert len(occurrences) == len(set(occurrences)), "an occurrence ran twice"
    assert set(occurrences) == expected
    with Session(first.extensions["database"].engine) as session:
        runners = set(session.scalars(select(JobSchedule.last_runner)))
    assert runners <= {"replica-0", "replica-1", "replica-2"}


def test_a_runner_killed_mid_run_loses_nothing_the_next_runner_runs_it(
    app: Flask,
    settings: ReportsSettings,
    client: FlaskClient,
    agent: dict[str, str],
    create_report: Callable[..., dict[str, Any]],
) -> None:
    schedule = _schedule(client, agent, create_report()["id"])
    latest = _latest_quarter(utcnow())
    _set_due(app, schedule["id"], latest)

    class Killed(BaseException):
        """What SIGKILL does to the job's transaction: it never commits."""

    dying = create_app(settings, start_jobs=False)
    scheduler: Scheduler = dying.extensions["reports_scheduler"]
    original = scheduler.run

    def run_then_die(*args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        raise Killed()

    scheduler.run = run_then_die  # type: ignore[method-assign]
    with pytest.raises(Killed):
        dying.extensions["jobs"].run_due()
    assert _runs(app) == []  # rolled back with the claim
    app.extensions["jobs"].run_due()
    (run,) = _runs(app)
    assert run.scheduled_for.replace(tzinfo=UTC) == latest and run.status == "kept"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "every monday"}, "cron"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "0 7 * * 1 2026"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"recipients": ["not-an-address"]}, "recipients[0]"),
        ({"recipients": []}, "recipients"),
        ({"report_id": 0}, "report_id"),
    ],
)
def test_an_invalid_schedule_is_a_422_naming_the_field(
    client: FlaskClient,
    agent: dict[str, str],
    create_report: Callable[..., dict[str, Any]],
    body: dict[str, Any],
    field: str,
) -> None:
    report = create_report()
    full = {"report_id": report["id"], "cron": "0 7 * * 1", "recipients": ["ops@example.com"], **body}
    response = client.post("/api/v1/schedules", json=full, headers=agent)
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["details"]


def test_viewers_see_schedules_of_shared_reports_but_cannot_schedule_or_run_them(
    client: FlaskClient, agent: dict[str, str], viewer: dict[str, str], create_report: Callable[..., dict[str, Any]]
) -> None:
    shared = create_report(shared_with=["viewer"])
    hidden = create_report()
    visible = _schedule(client, agent, shared["id"])
    _schedule(client, agent, hidden["id"])
    assert [s["id"] for s in client.get("/api/v1/schedules", headers=viewer).json["data"]] == [visible["id"]]
    body = {"report_id": shared["id"], "cron": "0 7 * * 1", "recipients": ["a@example.com"]}
    assert client.post("/api/v1/schedules", json=body, headers=viewer).status_code == 403
    assert client.post(f"/api/v1/schedules/{visible['id']}/run", headers=viewer).status_code == 403
    ran = client.post(f"/api/v1/schedules/{visible['id']}/run", headers=agent)
    assert ran.status_code == 201 and ran.json["trigger"] == "manual" and ran.json["status"] == "kept"
    pdf = client.get(f"/api/v1/runs/{ran.json['id']}/pdf", headers=viewer)
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")


def test_pausing_and_resuming_a_schedule_starts_again_from_its_next_occurrence(
    app: Flask, client: FlaskClient, agent: dict[str, str], create_report: Callable[..., dict[str, Any]]
) -> None:
    schedule = _schedule(client, agent, create_report()["id"])
    assert (
        client.patch(f"/api/v1/schedules/{schedule['id']}", json={"enabled": False}, headers=agent).json["enabled"]
        is False
    )
    _set_due(app, schedule["id"], _latest_quarter(utcnow()) - timedelta(hours=5))
    app.extensions["jobs"].run_due()
    assert _runs(app) == []  # disabled: nothing runs
    resumed = client.patch(f"/api/v1/schedules/{schedule['id']}", json={"enabled": True}, headers=agent).json
    assert resumed["next_run_at"] > utcnow().isoformat()


def test_overdue_schedules_and_job_metrics_are_on_the_scrape(
    app: Flask, client: FlaskClient, agent: dict[str, str], create_report: Callable[..., dict[str, Any]]
) -> None:
    schedule = _schedule(client, agent, create_report()["id"])
    _schedule(client, agent, create_report()["id"])
    _set_due(app, schedule["id"], utcnow() - timedelta(hours=1))
    text = client.get("/metrics").text
    assert "reports_schedules_overdue 1.0" in text
    assert 'reports_schedules{state="enabled"} 2.0' in text
    assert 'reports_run_failures_total{stage="email"} 0.0' in text
    assert sorted(app.extensions["jobs"].jobs) == ["report_schedules", "usage_summary"]
