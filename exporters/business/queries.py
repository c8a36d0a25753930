"""Named SQL queries and how their rows become samples.

Each query returns rows whose columns are the metric's labels plus a value column. Label values must come
from the set declared in the config: anything else is summed into "other", so a bad row can never add
series without bound. Every declared combination is published (0 when no row has it), so a tier without
users shows 0 instead of "No data".

Time windows are bind parameters computed by the exporter at each run: `:now` and `:ago_<N><m|h|d>`
(`:ago_7d` is seven days ago), and the calendar's `:week_start_<N>` (Monday 00:00 UTC of the week N weeks
before the current one) and `:month_start_<N>` (the first of the month N months back). The same SQL then
runs on SQLite and PostgreSQL, whose date arithmetic differs, and a fresh Prometheus shows 7- and 30-day
trends from its first scrape.

A query with `compute` instead of `sql` is a computed query (exporters/business/analytics.py): its
`inputs` are several SQL statements whose rows a pure core turns into its own, fixed set of metrics.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy
from sqlalchemy.engine import Engine

from exporters.business.cohorts import month_start, week_start
from exporters.database import statement_deadline
from service_kit.config import checked, positive

OTHER = "other"
TIME_PARAMETER = re.compile(r"^ago_(\d+)([mhd])$")
CALENDAR_PARAMETER = re.compile(r"^(week|month)_start_(\d+)$")
UNITS = {"m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class MetricSpec:
    """One gauge filled from a query's rows: its value column and its bounded labels."""

    help: str = ""
    value: str = "value"  # the column holding the value
    labels: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # label (= column) -> allowed values


@dataclass(frozen=True)
class QuerySpec:
    sql: str = ""
    interval_seconds: float = checked(60.0, positive)
    timeout_seconds: float = checked(10.0, positive)
    metrics: dict[str, MetricSpec] = dataclasses.field(default_factory=dict)
    compute: str = ""  # a calculator of exporters/business/analytics.py instead of sql and metrics
    inputs: dict[str, str] = dataclasses.field(default_factory=dict)  # the calculator's input -> SQL


Sample = tuple[str, tuple[str, ...], float]  # metric name, label values (in the spec's label order), value


class QueryResultError(Exception):
    """The query ran but its rows do not fit the metric spec (missing column, non-numeric value)."""


def bind_parameter_names(sql: str) -> list[str]:
    return sorted(sqlalchemy.text(sql).compile().params)


def check_bind_parameters(sql: str) -> str | None:
    """What is wrong with the statement's bind parameters, or None."""
    unknown = [
        name
        for name in bind_parameter_names(sql)
        if name != "now" and not TIME_PARAMETER.match(name) and not CALENDAR_PARAMETER.match(name)
    ]
    if unknown:
        return f"bind parameters :now, :ago_<N><m|h|d>, :week_start_<N> or :month_start_<N> only, got :{unknown[0]}"
    return None


def check_query(spec: QuerySpec) -> str | None:
    """What is wrong with an SQL query spec, or None: unknown bind parameters, unbounded labels, no metrics."""
    if not spec.sql.strip():
        return "an SQL statement in sql (or a calculator in compute)"
    if spec.inputs:
        return "inputs only with compute"
    if not spec.metrics:
        return "at least one metric under metrics"
    problem = check_bind_parameters(spec.sql)
    if problem:
        return problem
    for metric, metric_spec in spec.metrics.items():
        if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", metric):
            return f"a Prometheus metric name, got {metric!r}"
        for label, values in metric_spec.labels.items():
            if not values:
                return f"allowed values for label {label!r} of {metric} (labels must be bounded)"
    return None


def parameter_values(names: Sequence[str], now: datetime) -> dict[str, datetime]:
    """Values of `:now`, `:ago_<N><unit>`, `:week_start_<N>` and `:month_start_<N>` at `now` (naive UTC,
    as the schema stores timestamps)."""
    values = {}
    for name in names:
        match = TIME_PARAMETER.match(name)
        calendar = CALENDAR_PARAMETER.match(name)
        if match:
            values[name] = now - timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
        elif calendar:
            start = week_start if calendar.group(1) == "week" else month_start
            values[name] = start(now, int(calendar.group(2)))
        else:
            values[name] = now
    return values


def utc_now() -> datetime:
    """Now as naive UTC, as the schema stores timestamps."""
    return datetime.now(UTC).replace(tzinfo=None)


def statement(sql: str) -> sqlalchemy.TextClause:
    """The SQL with its bind parameters typed as timestamps (they are all times)."""
    return sqlalchemy.text(sql).bindparams(
        *(sqlalchemy.bindparam(name, type_=sqlalchemy.DateTime()) for name in bind_parameter_names(sql))
    )


def number(value: Any, column: str) -> float | None:
    if value is None:  # e.g. a ratio over zero users: no sample rather than a made-up 0
        return None
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return float(value)
    raise QueryResultError(f"column {column!r} is not numeric: {value!r}")


def samples_from_rows(metrics: Mapping[str, MetricSpec], rows: Sequence[Mapping[Any, Any]]) -> list[Sample]:
    """Samples of every metric from the rows: undeclared label values folded into "other", absent
    declared combinations filled with 0, several rows with one label set summed."""
    samples: list[Sample] = []
    for metric, spec in metrics.items():
        label_names = list(spec.labels)
        totals: dict[tuple[str, ...], float] = {
            combination: 0.0 for combination in itertools.product(*(spec.labels[name] for name in label_names))
        }
        for row in rows:
            for column in (spec.value, *label_names):
                if column not in row:
                    raise QueryResultError(f"no column {column!r} for {metric}; columns: {', '.join(row)}")
            value = number(row[spec.value], spec.value)
            if value is None:
                continue
            key = tuple(str(row[name]) if str(row[name]) in spec.labels[name] else OTHER for name in label_names)
            totals[key] = totals.get(key, 0.0) + value
        if not label_names and not any(number(row[spec.value], spec.value) is not None for row in rows):
            totals = {}  # a single value that is NULL (or no row): publish nothing
        samples.extend((metric, key, value) for key, value in totals.items())
    return samples


class QueryRunner:
    """Runs one named query against the engine with a database-side deadline; returns its samples."""

    def __init__(self, engine: Engine, spec: QuerySpec, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._spec = spec
        self._clock = clock
        self._parameters = bind_parameter_names(spec.sql)
        self._statement = statement(spec.sql)

    def __call__(self) -> list[Sample]:
        now = self._clock()
        with self._engine.connect() as connection, statement_deadline(connection, self._spec.timeout_seconds):
            rows = connection.execute(self._statement, parameter_values(self._parameters, now)).mappings().all()
        return samples_from_rows(self._spec.metrics, rows)
