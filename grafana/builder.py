"""A small dashboard builder: panels in rows on Grafana's 24-column grid, every target on the fixed datasource.

Plain Python rather than grafana-foundation-sdk: the dashboards need a handful of panel kinds, and plain dicts
keep the generated JSON easy to diff and the linter easy to write against the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "vibelux-prometheus"}
GRID_WIDTH = 24
SCHEMA_VERSION = 39
# Tables and bar gauges show one value per series; stats query a range to draw their trend sparkline.
INSTANT_KINDS = ("table", "bargauge")
STAT_OPTIONS = {"graphMode": "area", "colorMode": "value", "reduceOptions": {"calcs": ["lastNotNull"]}}


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    """One panel. `unit` is a Grafana unit id (percentunit, s, bytes, reqps, currencyUSD, short, ...)."""

    title: str
    queries: tuple[Query, ...]
    unit: str
    kind: str = "timeseries"
    width: int = 8
    height: int = 8
    description: str = ""
    no_value: str = ""  # what the panel says when there is legitimately nothing to show
    options: dict[str, Any] = field(default_factory=dict)
    mappings: tuple[dict[str, Any], ...] = ()
    thresholds: tuple[tuple[float | None, str], ...] = ()
    stack: bool = False


@dataclass(frozen=True)
class Text:
    """A markdown panel (navigation, notes); it queries nothing, so it has no datasource or unit."""

    title: str
    content: str
    width: int = 24
    height: int = 4


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel | Text, ...]


@dataclass(frozen=True)
class Variable:
    """A query variable over one label, e.g. instance from label_values(node_load1, instance)."""

    name: str
    query: str
    label: str = ""
    include_all: bool = True


def panel(title: str, *queries: Query | str, unit: str, **options: Any) -> Panel:
    """Shorthand: plain strings become queries without a legend."""
    return Panel(title, tuple(q if isinstance(q, Query) else Query(q) for q in queries), unit, **options)


def quantiles(
    histogram: str,
    *levels: float,
    by: str = "",
    selector: str = "",
    legend: str = "",
    window: str = "$__rate_interval",
    function: str = "rate",
    instant: bool = False,
) -> tuple[Query, ...]:
    """histogram_quantile queries over `histogram`_bucket, one per level, legend suffixed p50, p99, ..."""
    group = ", ".join(label for label in (by, "le") if label)
    return tuple(
        Query(
            f"histogram_quantile({level}, sum by ({group}) ({function}({histogram}_bucket{selector}[{window}])))",
            f"{legend} p{round(level * 100)}".strip(),
            instant=instant,
        )
        for level in levels
    )


def stat(title: str, *queries: Query | str, unit: str, **options: Any) -> Panel:
    """A big number (the last value) over its trend for the shown period."""
    options.setdefault("options", STAT_OPTIONS)
    return panel(title, *queries, unit=unit, kind="stat", width=options.pop("width", 4), **options)


def build_dashboard(
    uid: str,
    title: str,
    rows: list[Row],
    *,
    description: str,
    tags: list[str],
    variables: list[Variable] | None = None,
    refresh: str = "30s",
    time_from: str = "now-6h",
) -> dict[str, Any]:
    """Lay the rows out top to bottom, panels left to right, wrapping at 24 columns; number the panels."""
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row in rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": GRID_WIDTH, "h": 1},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for item in row.panels:
            if x + item.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            grid = {"x": x, "y": y, "w": item.width, "h": item.height}
            panels.append(
                _text_json(item, next_id, grid) if isinstance(item, Text) else _panel_json(item, next_id, grid)
            )
            next_id += 1
            x += item.width
            line_height = max(line_height, item.height)
        y += line_height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["vibelux", *tags],
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "refresh": refresh,
        "timezone": "utc",
        "links": [
            {
                "type": "dashboards",
                "title": "VibeLux dashboards",
                "tags": ["vibelux"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": [_variable_json(v) for v in variables or []]},
        "panels": panels,
    }


def _panel_json(item: Panel, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": item.unit}
    if item.no_value:
        defaults["noValue"] = item.no_value
    if item.mappings:
        defaults["mappings"] = list(item.mappings)
    if item.thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"value": value, "color": color} for value, color in item.thresholds],
        }
    if item.kind == "timeseries":
        defaults["custom"] = {"fillOpacity": 10, "showPoints": "never"}
        if item.thresholds:  # a graph shows its thresholds only when told to: as lines, where the alert fires
            defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
        if item.stack:
            defaults["custom"]["stacking"] = {"mode": "normal", "group": "A"}
    return {
        "id": panel_id,
        "type": item.kind,
        "title": item.title,
        "description": item.description,
        "gridPos": grid,
        "datasource": DATASOURCE,
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
                "instant": query.instant or item.kind in INSTANT_KINDS,
                "range": not (query.instant or item.kind in INSTANT_KINDS),
            }
            for index, query in enumerate(item.queries)
        ],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": item.options,
    }


def _text_json(item: Text, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "text",
        "title": item.title,
        "gridPos": grid,
        "options": {"mode": "markdown", "content": item.content},
    }


def _variable_json(variable: Variable) -> dict[str, Any]:
    return {
        "name": variable.name,
        "label": variable.label or variable.name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": variable.query, "refId": "variable"},
        "definition": variable.query,
        "refresh": 2,
        "includeAll": variable.include_all,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"} if variable.include_all else {},
        "sort": 1,
    }
