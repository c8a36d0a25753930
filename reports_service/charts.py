"""A report's outputs besides JSON: CSV text, and charts drawn with matplotlib (PNG or SVG).

Charts use matplotlib's object API (``Figure`` with the Agg canvas), never pyplot: pyplot keeps global
state, which the request threads of one worker would share. A table report gets one chart: the first
measure along y; along x the time bucket, with the next dimension as series (the largest eight, the rest
summed as "other"), or without a time grain one bar per row. A cohort report gets three: the retention grid
as a heatmap (young cells blank, in-progress cells hatched), retention curves, and cohort sizes.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections import defaultdict
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from reports_service.catalog import TIME_DIMENSION
from reports_service.query import Result

# No pyplot anywhere, so no backend is chosen implicitly; Agg draws the PNGs. Names and values come from
# users and data: "$x$" in them is text, never mathtext (which can fail to parse).
matplotlib.use("Agg")
matplotlib.rcParams["text.parse_math"] = False

MAX_SERIES = 8
MAX_BARS = 60  # more bars than this are unreadable (and slow to draw)
PALETTE = ("#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#64748b")


def to_csv(result: Result) -> str:
    """RFC 4180 CSV with a header row; an empty cell for null (a cohort cell too young to have data).
    A text cell starting with = + - @ gets a leading ' so a spreadsheet does not run it as a formula."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([c.name for c in result.columns])
    for row in result.rows:
        writer.writerow(["" if v is None else _safe_cell(v) for v in row])
    return out.getvalue()


def _safe_cell(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@functools.cache
def _glyphs() -> frozenset[int]:
    """The code points the charts' font can draw."""
    from matplotlib import font_manager

    font = font_manager.get_font(font_manager.findfont(font_manager.FontProperties(family=["sans-serif"])))
    return frozenset(font.get_charmap())


def printable(text: object) -> str:
    """``text`` with what the font cannot draw (control characters, scripts it lacks) as "?": matplotlib
    would warn per missing glyph and draw empty boxes."""
    glyphs = _glyphs()
    return "".join(c if ord(c) in glyphs and c.isprintable() else "?" for c in str(text))


def chart_figures(result: Result, title: str) -> list[Figure]:
    """The figures of a report, in the order the PDF shows them."""
    title = printable(title)
    result = Result(
        result.title_range,
        result.columns,
        [[printable(v) if isinstance(v, str) else v for v in row] for row in result.rows],
        result.truncated,
        result.in_progress,
        result.elapsed_ms,
        result.kind,
        result.chart,
    )
    if result.kind == "cohort":
        return [cohort_heatmap(result, title), retention_curves(result), cohort_sizes(result)]
    return [table_chart(result, title)]


def render(figure: Figure, fmt: str, dpi: int = 110) -> bytes:
    """``fmt``: png or svg."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=dpi, metadata=_metadata(fmt))  # constrained layout: no "tight" redraw
    return buffer.getvalue()


def _metadata(fmt: str) -> dict[str, Any]:
    # no creation date: the same report gives the same bytes (and SVG has no Date key)
    return {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}


def _figure(width: float = 8.0, height: float = 4.0) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure


def table_chart(result: Result, title: str) -> Figure:
    figure = _figure()
    axes = figure.add_subplot()
    dimensions = [i for i, c in enumerate(result.columns) if c.kind == "dimension"]
    measures = [i for i, c in enumerate(result.columns) if c.kind == "measure"]
    measure = measures[0]
    axes.set_title(title, fontsize=11, loc="left")
    axes.set_ylabel(_axis_label(result.columns[measure].name, result.columns[measure].unit))
    if not result.rows:
        axes.text(0.5, 0.5, "no data in this range", ha="center", va="center", transform=axes.transAxes)
        axes.set_xticks([])
        return figure
    # Over time: x is the time bucket and the next dimension makes the series. Otherwise one bar per row,
    # labelled with its dimensions (a second dimension as series would mostly leave empty slots).
    over_time = bool(dimensions) and result.columns[dimensions[0]].name == TIME_DIMENSION
    series_index = dimensions[1] if over_time and len(dimensions) > 1 else None
    xs: list[str] = []
    values: dict[str, dict[str, float]] = defaultdict(dict)
    for row in result.rows:
        x = str(row[dimensions[0]]) if over_time else (" · ".join(str(row[i]) for i in dimensions) or "all")
        if x not in xs:
            xs.append(x)
        series = "" if series_index is None else str(row[series_index])
        values[series][x] = values[series].get(x, 0.0) + _number(row[measure])
    if result.chart != "line" and len(xs) > MAX_BARS:  # the rows are ordered: the first ones matter most
        xs = xs[:MAX_BARS]
        axes.set_title(f"{title} (first {MAX_BARS} of {len(result.rows)} rows)", fontsize=11, loc="left")
    totals = sorted(values, key=lambda s: -sum(values[s].values()))
    shown, rest = totals[:MAX_SERIES], totals[MAX_SERIES:]
    if rest:
        other: dict[str, float] = defaultdict(float)
        for series in rest:
            for x, v in values[series].items():
                other[x] += v
        values["other"] = dict(other)
        shown.append("other")
    if result.chart == "line":
        for n, series in enumerate(shown):
            axes.plot(xs, [values[series].get(x, math.nan) for x in xs], label=series or None, color=_color(n))
    else:
        width = 0.8 / max(1, len(shown))
        for n, series in enumerate(shown):
            offsets = [i + (n - (len(shown) - 1) / 2) * width for i in range(len(xs))]
            axes.bar(offsets, [values[series].get(x, 0.0) for x in xs], width, label=series or None, color=_color(n))
        axes.set_xticks(range(len(xs)), xs)
    _thin_ticks(axes, len(xs))
    if series_index is not None:
        axes.legend(fontsize=8, title=result.columns[series_index].name, title_fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return figure


def cohort_heatmap(result: Result, title: str) -> Figure:
    periods = len(result.columns) - 2
    figure = _figure(8.0, 5.0)
    axes = figure.add_subplot()
    grid = [[math.nan if v is None else v * 100 for v in row[2:]] for row in result.rows]
    image = axes.imshow(grid, cmap="Blues", vmin=0, vmax=100, aspect="auto")
    axes.set_title(f"{title}: retention by sign-up week (%)", fontsize=11, loc="left")
    axes.set_xticks(range(periods), [f"W{n}" for n in range(periods)])
    axes.set_yticks(range(len(result.rows)), [f"{row[0]} ({row[1]})" for row in result.rows], fontsize=8)
    axes.set_xlabel("weeks after sign-up")
    marks = result.in_progress or []
    for y, row in enumerate(grid):
        for x, value in enumerate(row):
            if math.isnan(value):
                continue
            axes.text(
                x, y, f"{value:.0f}", ha="center", va="center", fontsize=7, color="white" if value > 60 else "black"
            )
            if marks and marks[y][x]:
                axes.add_patch(_hatch(x, y))
    figure.colorbar(image, ax=axes, fraction=0.03, label="% of the cohort active")
    return figure


def _hatch(x: int, y: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#64748b", linewidth=0)


def retention_curves(result: Result) -> Figure:
    figure = _figure()
    axes = figure.add_subplot()
    periods = len(result.columns) - 2
    for n, row in enumerate(result.rows):
        points = [(week, v * 100) for week, v in enumerate(row[2:]) if v is not None]
        if len(points) > 1:
            axes.plot(*zip(*points, strict=True), color=_color(n % len(PALETTE)), alpha=0.8, linewidth=1.2)
    axes.set_title("Retention curves, one line per cohort (%)", fontsize=11, loc="left")
    axes.set_xlabel("weeks after sign-up")
    axes.set_ylabel("% active")
    axes.set_xticks(range(periods))
    axes.set_ylim(0, 105)
    axes.grid(alpha=0.3)
    return figure


def cohort_sizes(result: Result) -> Figure:
    figure = _figure(8.0, 3.2)
    axes = figure.add_subplot()
    labels = [row[0] for row in result.rows]
    axes.bar(range(len(labels)), [row[1] for row in result.rows], color=PALETTE[0])
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    axes.set_title("Accounts per sign-up week", fontsize=11, loc="left")
    axes.set_ylabel("accounts")
    axes.grid(axis="y", alpha=0.3)
    return figure


def _thin_ticks(axes: Any, count: int) -> None:
    if count > 12:
        step = math.ceil(count / 12)
        for n, label in enumerate(axes.get_xticklabels()):
            label.set_visible(n % step == 0)
    for label in axes.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")
        label.set_fontsize(8)


def _number(value: Any) -> float:
    return 0.0 if value is None else float(value)


def _color(n: int) -> str:
    return PALETTE[n % len(PALETTE)]


def _axis_label(name: str, unit: str | None) -> str:
    return name.replace("_", " ") + (f" ({unit})" if unit and unit not in ("count",) else "")
