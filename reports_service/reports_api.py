"""Saved reports and ad-hoc queries: ``/api/v1/catalog``, ``/api/v1/query``, ``/api/v1/reports…``.

Who may do what is in reports_service.storage (``can_view``, ``can_edit``): agents (and admins) build
reports and run ad-hoc queries; viewers and services run the reports shared with their role. Every change
to a saved report is audited (``report.create``, ``report.update``, ``report.delete``).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from reports_service.api import BEARER, api
from reports_service.catalog import COHORT_DIMENSIONS, COHORT_SOURCE, SOURCES
from reports_service.charts import chart_figures, render, to_csv
from reports_service.errors import ReportNotFoundError
from reports_service.pdf import render_pdf
from reports_service.platform import current_platform
from reports_service.query import Result, run_report
from reports_service.scheduler import spec_adapter
from reports_service.schemas import (
    Catalog,
    NewReport,
    QueryBody,
    ReportList,
    ReportPatch,
    ReportResult,
    ResultQuery,
)
from reports_service.schemas import Report as ReportModel
from reports_service.storage import AUTHOR_ROLES, READER_ROLES, SavedReport, can_edit, can_view, utcnow
from service_kit.auth import Principal, current_auth, require_role
from service_kit.db import current_db
from service_kit.errors import AuthorizationError

bp = Blueprint("reports", __name__, url_prefix="/api/v1")

CONTENT_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "png": "image/png",
    "svg": "image/svg+xml",
    "pdf": "application/pdf",
}
RESULT_DOC = {
    "responses": {
        "200": {
            "description": "the result: JSON (rows and columns), CSV, a chart (PNG, SVG) or the PDF, by `format`",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ReportResult"}},
                "text/csv": {"schema": {"type": "string"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/svg+xml": {"schema": {"type": "string"}},
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }
}
TOO_EXPENSIVE = {
    422: "a field is invalid, or the report ran past the time limit (details name spec)",
    502: "the platform database failed",
}


def principal() -> Principal:
    found = current_auth().current_principal()
    assert found is not None  # require_role ran first
    return found


def settings() -> Any:
    return current_app.extensions["reports_settings"]


def visible_report(report_id: int) -> SavedReport:
    report = current_db().session.get(SavedReport, report_id)
    if report is None or not can_view(principal(), report):
        raise ReportNotFoundError(report_id)
    return report


def editable_report(report_id: int) -> SavedReport:
    report = visible_report(report_id)
    if not can_edit(principal(), report):
        raise AuthorizationError("Only the report's owner or an admin may change it.")
    return report


@bp.get("/catalog")
@require_role(*READER_ROLES)
@api.validate(responses={200: Catalog}, tags=("reports",), security=BEARER)
def catalog() -> ResponseReturnValue:
    """The allow-list: every source with its dimensions and measures (what a spec may name)."""
    sources = [
        {
            "name": source.name,
            "description": source.description,
            "dimensions": [{"name": d.name, "description": d.description} for d in source.dimensions.values()],
            "measures": [
                {"name": m.name, "description": m.description, "unit": m.unit} for m in source.measures.values()
            ],
            "time_grains": ["hour", "day", "week", "month"],
        }
        for source in SOURCES.values()
    ]
    sources.append(
        {
            "name": COHORT_SOURCE,
            "description": "Accounts by sign-up week and the share active in each later week (a triangular grid).",
            "dimensions": [{"name": name, "description": "filter only"} for name in COHORT_DIMENSIONS],
            "measures": [{"name": "retention", "description": "share of the cohort with a session", "unit": "ratio"}],
            "time_grains": ["week"],
        }
    )
    return jsonify({"sources": sources})


def output(result: Result, fmt: str, title: str, description: str = "", spec: dict[str, Any] | None = None) -> Response:
    """``result`` as JSON, CSV, a chart or a PDF."""
    config = settings()
    if fmt == "json":
        return jsonify(result.as_json())
    if fmt == "csv":
        return Response(to_csv(result), content_type=CONTENT_TYPES["csv"])
    if fmt == "pdf":
        document = render_pdf(title, description, spec or {}, result, utcnow(), config.reports.chart_dpi)
        return Response(document.pdf, content_type=CONTENT_TYPES["pdf"])
    figure = chart_figures(result, title)[0]
    return Response(render(figure, fmt, config.reports.chart_dpi), content_type=CONTENT_TYPES[fmt])


def run(spec: Any) -> Result:
    config = settings()
    clock = time.perf_counter()
    result = run_report(
        current_platform().get_engine(),
        spec,
        utcnow(),
        config.reports.max_rows,
        config.platform.query_timeout_seconds,
        config.platform.daily_summary,
    )
    current_app.extensions["reports_metrics"].query_seconds(spec.source).observe(time.perf_counter() - clock)
    return result


@bp.post("/query")
@require_role(*AUTHOR_ROLES)
@api.validate(
    json=QueryBody,
    query=ResultQuery,
    responses={200: ReportResult},
    tags=("reports",),
    security=BEARER,
    extra=TOO_EXPENSIVE,
    openapi=RESULT_DOC,
    validate_responses=False,
)
def query() -> ResponseReturnValue:
    """Run a spec without saving it (agents and admins)."""
    body: QueryBody = request.context.json  # type: ignore[attr-defined]
    args: ResultQuery = request.context.query  # type: ignore[attr-defined]
    return output(run(body.spec), args.format, "Ad-hoc report", spec=body.spec.model_dump(mode="json"))


@bp.get("/reports")
@require_role(*READER_ROLES)
@api.validate(responses={200: ReportList}, tags=("reports",), security=BEARER)
def list_reports() -> ResponseReturnValue:
    """The saved reports the caller may see: their own, those shared with their role, all for admins."""
    caller = principal()
    reports = current_db().session.scalars(select(SavedReport).order_by(SavedReport.id))
    return jsonify({"data": [r.as_dict() for r in reports if can_view(caller, r)]})


@bp.post("/reports")
@require_role(*AUTHOR_ROLES)
@api.validate(json=NewReport, responses={201: ReportModel}, tags=("reports",), security=BEARER)
def create_report() -> ResponseReturnValue:
    """Save a report; the caller owns it. Audited as ``report.create``."""
    body: NewReport = request.context.json  # type: ignore[attr-defined]
    session = current_db().session
    report = SavedReport(
        name=body.name,
        description=body.description,
        spec=body.spec.model_dump(mode="json"),
        owner=principal().id,
        shared_with=sorted(set(body.shared_with)),
    )
    session.add(report)
    session.flush()
    current_auth().record("report.create", "report", report.id, after=report.as_dict())
    session.commit()
    return jsonify(report.as_dict()), 201


@bp.get("/reports/<int:report_id>")
@require_role(*READER_ROLES)
@api.validate(responses={200: ReportModel}, tags=("reports",), security=BEARER)
def get_report(report_id: int) -> ResponseReturnValue:
    return jsonify(visible_report(report_id).as_dict())


@bp.patch("/reports/<int:report_id>")
@require_role(*READER_ROLES)
@api.validate(json=ReportPatch, responses={200: ReportModel}, tags=("reports",), security=BEARER)
def update_report(report_id: int) -> ResponseReturnValue:
    """Change a report (its owner or an admin). Audited as ``report.update`` with before and after."""
    body: ReportPatch = request.context.json  # type: ignore[attr-defined]
    report = editable_report(report_id)
    before = report.as_dict()
    if body.name is not None:
        report.name = body.name
    if body.description is not None:
        report.description = body.description
    if body.spec is not None:
        report.spec = body.spec.model_dump(mode="json")
    if body.shared_with is not None:
        report.shared_with = sorted(set(body.shared_with))
    report.updated_at = utcnow()
    current_auth().record("report.update", "report", report.id, before=before, after=report.as_dict())
    current_db().session.commit()
    return jsonify(report.as_dict())


@bp.delete("/reports/<int:report_id>")
@require_role(*READER_ROLES)
@api.validate(responses={204: None}, tags=("reports",), security=BEARER)
def delete_report(report_id: int) -> ResponseReturnValue:
    """Delete a report with its schedules and runs (its owner or an admin). Audited as ``report.delete``."""
    report = editable_report(report_id)
    session = current_db().session
    current_auth().record("report.delete", "report", report.id, before=report.as_dict())
    session.delete(report)
    session.commit()
    return "", 204


@bp.get("/reports/<int:report_id>/result")
@require_role(*READER_ROLES)
@api.validate(
    query=ResultQuery,
    responses={200: ReportResult},
    tags=("reports",),
    security=BEARER,
    extra=TOO_EXPENSIVE,
    openapi=RESULT_DOC,
    validate_responses=False,
)
def report_result(report_id: int) -> ResponseReturnValue:
    """Run a saved report now: JSON, CSV, a chart (PNG, SVG) or the PDF (``format``)."""
    args: ResultQuery = request.context.query  # type: ignore[attr-defined]
    report = visible_report(report_id)
    spec = spec_adapter.validate_python(report.spec)
    return output(run(spec), args.format, report.name, report.description, report.spec)
