"""Schedules of saved reports and their runs: ``/api/v1/schedules…`` and ``/api/v1/runs/<id>/pdf``.

A schedule follows its report's access: whoever may change the report may schedule it, whoever may see it
sees its schedules, runs and PDFs. Changes are audited (``schedule.create``, ``schedule.update``,
``schedule.delete``, ``schedule.run``). The sweep that runs them is reports_service.scheduler.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from reports_service.api import BEARER, api
from reports_service.errors import ReportNotFoundError, RunNotFoundError, ScheduleNotFoundError
from reports_service.reports_api import editable_report, principal, visible_report
from reports_service.scheduler import Scheduler, cron_problem, next_after, zone
from reports_service.schemas import NewSchedule, RunList, ScheduleList, SchedulePatch
from reports_service.schemas import Run as RunModel
from reports_service.schemas import Schedule as ScheduleModel
from reports_service.storage import READER_ROLES, ReportRun, ReportSchedule, SavedReport, can_view, utcnow
from service_kit.auth import current_auth, require_role
from service_kit.db import current_db
from service_kit.errors import ValidationError

bp = Blueprint("schedules", __name__, url_prefix="/api/v1")
PDF_DOC = {
    "responses": {
        "200": {
            "description": "the run's PDF (Content-Disposition: attachment)",
            "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
        }
    }
}


def scheduler() -> Scheduler:
    found: Scheduler = current_app.extensions["reports_scheduler"]
    return found


def _check_timing(cron: str, timezone: str) -> None:
    problems = {}
    if (problem := cron_problem(cron)) is not None:
        problems["cron"] = problem
    if zone(timezone) is None:
        problems["timezone"] = "an IANA time zone such as UTC or Europe/Berlin"
    if problems:
        raise ValidationError(problems)


def visible_schedule(schedule_id: int) -> ReportSchedule:
    schedule = current_db().session.get(ReportSchedule, schedule_id)
    if schedule is None:
        raise ScheduleNotFoundError(schedule_id)
    report = current_db().session.get(SavedReport, schedule.report_id)
    if report is None or not can_view(principal(), report):
        raise ScheduleNotFoundError(schedule_id)
    return schedule


@bp.get("/schedules")
@require_role(*READER_ROLES)
@api.validate(responses={200: ScheduleList}, tags=("schedules",), security=BEARER)
def list_schedules() -> ResponseReturnValue:
    """The schedules of every report the caller may see."""
    session = current_db().session
    caller = principal()
    rows = session.execute(
        select(ReportSchedule, SavedReport)
        .join(SavedReport, SavedReport.id == ReportSchedule.report_id)
        .order_by(ReportSchedule.id)
    ).all()
    return jsonify({"data": [schedule.as_dict() for schedule, report in rows if can_view(caller, report)]})


@bp.post("/schedules")
@require_role(*READER_ROLES)
@api.validate(
    json=NewSchedule,
    responses={201: ScheduleModel},
    tags=("schedules",),
    security=BEARER,
    extra={404: "no such report, or one the caller may not see"},
)
def create_schedule() -> ResponseReturnValue:
    """Schedule a report (its owner or an admin); the first run is the cron's next occurrence."""
    body: NewSchedule = request.context.json  # type: ignore[attr-defined]
    report = editable_report(body.report_id)
    _check_timing(body.cron, body.timezone)
    session = current_db().session
    schedule = ReportSchedule(
        report_id=report.id,
        cron=" ".join(body.cron.split()),
        timezone=body.timezone,
        recipients=list(dict.fromkeys(body.recipients)),
        enabled=body.enabled,
        next_run_at=next_after(body.cron, body.timezone, utcnow()),
        skipped_runs=0,
        created_by=principal().id,
    )
    session.add(schedule)
    session.flush()
    current_auth().record("schedule.create", "report_schedule", schedule.id, after=schedule.as_dict())
    session.commit()
    return jsonify(schedule.as_dict()), 201


@bp.get("/schedules/<int:schedule_id>")
@require_role(*READER_ROLES)
@api.validate(responses={200: ScheduleModel}, tags=("schedules",), security=BEARER)
def get_schedule(schedule_id: int) -> ResponseReturnValue:
    return jsonify(visible_schedule(schedule_id).as_dict())


@bp.patch("/schedules/<int:schedule_id>")
@require_role(*READER_ROLES)
@api.validate(json=SchedulePatch, responses={200: ScheduleModel}, tags=("schedules",), security=BEARER)
def update_schedule(schedule_id: int) -> ResponseReturnValue:
    """Change the timing, recipients or state; a new cron or time zone starts from its next occurrence."""
    body: SchedulePatch = request.context.json  # type: ignore[attr-defined]
    schedule = visible_schedule(schedule_id)
    editable_report(schedule.report_id)
    before = schedule.as_dict()
    cron = " ".join(body.cron.split()) if body.cron is not None else schedule.cron
    timezone = body.timezone if body.timezone is not None else schedule.timezone
    _check_timing(cron, timezone)
    if (cron, timezone) != (schedule.cron, schedule.timezone) or (body.enabled and not schedule.enabled):
        schedule.next_run_at = next_after(cron, timezone, utcnow())  # no catch-up for time it was paused
    schedule.cron, schedule.timezone = cron, timezone
    if body.recipients is not None:
        schedule.recipients = list(dict.fromkeys(body.recipients))
    if body.enabled is not None:
        schedule.enabled = body.enabled
    current_auth().record("schedule.update", "report_schedule", schedule.id, before=before, after=schedule.as_dict())
    current_db().session.commit()
    return jsonify(schedule.as_dict())


@bp.delete("/schedules/<int:schedule_id>")
@require_role(*READER_ROLES)
@api.validate(responses={204: None}, tags=("schedules",), security=BEARER)
def delete_schedule(schedule_id: int) -> ResponseReturnValue:
    """Delete a schedule; its runs and PDFs stay with the report."""
    schedule = visible_schedule(schedule_id)
    editable_report(schedule.report_id)
    session = current_db().session
    current_auth().record("schedule.delete", "report_schedule", schedule.id, before=schedule.as_dict())
    session.delete(schedule)
    session.commit()
    return "", 204


@bp.post("/schedules/<int:schedule_id>/run")
@require_role(*READER_ROLES)
@api.validate(responses={201: RunModel}, tags=("schedules",), security=BEARER)
def run_schedule(schedule_id: int) -> ResponseReturnValue:
    """Run a schedule's report now and mail it to its recipients (its report's owner or an admin). The run
    is recorded (and its failure too: ``status`` and ``error``); the schedule's timing does not change."""
    schedule = visible_schedule(schedule_id)
    report = editable_report(schedule.report_id)
    session = current_db().session
    run = scheduler().run(session(), report, utcnow(), "manual", schedule)
    current_auth().record("schedule.run", "report_schedule", schedule.id, after=run.as_dict())
    session.commit()
    return jsonify(run.as_dict()), 201


@bp.get("/schedules/<int:schedule_id>/runs")
@require_role(*READER_ROLES)
@api.validate(responses={200: RunList}, tags=("schedules",), security=BEARER)
def list_runs(schedule_id: int) -> ResponseReturnValue:
    """The schedule's latest 100 runs, newest first."""
    schedule = visible_schedule(schedule_id)
    runs = current_db().session.scalars(
        select(ReportRun).where(ReportRun.schedule_id == schedule.id).order_by(ReportRun.id.desc()).limit(100)
    )
    return jsonify({"data": [run.as_dict() for run in runs]})


@bp.get("/runs/<int:run_id>/pdf")
@require_role(*READER_ROLES)
@api.validate(responses={200: None}, tags=("schedules",), security=BEARER, openapi=PDF_DOC, validate_responses=False)
def run_pdf(run_id: int) -> ResponseReturnValue:
    """Download the PDF a run rendered (kept ``reports.keep_runs_days``)."""
    run = current_db().session.get(ReportRun, run_id)
    if run is None or run.pdf is None:
        raise RunNotFoundError(run_id)
    try:
        visible_report(run.report_id)
    except ReportNotFoundError:
        raise RunNotFoundError(run_id) from None
    filename = f"report-{run.report_id}-run-{run.id}.pdf"
    return Response(
        run.pdf,
        content_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
