"""A small dashboard builder: panels in rows on Grafana's 24-column grid, on Grafana's dashboard conventions.

Plain Python rather than grafana-foundation-sdk: the dashboards need a handful of panel kinds, and plain dicts
keep the generated JSON easy to diff and the linter easy to write against the same shapes.

Conventions every dashboard gets here (and grafana/lint.py checks):
- Queries go to the `$datasource` variable (type prometheus), whose default is the provisioned datasource
  (uid vibelux-prometheus). That is grafana/dashboard-linter's convention and what the mixins do: the same
  dashboard reads one Prometheus replica, VictoriaMetrics or another Grafana's Prometheus, and a link without
  `var-datasource` (an alert's dashboard_url) still opens on the provisioned one.
- Addresses of the stack's web UIs are constant variables (`desk_url`, `flags_url`), never hosts in links:
  Grafana does not expand environment variables inside dashboard files, so `python -m grafana --out DIR
  --link desk_url=URL` fills them where the dashboards are provisioned (docker-compose.yml does).
- Links between dashboards carry the time range and the datasource (`${__url_time_range}`,
  `${datasource:queryparam}`); Alertmanager is reached through Grafana's own alerting pages for the
  provisioned Alertmanager datasource, so that link needs no host either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

PROMETHEUS_UID = "vibelux-prometheus"
PROMETHEUS_NAME = "Prometheus"
ALERTMANAGER_UID = "vibelux-alertmanager"
ALERTMANAGER_NAME = "Alertmanager"  # the alert groups panel and Grafana's alerting pages name it, not its uid
DATASOURCE_VARIABLE = "datasource"
DATASOURCE = {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}
GRID_WIDTH = 24
SCHEMA_VERSION = 39
# Tables, bar gauges and bar charts show one value per series; stats query a range to draw their sparkline.
INSTANT_KINDS = ("table", "bargauge", "barchart")
STAT_OPTIONS = {"graphMode": "area", "colorMode": "value", "reduceOptions": {"calcs": ["lastNotNull"]}}
STATE_TIMELINE_OPTIONS = {
    "mergeValues": True,
    "showValue": "never",
    "alignValue": "left",
    "rowHeight": 0.8,
    "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
    "tooltip": {"mode": "single", "sort": "none"},
}
# What `make up` and docker-compose.yml publish on the host that runs them; --link replaces them elsewhere.
LINK_DEFAULTS = {"desk_url": "http://127.0.0.1:8081", "flags_url": "http://127.0.0.1:8082"}
# A link to another dashboard keeps what the reader was looking at: the time range and the datasource.
KEEP_CONTEXT = f"${{__url_time_range}}&${{{DATASOURCE_VARIABLE}:queryparam}}"
ALERTMANAGER_PAGE = f"/alerting/groups?alertmanager={quote(ALERTMANAGER_NAME)}"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False  # one frame with a column per label (format "table"), for tables built by transformations


@dataclass(frozen=True)
class Link:
    """A data link (on a panel's values) or a dashboard link (in the dashboard's header)."""

    title: str
    url: str
    new_tab: bool = False


def dashboard_url(uid: str, **variables: str) -> str:
    """`/d/<uid>` keeping the time range and datasource, plus `var-<name>=<value>` for each of `variables`."""
    return "&".join([f"/d/{uid}?{KEEP_CONTEXT}", *(f"var-{name}={value}" for name, value in variables.items())])


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
    links: tuple[Link, ...] = ()
    # Grafana's own shapes, passed through: field config beyond the unit (min, max, color, custom.cellOptions),
    # per-field overrides, and transformations (pivots, merges, sorts) applied in order before display.
    field_config: dict[str, Any] = field(default_factory=dict)
    overrides: tuple[dict[str, Any], ...] = ()
    transformations: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Text:
    """A markdown panel (navigation, notes); it queries nothing, so it has no datasource or unit."""

    title: str
    content: str
    width: int = 24
    height: int = 4


@dataclass(frozen=True)
class AlertGroups:
    """Grafana's alert groups panel over the provisioned Alertmanager: what was routed, grouped, silenced."""

    title: str
    matchers: str = ""  # Alertmanager matchers, e.g. alertname!="Watchdog"
    description: str = ""
    width: int = 16
    height: int = 8


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel | Text | AlertGroups, ...]


@dataclass(frozen=True)
class Variable:
    """A multi-select query variable over one label, with All, e.g. label_values(node_load1{job=~"$job"}, instance)."""

    name: str
    query: str
    label: str = ""


@dataclass(frozen=True)
class Annotation:
    """Events drawn on every graph. With `value_is_time` the query's value is the event's time in milliseconds,
    so a timestamp gauge (`*_timestamp_seconds * 1000`) marks the moment itself, not the scrape that saw it."""

    name: str
    expr: str
    title: str
    text: str = ""
    tags: tuple[str, ...] = ()
    color: str = "blue"
    value_is_time: bool = True


def job_and_instance(metric: str) -> list[Variable]:
    """The scrape target variables of dashboard-linter's convention; instances follow the chosen jobs."""
    return [
        Variable("job", f"label_values({metric}, job)", "Job"),
        Variable("instance", f'label_values({metric}{{job=~"$job"}}, instance)', "Instance"),
    ]


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


def state_timeline(title: str, *queries: Query | str, unit: str, **options: Any) -> Panel:
    """One band per series, coloured by its value mapping over time: when a service was up or down."""
    options.setdefault("options", STATE_TIMELINE_OPTIONS)
    return panel(title, *queries, unit=unit, kind="state-timeline", width=options.pop("width", 24), **options)


def build_dashboard(
    uid: str,
    title: str,
    rows: list[Row],
    *,
    description: str,
    tags: list[str],
    variables: list[Variable] | None = None,
    annotations: list[Annotation] | None = None,
    links: list[Link] | None = None,
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
            panels.append(_item_json(item, next_id, grid))
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
            },
            *(_dashboard_link_json(link) for link in links or []),
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
                },
                *(_annotation_json(a) for a in annotations or []),
            ]
        },
        "templating": {
            "list": [
                _datasource_variable_json(),
                *(_variable_json(v) for v in variables or []),
                *(_constant_json(name, url) for name, url in LINK_DEFAULTS.items()),
            ]
        },
        "panels": panels,
    }


def with_links(dashboard: dict[str, Any], urls: dict[str, str]) -> dict[str, Any]:
    """The dashboard with the constant link variables named in `urls` set to those addresses."""
    unknown = set(urls) - set(LINK_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown link variable(s) {sorted(unknown)}; known: {sorted(LINK_DEFAULTS)}")
    variables = [
        _constant_json(v["name"], urls[v["name"]]) if v["type"] == "constant" and v["name"] in urls else v
        for v in dashboard["templating"]["list"]
    ]
    return {**dashboard, "templating": {"list": variables}}


def _item_json(item: Panel | Text | AlertGroups, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
    if isinstance(item, Text):
        return {
            "id": panel_id,
            "type": "text",
            "title": item.title,
            "gridPos": grid,
            "options": {"mode": "markdown", "content": item.content},
        }
    if isinstance(item, AlertGroups):
        return {
            "id": panel_id,
            "type": "alertGroups",
            "title": item.title,
            "description": item.description,
            "gridPos": grid,
            "options": {"alertmanager": ALERTMANAGER_NAME, "expandAll": False, "labels": item.matchers},
        }
    return _panel_json(item, panel_id, grid)


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
    if item.links:
        defaults["links"] = [{"title": link.title, "url": link.url, "targetBlank": link.new_tab} for link in item.links]
    if item.kind == "timeseries":
        defaults["custom"] = {"fillOpacity": 10, "showPoints": "never"}
        if item.thresholds:  # a graph shows its thresholds only when told to: as lines, where the alert fires
            defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
        if item.stack:
            defaults["custom"]["stacking"] = {"mode": "normal", "group": "A"}
    elif item.kind == "state-timeline":
        defaults["custom"] = {"fillOpacity": 80, "lineWidth": 0}
    for key, value in item.field_config.items():
        defaults[key] = {**defaults.get(key, {}), **value} if isinstance(value, dict) else value
    json: dict[str, Any] = {
        "id": panel_id,
        "type": item.kind,
        "title": item.title,
        "description": item.description,
        "gridPos": grid,
        "datasource": DATASOURCE,
        "targets": [_target_json(query, index, item.kind) for index, query in enumerate(item.queries)],
        "fieldConfig": {"defaults": defaults, "overrides": list(item.overrides)},
        "options": item.options,
    }
    if item.transformations:
        json["transformations"] = list(item.transformations)
    return json


def _target_json(query: Query, index: int, kind: str) -> dict[str, Any]:
    instant = query.instant or query.table or kind in INSTANT_KINDS
    target = {
        "refId": chr(ord("A") + index),
        "datasource": DATASOURCE,
        "expr": query.expr,
        "legendFormat": query.legend,
        "instant": instant,
        "range": not instant,
    }
    if query.table:
        target["format"] = "table"
    return target


def _dashboard_link_json(link: Link) -> dict[str, Any]:
    return {
        "type": "link",
        "title": link.title,
        "url": link.url,
        "targetBlank": link.new_tab,
        "icon": "external link" if link.new_tab else "dashboard",
        "includeVars": False,
        "keepTime": False,
        "tags": [],
        "asDropdown": False,
        "tooltip": "",
    }


def _annotation_json(annotation: Annotation) -> dict[str, Any]:
    return {
        "name": annotation.name,
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": annotation.color,
        "target": {"refId": "Anno", "expr": annotation.expr, "interval": ""},
        "titleFormat": annotation.title,
        "textFormat": annotation.text,
        "tagKeys": ",".join(annotation.tags),
        "useValueForTime": annotation.value_is_time,
    }


def _datasource_variable_json() -> dict[str, Any]:
    return {
        "name": DATASOURCE_VARIABLE,
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "regex": "",
        "refresh": 1,
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "current": {"text": PROMETHEUS_NAME, "value": PROMETHEUS_UID},
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
        "includeAll": True,
        "multi": True,
        "allValue": ".+",  # not .*: a series without the label is no target's
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def _constant_json(name: str, value: str) -> dict[str, Any]:
    """A hidden constant: links read it as `${name}`; the provisioning sets it (with_links)."""
    return {
        "name": name,
        "type": "constant",
        "hide": 2,
        "query": value,
        "current": {"text": value, "value": value},
        "options": [{"text": value, "value": value, "selected": True}],
    }
