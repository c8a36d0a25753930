"""A report as a document: HTML (a Jinja template with the charts inline as PNG data), then PDF through
weasyprint, which lays out HTML and CSS itself (Pango for text): no browser, so none of the headless
browser timeouts and driver mismatches that break scheduled reports elsewhere."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from reports_service.charts import chart_figures, render
from reports_service.query import Result, iso

TEMPLATES = Path(__file__).with_name("templates")
MAX_PDF_ROWS = 500
_environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))


@dataclass(frozen=True)
class Document:
    html: str
    pdf: bytes
    seconds: float


def report_html(
    name: str, description: str, spec: dict[str, Any], result: Result, generated: datetime, dpi: int
) -> str:
    """The HTML of a report; every value is escaped by the template (autoescape)."""
    charts = [
        "data:image/png;base64," + base64.b64encode(render(figure, "png", dpi)).decode("ascii")
        for figure in chart_figures(result, name)
    ]
    start, end = result.title_range
    if len(result.rows) > MAX_PDF_ROWS:  # a document, not a data export: CSV and JSON carry every row
        result = replace(result, rows=result.rows[:MAX_PDF_ROWS], truncated=True)
    return _environment.get_template("report.html").render(
        name=name,
        description=description,
        spec=spec,
        result=result,
        charts=charts,
        start=iso(start),
        end=iso(end),
        generated=iso(generated),
        cell=_cell,
    )


def _cell(value: Any, unit: str | None) -> str:
    if value is None:
        return ""
    if unit == "ratio" and isinstance(value, int | float):
        return f"{value * 100:.1f}%"
    if unit == "usd" and isinstance(value, int | float):
        return f"${value:,.2f}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_pdf(
    name: str, description: str, spec: dict[str, Any], result: Result, generated: datetime, dpi: int = 110
) -> Document:
    """HTML, then PDF; ``seconds`` is the whole rendering (charts included)."""
    from weasyprint import HTML  # imported on first use: it loads Pango, which only rendering needs

    started = time.perf_counter()
    html = report_html(name, description, spec, result, generated, dpi)
    pdf = HTML(string=html, base_url=str(TEMPLATES)).write_pdf()
    assert pdf is not None
    return Document(html, pdf, time.perf_counter() - started)
