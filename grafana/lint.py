"""Dashboard checks in the spirit of grafana/dashboard-linter, plus PromQL checks shared with the rule files.

Every query panel: a title, a unit, the `$datasource` variable (panel and targets); every expression parses;
counters (`_total`) only inside rate/increase/irate; range windows of raw series are $__rate_interval (or
$__range for "over the shown period" stats); the grid is 24 columns without overlaps.

The conventions of grafana/builder.py, for any dashboard whoever wrote it:
- a `datasource` variable (type prometheus, defaulting to the provisioned uid) that every query, query
  variable and annotation uses; alert groups panels name the provisioned Alertmanager;
- every variable a dashboard refers to (`$x`, `${x}`, `${x:format}`) is declared, and every declared one is
  used; query variables are multi-select with All as `.+`, refreshed when the time range changes;
- `job` and `instance` come together, and where they are declared every raw series of every panel follows
  them (`job=~"$job", instance=~"$instance"`) or names the one job it comes from (`job="service-health"`);
  recorded series (names with a colon) and ALERTS are exempt: their labels are what the rule kept;
- every panel that reads service health (the health exporter's series) has a data link;
- links (dashboard links, data links, markdown links in text panels) name no host: they are paths on
  Grafana (`/d/<uid>`, `/alerting/...`) or start with a constant variable (`${desk_url}`) that the
  provisioning fills; links to a dashboard keep the time range and the datasource, and across the set
  (`lint_dashboards`) point at a dashboard that exists with `var-` parameters it declares.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import promql_parser

from grafana.builder import ALERTMANAGER_NAME, DATASOURCE, DATASOURCE_VARIABLE, GRID_WIDTH, PROMETHEUS_UID

COUNTER_FUNCTIONS = {"rate", "increase", "irate"}
ALLOWED_WINDOWS = {"$__rate_interval", "$__range"}
# Grafana's range variables are not PromQL: substitute durations of the same shape before parsing.
GRAFANA_DURATIONS = {"$__rate_interval": "1m", "$__range": "6h", "$__interval": "15s"}
WINDOW = re.compile(r"\[([^\]]+)\]")
PANELS_WITHOUT_QUERIES = {"row", "text", "alertGroups"}
# $name, ${name} and ${name:format}; names starting with __ are Grafana's own ($__range, ${__field.labels.x}).
REFERENCE = re.compile(r"\$\{(\w+)[^}]*\}|\$(\w+)")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
HOST = re.compile(r"^([a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
LABEL_VALUES = re.compile(r"label_values\((.+), (\w+)\)")
# The health exporter's series (docs/conventions.md) and the rules recorded from them.
HEALTH_SERIES = ("service_up", "service_status", "service_probe_", "service_last_success_", "service:service_")
SCRAPE_VARIABLES = ("job", "instance")
KEEP_CONTEXT = ("${__url_time_range}", f"${{{DATASOURCE_VARIABLE}:queryparam}}")


def parse(expr: str) -> promql_parser.Expr:
    """Parse a dashboard or rule expression; raises ValueError with the parser's message."""
    for variable, duration in GRAFANA_DURATIONS.items():
        expr = expr.replace(variable, duration)
    return promql_parser.parse(expr)


def vector_selectors(expr: str) -> Iterator[tuple[promql_parser.VectorSelector, bool]]:
    """(selector, whether it sits directly inside rate/increase/irate) for every selector in `expr`."""

    def walk(node: Any, in_counter_function: bool) -> Iterator[tuple[promql_parser.VectorSelector, bool]]:
        if isinstance(node, promql_parser.VectorSelector):
            yield node, in_counter_function
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


def selectors(expr: str) -> Iterator[tuple[str, bool]]:
    """(metric name, whether it sits directly inside rate/increase/irate) for every named selector in `expr`."""
    for node, in_counter_function in vector_selectors(expr):
        if node.name:
            yield node.name, in_counter_function


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
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    scoped = [label for label in SCRAPE_VARIABLES if label in variables]
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
        if panel.get("type") == "alertGroups" and panel.get("options", {}).get("alertmanager") != ALERTMANAGER_NAME:
            problems.append(f"{where}: alert groups should read the provisioned Alertmanager {ALERTMANAGER_NAME!r}")
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
            at = f"{where} {target.get('refId')}"
            if target.get("datasource") != DATASOURCE:
                problems.append(f"{at}: datasource is not {DATASOURCE}")
            expr = target.get("expr", "")
            problems += expression_problems(expr, at, ALLOWED_WINDOWS)
            problems += _scrape_variable_problems(expr, at, scoped)
        reads_health = any(m.startswith(HEALTH_SERIES) for t in targets for m in _names(t.get("expr", "")))
        if reads_health and not _panel_links(panel):
            problems.append(f"{where}: shows service health but has no data link to follow")
    problems += _variable_problems(dashboard, name, variables, scoped)
    problems += _annotation_problems(dashboard, name)
    for where, url in dashboard_links(dashboard):
        problems += _link_problems(url, where, variables)
    return problems


def lint_dashboards(dashboards: dict[str, dict[str, Any]]) -> list[str]:
    """`lint_dashboard` of each, plus links across them: to a uid of the set, with `var-` it declares."""
    problems = [problem for dashboard in dashboards.values() for problem in lint_dashboard(dashboard)]
    declared = {
        d.get("uid"): {v.get("name") for v in d.get("templating", {}).get("list", [])} for d in dashboards.values()
    }
    for dashboard in dashboards.values():
        for where, url in dashboard_links(dashboard):
            target = re.match(r"^/d/([^/?#]+)", url)
            if not target:
                continue
            uid = target.group(1)
            if uid not in declared:
                problems.append(f"{where}: links to dashboard {uid}, which does not exist")
                continue
            for key, _ in parse_qsl(urlsplit(url).query):
                if key.startswith("var-") and key.removeprefix("var-") not in declared[uid]:
                    problems.append(f"{where}: sets {key}, which dashboard {uid} does not declare")
    return problems


def dashboard_links(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, url) of every link a dashboard shows: its header links, data links, markdown links."""
    name = dashboard.get("title") or dashboard.get("uid") or "?"
    for link in dashboard.get("links", []):
        if link.get("type") == "link":
            yield f"{name} / link {link.get('title')!r}", link.get("url", "")
    for panel in dashboard.get("panels", []):
        where = f"{name} / {panel.get('title') or panel.get('id')}"
        for link in _panel_links(panel):
            yield f"{where} / data link {link.get('title')!r}", link.get("url", "")
        if panel.get("type") == "text":
            for url in MARKDOWN_LINK.findall(panel.get("options", {}).get("content", "")):
                yield f"{where} / markdown link", url


def _panel_links(panel: dict[str, Any]) -> list[dict[str, Any]]:
    field_config = panel.get("fieldConfig", {})
    links = list(field_config.get("defaults", {}).get("links", []))
    for override in field_config.get("overrides", []):
        for prop in override.get("properties", []):
            if prop.get("id") == "links":
                links += prop.get("value") or []
    return links


def _names(expr: str) -> list[str]:
    try:
        return [metric for metric, _ in selectors(expr)]
    except ValueError:
        return []  # reported as unparsable where the expression is linted


def _scrape_variable_problems(expr: str, where: str, scoped: list[str]) -> list[str]:
    """With $job/$instance declared, a raw series follows both or pins the one job it comes from."""
    if not scoped:
        return []
    try:
        found = list(vector_selectors(expr))
    except ValueError:
        return []
    problems = []
    for node, _ in found:
        if not node.name or ":" in node.name or node.name.startswith("ALERTS"):
            continue
        matchers = {str(m) for m in node.matchers.matchers}
        if any(re.fullmatch(r'job="[^"$]+"', m) for m in matchers):
            continue
        missing = [f'{label}=~"${label}"' for label in scoped if f'{label}=~"${label}"' not in matchers]
        if missing:
            problems.append(f'{where}: {node.name} does not follow {", ".join(missing)} (or pin job="...")')
    return problems


def _variable_problems(
    dashboard: dict[str, Any], name: str, variables: dict[str, dict[str, Any]], scoped: list[str]
) -> list[str]:
    problems = []
    source = variables.get(DATASOURCE_VARIABLE, {})
    if source.get("type") != "datasource" or source.get("query") != "prometheus":
        problems.append(f"{name}: no ${DATASOURCE_VARIABLE} variable of type datasource over prometheus")
    elif source.get("current", {}).get("value") != PROMETHEUS_UID:
        problems.append(f"{name} / ${DATASOURCE_VARIABLE}: should default to the provisioned uid {PROMETHEUS_UID}")
    if scoped and len(scoped) != len(SCRAPE_VARIABLES):
        problems.append(f"{name}: declares ${scoped[0]} without ${' and $'.join(set(SCRAPE_VARIABLES) - set(scoped))}")
    for variable in variables.values():
        if variable.get("type") != "query":
            continue
        where = f"{name} / ${variable.get('name')}"
        if variable.get("datasource") != DATASOURCE:
            problems.append(f"{where}: datasource is not {DATASOURCE}")
        shape = {"multi": True, "includeAll": True, "allValue": ".+", "refresh": 2}
        problems += [
            f"{where}: {key} should be {value!r} (multi-select, All as .+, refreshed on time range change)"
            for key, value in shape.items()
            if variable.get(key) != value
        ]
        query = (variable.get("query") or {}).get("query", "")
        match = LABEL_VALUES.fullmatch(query)
        if not match:
            problems.append(f"{where}: query {query!r} is not label_values(selector, label)")
        else:
            try:
                parse(match.group(1))
            except ValueError as exc:
                problems.append(f"{where}: selector does not parse: {exc}")
    used = {ref for text in _texts(dashboard) for ref in _references(text)}
    problems += [
        f"{name}: uses ${ref}, which is not a variable of the dashboard" for ref in sorted(used - set(variables))
    ]
    problems += [
        f"{name} / ${v}: declared but never used" for v in sorted(set(variables) - used) if v != DATASOURCE_VARIABLE
    ]
    return problems


def _texts(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every text of a dashboard where Grafana substitutes variables."""
    for panel in dashboard.get("panels", []):
        yield from (target.get("expr", "") for target in panel.get("targets") or [])
        yield panel.get("options", {}).get("content", "")
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        yield query.get("query", "") if isinstance(query, dict) else ""
    for annotation in dashboard.get("annotations", {}).get("list", []):
        yield annotation.get("target", {}).get("expr", "")
    yield from (url for _, url in dashboard_links(dashboard))


def _references(text: str) -> set[str]:
    names = {braced or bare for braced, bare in REFERENCE.findall(text)}
    return {name for name in names if not name.startswith("__")}


def _annotation_problems(dashboard: dict[str, Any], name: str) -> list[str]:
    problems = []
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("builtIn"):
            continue
        where = f"{name} / annotation {annotation.get('name')!r}"
        if annotation.get("datasource") != DATASOURCE:
            problems.append(f"{where}: datasource is not {DATASOURCE}")
        problems += expression_problems(annotation.get("target", {}).get("expr", ""), where, ALLOWED_WINDOWS)
    return problems


def _link_problems(url: str, where: str, variables: dict[str, dict[str, Any]]) -> list[str]:
    if HOST.match(url):
        return [f"{where}: {url} names a host; use a path on Grafana or a constant variable like ${{desk_url}}"]
    if not url.startswith("/"):
        reference = REFERENCE.match(url)
        variable = variables.get(reference.group(1) or reference.group(2)) if reference else None
        if variable is None or variable.get("type") != "constant":
            return [f"{where}: {url} should be a path on Grafana or start with a constant variable"]
    if url.startswith("/d/"):
        return [f"{where}: {url} does not keep {part}" for part in KEEP_CONTEXT if part not in url]
    return []


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


def annotation_expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(annotation name, expr) of every query annotation in a dashboard."""
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "target" in annotation:
            yield annotation["name"], annotation["target"]["expr"]
