"""The kit's periodic jobs on a real SQLite file and a real PostgreSQL: one run per occurrence, whoever asks."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from prometheus_client import CollectorRegistry
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from service_kit.app import ServiceKit
from service_kit.config import ConfigError, load_settings
from service_kit.db import Database, KitBase, make_engine, upgrade
from service_kit.jobs import Jobs, JobSchedule
from service_kit.settings import JobsSettings
from tickets_app.settings import TicketsSettings

FAST = JobsSettings(poll_seconds=0.05, stalled_seconds=1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database with a `runs` table the test jobs write to (one row per run, with its runner)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_server").fresh_database("jobs")
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE runs (runner VARCHAR(40) NOT NULL, at FLOAT NOT NULL)"))
    engine.dispose()
    return url


@dataclass
class Runner:
    """One runner as a service builds it, and the registry its metrics went to."""

    jobs: Jobs
    registry: CollectorRegistry

    def sample(self, metric: str, job: str, **labels: str) -> float | None:
        value: float | None = self.registry.get_sample_value(metric, {"service": "example", "task": job, **labels})
        return value

    def runs(self) -> list[tuple[str, float]]:
        """(runner, time) of every run any runner committed, oldest first."""
        with self.jobs.db.new_session() as session:
            return [(row[0], row[1]) for row in session.execute(text("SELECT runner, at FROM runs ORDER BY at"))]

    def schedule(self, name: str) -> JobSchedule:
        with self.jobs.db.new_session() as session:
            row = session.get(JobSchedule, name)
            assert row is not None
            return row

    def set_due(self, name: str, due: datetime) -> None:
        with self.jobs.db.new_session() as session:
            session.execute(update(JobSchedule).where(JobSchedule.name == name).values(next_due_at=due))
            session.commit()


Maker = Callable[..., Runner]


@pytest.fixture
def make_jobs(database_url: str) -> Iterator[Maker]:
    """Runners of the kit's shape (a Flask app with the kit, a Database, Jobs), each with its own engine."""
    made: list[Jobs] = []

    def make(runner: str, **jobs: tuple[float, Callable[[Session], object]]) -> Runner:
        app = Flask(__name__)
        kit = ServiceKit("example")
        kit.init_app(app)
        db = Database()
        db.init_app(app, database_url)
        runner_jobs = Jobs(db, FAST, runner=runner)
        for name, (every, run) in jobs.items():
            runner_jobs.add(name, every, run)
        runner_jobs.init_app(app)
        made.append(runner_jobs)
        return Runner(runner_jobs, kit.metrics.registry)

    yield make
    for jobs in made:
        jobs.stop()
        assert jobs.db.engine is not None
        jobs.db.engine.dispose()


def record(runner: str, pause: float = 0.0) -> Callable[[Session], None]:
    """A job that writes one row, then optionally stays inside its transaction for `pause` seconds."""

    def run(session: Session) -> None:
        session.execute(
            text("INSERT INTO runs (runner, at) VALUES (:runner, :at)"), {"runner": runner, "at": time.time()}
        )
        time.sleep(pause)

    return run


def aware(value: datetime | None) -> datetime:
    assert value is not None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_a_new_job_runs_at_once_then_once_per_interval(make_jobs: Maker) -> None:
    runner = make_jobs("a", sweep=(60, record("a")))
    before = datetime.now(UTC)
    runner.jobs.run_due()
    runner.jobs.run_due()  # not due again for a minute
    assert [name for name, _ in runner.runs()] == ["a"]
    row = runner.schedule("sweep")
    assert row.last_runner == "a"
    assert before <= aware(row.last_started_at) <= aware(row.last_success_at)
    ahead = aware(row.next_due_at) - aware(row.last_started_at)
    assert timedelta(seconds=59) < ahead <= timedelta(seconds=60)  # due time + interval, not start + interval


def test_runners_racing_on_one_database_run_each_occurrence_once(make_jobs: Maker) -> None:
    """Three runners (as three workers or replicas) for 2.2 s, a job every 0.4 s: exactly one run each time."""
    runners = [make_jobs(name, tick=(0.4, record(name))) for name in ("a", "b", "c")]
    for runner in runners:
        runner.jobs.start()
    time.sleep(2.2)
    for runner in runners:
        runner.jobs.stop()
    starts = [at for _, at in runners[0].runs()]
    # at 0, 0.4, …, 2.0 s, give or take the edges; a loaded machine may start some late (fewer, closer runs),
    # but a doubled occurrence would add runs and show as two starts milliseconds apart
    assert 3 <= len(starts) <= 7
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) > 0.1


def test_a_job_held_by_one_runner_is_not_run_by_another(make_jobs: Maker) -> None:
    first = make_jobs("first", slow=(60, record("first", pause=0.8)))
    second = make_jobs("second", slow=(60, record("second")))
    first.jobs.run_due()  # creates the row and runs the first occurrence
    first.set_due("slow", datetime.now(UTC) - timedelta(seconds=1))
    holder = threading.Thread(target=first.jobs.run_due)
    holder.start()
    time.sleep(0.3)  # first is inside the job now
    second.jobs.run_due()  # PostgreSQL: skips the held row; SQLite: waits for the write lock, then finds it run
    holder.join()
    assert [name for name, _ in first.runs()] == ["first", "first"]
    assert second.sample("jobs_wait_seconds_count", "slow") == 0


def test_job_metrics_never_carry_the_labels_prometheus_gives_the_target(make_jobs: Maker) -> None:
    """A metric's own ``job`` label is renamed ``exported_job`` on scrape (honor_labels is off), so the
    dashboards and alerts would never find it: the job's name is the ``task`` label."""
    runner = make_jobs("only", slow=(60, record("only")))
    runner.jobs.run_due()
    names = {name for family in runner.registry.collect() for sample in family.samples for name in sample.labels}
    assert "task" in names
    assert not names & {"job", "instance"}


def test_a_failing_job_is_rolled_back_counted_and_tried_again_next_interval(make_jobs: Maker) -> None:
    def fails(session: Session) -> None:
        record("x")(session)
        raise RuntimeError("report service down")

    runner = make_jobs("a", report=(60, fails))
    runner.jobs.run_due()
    assert runner.runs() == []  # its write was rolled back with it
    row = runner.schedule("report")
    assert row.last_success_at is None
    assert aware(row.next_due_at) > datetime.now(UTC)  # not retried in a loop
    assert runner.sample("jobs_failures_total", "report") == 1
    assert runner.sample("jobs_run_seconds_count", "report") == 1
    runner.jobs.run_due()
    assert runner.sample("jobs_failures_total", "report") == 1  # not due again before its interval
    runner.set_due("report", datetime.now(UTC) - timedelta(seconds=1))  # the interval has passed
    runner.jobs.run_due()
    assert runner.sample("jobs_failures_total", "report") == 2


def test_metrics_wait_run_depth_and_last_success(make_jobs: Maker) -> None:
    runner = make_jobs("a", sweep=(60, record("a")), other=(60, record("a")))
    assert runner.sample("jobs_failures_total", "sweep") == 0  # present before any run
    assert runner.sample("jobs_queue_depth", "sweep") is None  # no schedule row before the first pass
    runner.jobs.run_due()
    runner.set_due("sweep", datetime.now(UTC) - timedelta(seconds=5))
    assert runner.sample("jobs_queue_depth", "sweep") == 1
    assert runner.sample("jobs_queue_depth", "other") == 0
    runner.jobs.run_due()
    assert runner.sample("jobs_queue_depth", "sweep") == 0
    assert runner.sample("jobs_wait_seconds_count", "sweep") == 2
    assert runner.sample("jobs_wait_seconds_bucket", "sweep", le="2.5") == 1  # milliseconds, then 5 s overdue
    assert runner.sample("jobs_run_seconds_count", "sweep") == 2
    last = runner.sample("jobs_last_success_timestamp_seconds", "sweep")
    assert last is not None and abs(last - time.time()) < 5


def test_a_shortened_interval_takes_effect_at_once(make_jobs: Maker) -> None:
    make_jobs("old", report=(3600, record("old"))).jobs.run_due()
    runner = make_jobs("new", report=(60, record("new")))
    runner.jobs.run_due()
    assert aware(runner.schedule("report").next_due_at) <= datetime.now(UTC) + timedelta(seconds=60)


def test_schedule_rows_are_shared_not_per_runner(make_jobs: Maker) -> None:
    make_jobs("a", sweep=(60, record("a"))).jobs.run_due()
    runner = make_jobs("b", sweep=(60, record("b")))
    runner.jobs.run_due()
    with runner.jobs.db.new_session() as session:
        assert session.scalars(select(JobSchedule.name)).all() == ["sweep"]
    assert [name for name, _ in runner.runs()] == ["a"]


@pytest.mark.integration
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_runner_silent_inside_a_job_is_ended_and_the_job_taken_over(make_jobs: Maker) -> None:
    """A runner that stalls inside a job (a frozen host keeps its connection open) past stalled_seconds
    loses it to another runner, and its late commit fails: the occurrence still runs once."""
    stalled = make_jobs("stalled", report=(60, record("stalled", pause=1.8)))
    survivor = make_jobs("survivor", report=(60, record("survivor")))
    with stalled.jobs.db.new_session() as session:  # due now; the stalled runner pauses 1.8 s inside it
        session.add(JobSchedule(name="report", next_due_at=datetime.now(UTC)))
        session.commit()
    holder = threading.Thread(target=stalled.jobs.run_due)
    holder.start()
    started = time.time()
    survivor.jobs.start()
    holder.join()
    survivor.jobs.stop()
    assert [name for name, _ in survivor.runs()] == ["survivor"]
    took_over = survivor.runs()[0][1] - started
    assert 0.9 <= took_over < FAST.stalled_seconds + 0.5  # once PostgreSQL ended it, within a poll or so
    assert stalled.sample("jobs_failures_total", "report") == 1


@pytest.mark.parametrize(
    ("name", "every", "message"),
    [
        ("Sweep", 1, "lower-case"),
        ("sla-sweep", 1, "lower-case"),
        ("x" * 65, 1, "lower-case"),
        ("sweep", 0, "positive"),
        ("dup", 1, "already registered"),
    ],
)
def test_add_refuses_bad_jobs(name: str, every: float, message: str) -> None:
    jobs = Jobs(Database(), JobsSettings())
    jobs.add("dup", 1, record("a"))
    with pytest.raises(ValueError, match=message):
        jobs.add(name, every, record("a"))


def test_schedule_migration_matches_model(database_url: str) -> None:
    """The kit's migration creates the table `JobSchedule` describes, on both backends."""
    engine = make_engine(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"include_object": lambda _o, name, kind, _r, _c: kind != "table" or name == "service_kit_jobs"},
        )
        assert compare_metadata(context, KitBase.metadata) == []
    engine.dispose()


@pytest.mark.parametrize(
    ("yaml", "key"),
    [("jobs:\n  stalled_seconds: 0.5\n", "jobs.stalled_seconds"), ("jobs:\n  poll_seconds: 0\n", "jobs.poll_seconds")],
)
def test_bad_jobs_settings_name_the_key_and_file(tmp_path: Path, yaml: str, key: str) -> None:
    path = tmp_path / "tickets.yml"
    path.write_text(yaml)
    with pytest.raises(ConfigError) as caught:
        load_settings(TicketsSettings, path, "TICKETS", environ={})
    assert caught.value.key == key
    assert str(path) in str(caught.value)
