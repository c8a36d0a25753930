"""``vibelux-reports seed-demo``: two saved reports and one weekly schedule, once (``make up``).

The reports are shared with viewers and owned by ``demo``; the schedule mails nobody unless ``smtp.host``
is set, and keeps its PDFs for download either way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reports_service.app import MIGRATIONS
from reports_service.scheduler import next_after, spec_adapter
from reports_service.settings import ReportsSettings
from reports_service.storage import ReportSchedule, SavedReport, metadata, utcnow
from service_kit.auth import AuditRecord
from service_kit.db import make_engine, upgrade

DEMO_OWNER = "demo"
DEMO_REPORTS: list[dict[str, Any]] = [
    {
        "name": "Top customers by API calls",
        "description": "Calls, errors and refusals per customer over the last 7 days (the proxy's usage rollups).",
        "spec": {
            "source": "api_usage",
            "dimensions": ["owner", "tier"],
            "measures": ["calls", "server_errors", "refused", "avg_latency_ms"],
            "time_range": {"last_days": 7},
            "order_by": [{"field": "calls", "descending": True}],
            "limit": 20,
            "chart": "bar",
        },
    },
    {
        "name": "Weekly retention cohorts",
        "description": "Accounts by sign-up week and the share active in each week after sign-up.",
        "spec": {"source": "retention_cohorts", "cohorts": 12, "periods": 12},
    },
]
DEMO_SCHEDULE: dict[str, Any] = {"cron": "0 7 * * 1", "timezone": "UTC", "recipients": ["ops@vibelux.invalid"]}


def seed(settings: ReportsSettings) -> list[str]:
    """Create what is missing; returns the names created (empty when the demo was seeded before)."""
    engine = make_engine(settings.database.url)
    upgrade(engine, MIGRATIONS, metadata)
    created: list[str] = []
    with Session(engine) as session:
        if session.scalar(select(func.count()).select_from(SavedReport)):
            return created
        reports = []
        for entry in DEMO_REPORTS:
            spec = spec_adapter.validate_python(entry["spec"]).model_dump(mode="json")  # what the API would store
            report = SavedReport(
                name=entry["name"],
                description=entry["description"],
                spec=spec,
                owner=DEMO_OWNER,
                shared_with=["agent", "service", "viewer"],
            )
            session.add(report)
            reports.append(report)
            created.append(entry["name"])
        session.flush()
        schedule = ReportSchedule(
            report_id=reports[1].id,
            next_run_at=next_after(DEMO_SCHEDULE["cron"], DEMO_SCHEDULE["timezone"], utcnow()),
            skipped_runs=0,
            created_by=DEMO_OWNER,
            enabled=True,
            **DEMO_SCHEDULE,
        )
        session.add(schedule)
        session.flush()
        created.append(f"schedule {schedule.id} ({schedule.cron})")
        for report in reports:
            session.add(_audit("report.create", "report", report.id, report.as_dict()))
        session.add(_audit("schedule.create", "report_schedule", schedule.id, schedule.as_dict()))
        session.commit()
    engine.dispose()
    return created


def _audit(action: str, target_type: str, target_id: int, after: dict[str, Any]) -> AuditRecord:
    return AuditRecord(
        actor="cli:seed-demo",
        actor_role="admin",
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        after=after,
    )
