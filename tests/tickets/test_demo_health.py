"""The demo desk `make up` starts with is a healthy one: no support alert's condition holds on it.

The desk's own collector reads the demo database as the SLA sweep moves it forward in 5-minute steps, and
promtool evaluates the repository's support alerts (and the recording rules they use) over those series,
as Prometheus would over a fresh start left alone for a working day.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from tickets_app.demo import HEALTHY_FOR, seed
from tickets_app.desk import Desk
from tickets_app.metrics import OPEN_STATUSES, SupportCollector
from tickets_app.models import Base, Ticket
from tickets_app.search import SqliteFtsIndex

REPO = Path(__file__).resolve().parents[2]
STEP = timedelta(minutes=5)
SUPPORT_ALERTS = [
    rule["alert"]
    for group in yaml.safe_load((REPO / "alert_rules" / "support.yml").read_text())["groups"]
    for rule in group["rules"]
]
RECORDING = yaml.safe_load((REPO / "alert_rules" / "recording.yml").read_text())
RECORDING_GROUPS = [group["name"] for group in RECORDING["groups"]]
# Most policies' clocks run in Berlin business hours: a start as the office opens lets the most deadlines
# pass in a day (seeding takes 10-20 s, so one start).
START = datetime(2026, 11, 24, 8, 5, tzinfo=UTC)
pytestmark = pytest.mark.slow


@dataclass
class DemoDesk:
    session: Session
    desk: Desk
    start: datetime


def demo_series(session: Session, desk: Desk, start: datetime, steps: int) -> dict[str, list[float]]:
    """The desk's metrics as Prometheus would scrape them every STEP from `start` while the sweep runs."""
    series: dict[str, list[float]] = {}
    for step in range(steps):
        moment = start + step * STEP
        desk.sweep(session, moment)
        session.flush()
        collector = SupportCollector(lambda: session, timedelta(seconds=desk.at_risk_seconds), lambda at=moment: at)
        for family in collector.collect():
            for sample in family.samples:
                labels = {"job": "tickets", "instance": "127.0.0.1:8081", **sample.labels}
                selector = ",".join(f'{name}="{value}"' for name, value in sorted(labels.items()))
                series.setdefault(f"{sample.name}{{{selector}}}", []).append(sample.value)
    return series


@pytest.fixture(scope="module")
def demo_desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoDesk]:
    """The demo as `vibelux-tickets demo` fills it (its default size), seeded at START."""
    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('demo') / 'desk.sqlite3'}")
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        SqliteFtsIndex().create(connection)
    desk = Desk(SqliteFtsIndex(), at_risk_seconds=3600, auto_close_days=4)
    with Session(engine) as session:
        seed(session, desk, now=START)
        yield DemoDesk(session, desk, START)
    engine.dispose()


def test_demo_leaves_no_urgent_ticket_unassigned(demo_desk: DemoDesk) -> None:
    unassigned = select(func.count()).where(
        Ticket.status.in_(OPEN_STATUSES), Ticket.priority == "urgent", Ticket.assignee_id.is_(None)
    )
    assert demo_desk.session.scalar(unassigned) == 0


def test_no_support_alert_fires_in_the_demos_first_working_day(demo_desk: DemoDesk, tmp_path: Path) -> None:
    session, desk, start = demo_desk.session, demo_desk.desk, demo_desk.start
    steps = int(HEALTHY_FOR / STEP) + 1
    series = demo_series(session, desk, start, steps)
    minutes = [int(step * STEP.total_seconds() // 60) for step in range(0, steps, 3)]
    unit_test = {
        "rule_files": [str(REPO / "alert_rules" / "recording.yml"), str(REPO / "alert_rules" / "support.yml")],
        "evaluation_interval": "1m",
        "group_eval_order": [*RECORDING_GROUPS, "vibelux-support.alerts"],
        "tests": [
            {
                "interval": f"{int(STEP.total_seconds() // 60)}m",
                "input_series": [
                    {"series": name, "values": " ".join(f"{value:g}" for value in values)}
                    for name, values in series.items()
                ],
                "alert_rule_test": [
                    {"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": []}
                    for alert in SUPPORT_ALERTS
                    for minute in minutes
                ],
            }
        ],
    }
    path = tmp_path / "demo_test.yml"
    path.write_text(yaml.safe_dump(unit_test))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
