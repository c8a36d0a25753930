"""Dashboard checks in the spirit of grafana/dashboard-linter, plus PromQL checks shared with the rule files.

Every query panel: a title, a unit, the provisioned datasource by uid (panel and targets); every expression
parses; counters (`_total`) only inside rate/increase/irate; range windows of raw series are
$__rate_interval (or $__range for "over the shown period" stats); the grid is 24 columns without overlaps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import promql_parser

from grafana.builder import DATASOURCE, GRID_WIDTH

COUNTER_FUNCTIONS = {"rate", "increase", "irate"}
ALLOWED_WINDOWS = {"$__rate_interval", "$__range"}
# Grafana's range variables are not PromQL: substitute durations of the same shape before parsing.
GRAFANA_DURATIONS = {"$__rate_interval": "1m", "$__range": "6h", "$__interval": "15s"}
WINDOW = re.compile(r"\[([^\]]+)\]")
PANELS_WITHOUT_QUERIES = {"row", "text"}


def parse(expr: str) -> promql_parser.Expr:
    """Parse a dashboard or rule expression; raises ValueError with the parser's message."""
    for variable, duration in GRAFANA_DURATIONS.items():
        expr = expr.replace(variable, duration)
    return promql_parser.parse(expr)


def selectors(expr: str) -> Iterator[tuple[str, bool]]:
    """(metric name, whether it sits directly inside rate/increase/irate) for every selector in `expr`."""

    def walk(node: Any, in_counter_function: bool) -> Iterator[tuple[str, bool]]:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                yield node.name, in_counter_function
        elif isinstance(node, promql_parser.MatrixSelector):
            yield from walk(node.vector_selector, in_counter_function)
        elif isinstance(node, promql_parser.Call):
            inside = node.func.name in COUNTER_FUNCTIONS
            for arg in node.args:
                yield from walk(arg, inside)
        elif isinstance(node, promql_parser.BinaryExpr):
            yield from walk(node.lhs, False)
            yield from walk(node.rhs, False)
        elif isinstance(node, promql_parser.AggregateExpr):
            yield from walk(node.expr, False)
            if node.param is not None:
                yield from walk(node.param, False)
        elif isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
            yield from walk(node.expr, False)

    yield from walk(parse(expr), False)


def expression_problems(expr: str, where: str, raw_windows_only: set[str] | None = None) -> list[str]:
    """Problems of one expression: parse errors, bare counters, and (dashboards) fixed range windows."""
    try:
        found = list(selectors(expr))
    except ValueError as exc:
        return [f"{where}: does not parse: {exc}"]
    problems = [
        f"{where}: counter {name} used outside rate/increase"
        for name, in_counter_function in found
        if name.endswith("_total") and not in_counter_function
    ]
    if raw_windows_only is not None:
        problems += [
            f"{where}: window [{window}] should be one of {sorted(raw_windows_only)}"
            for window in WINDOW.findall(expr)
            if window not in raw_windows_only
        ]
    return problems


def lint_dashboard(dashboard: dict[str, Any]) -> list[str]:
    """Every problem found in one dashboard, as `title / panel: message` lines (empty when clean)."""
    name = dashboard.get("title") or dashboard.get("uid") or "?"
    problems = [f"{name}: missing {key}" for key in ("uid", "title", "schemaVersion", "time") if key not in dashboard]
    ids: set[int] = set()
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard.get("panels", []):
        where = f"{name} / {panel.get('title') or panel.get('id')}"
        if panel.get("id") in ids:
            problems.append(f"{where}: duplicate panel id {panel.get('id')}")
        ids.add(panel.get("id"))
        problems += _grid_problems(panel, where, cells)
        if not panel.get("title"):
            problems.append(f"{where}: no title")
        if panel.get("type") in PANELS_WITHOUT_QUERIES:
            continue
        if panel.get("datasource") != DATASOURCE:
            problems.append(f"{where}: datasource is not {DATASOURCE}")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{where}: no unit")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no queries")
        for target in targets:
            if target.get("datasource") != DATASOURCE:
                problems.append(f"{where} {target.get('refId')}: datasource is not {DATASOURCE}")
            problems += expression_problems(target.get("expr", ""), f"{where} {target.get('refId')}", ALLOWED_WINDOWS)
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query" and variable.get("datasource") != DATASOURCE:
            problems.append(f"{name} / ${variable.get('name')}: datasource is not {DATASOURCE}")
    return problems


def _grid_problems(panel: dict[str, Any], where: str, cells: dict[tuple[int, int], str]) -> list[str]:
    grid = panel.get("gridPos") or {}
    x, y, w, h = (grid.get(key, -1) for key in ("x", "y", "w", "h"))
    if min(x, y) < 0 or w <= 0 or h <= 0 or x + w > GRID_WIDTH:
        return [f"{where}: gridPos {grid} is outside the 24-column grid"]
    for column in range(x, x + w):
        for line in range(y, y + h):
            if (column, line) in cells:
                return [f"{where}: overlaps {cells[(column, line)]}"]
            cells[(column, line)] = where
    return []


def dashboard_expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every query in a dashboard."""
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets") or []:
            yield panel["title"], target["expr"]
