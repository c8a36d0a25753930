"""Computed queries: a few SQL statements select rows, the pure core (cohorts.py) turns them into figures.

A computed query names a calculator (`compute: weekly_retention`) and gives one SQL statement per input the
calculator reads (`inputs: {signups: SELECT ...}`); the shipped ones (config/exporters/business.yml) target
the reference schema, and a platform whose tables differ rewrites only those selects. The calculator owns
its metrics and their bounded labels, so the YAML cannot add a series. The SQL stays thin: plain selects
over a time window (with the calendar bind parameters `:week_start_<N>` and `:month_start_<N>`), no date
arithmetic, so it is the same text on SQLite and PostgreSQL; bucketing, classification and ratios happen
in Python, where tests/vectors/business pins them.

Like every query, a computed one runs on its own interval and its figures are served from the cache: a
scrape never runs it. On PostgreSQL all inputs of one run are read in one REPEATABLE READ transaction, so
they describe one moment of the database. SQLite reads each select as it stands (Python's sqlite3 opens no
transaction for reads); the demo database is replaced by a rename, never written in place.

Every series with a period label (`cohort`, `week`, `month`) also carries `in_progress` ("true" for the
current week or month, whose figures will still change). The labels are relative indexes (`cohort="3"`:
signed up three weeks ago), so `in_progress` is a function of them and never makes a series come or go.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sqlalchemy.engine import Engine

from exporters.business import cohorts
from exporters.business.cohorts import MONTHS, MOVEMENTS, TRIAL_OUTCOMES, WEEKS
from exporters.business.queries import (
    MetricSpec,
    QueryResultError,
    QueryRunner,
    QuerySpec,
    Sample,
    bind_parameter_names,
    check_bind_parameters,
    check_query,
    parameter_values,
    statement,
    utc_now,
)
from exporters.database import statement_deadline
from service_kit.tiers import PAID_TIERS

# Column kinds of the inputs: how a value from the database (or a JSON vector) becomes a core value.
KEY, TEXT, TIME, OPTIONAL_TIME, MONEY = "key", "text", "time", "optional time", "money"

COHORTS = [str(c) for c in range(WEEKS)]
WEEK_NUMBERS = [str(n) for n in range(WEEKS)]
MONTH_INDEXES = [str(m) for m in range(MONTHS)]
FLAG = ["true", "false"]
TIER_LABELS = list(PAID_TIERS)  # plans outside them are published as "other", as the SQL queries do


@dataclass(frozen=True)
class Calculator:
    """Inputs (name -> column -> kind), the metrics it publishes, and the pure function from rows to samples."""

    inputs: dict[str, dict[str, str]]
    metrics: dict[str, MetricSpec]
    compute: Callable[[Mapping[str, list[dict[str, Any]]], datetime], list[Sample]]


def flag(value: bool) -> str:
    return "true" if value else "false"


def epoch(t: datetime) -> float:
    return t.replace(tzinfo=UTC).timestamp()


def usd(cents: float) -> float:
    return cents / 100


# Values -------------------------------------------------------------------------------------------------


def to_time(value: Any, column: str) -> datetime:
    """A naive UTC datetime from a driver's datetime or an ISO 8601 text (SQLite, vectors)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise QueryResultError(f"column {column!r} is not a timestamp: {value!r}") from None
    if not isinstance(value, datetime):
        raise QueryResultError(f"column {column!r} is not a timestamp: {value!r}")
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def to_cents(value: Any, column: str) -> int:
    """Whole cents from NUMERIC(10, 2) as the driver returns it (Decimal, float from SQLite, int, text)."""
    try:
        amount = Decimal(str(value)) if not isinstance(value, bool) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise QueryResultError(f"column {column!r} is not an amount: {value!r}")
    return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def coerce(rows: Sequence[Mapping[Any, Any]], columns: Mapping[str, str], source: str) -> list[dict[str, Any]]:
    """The rows' declared columns as core values; a missing column or a bad value is a QueryResultError."""
    converted = []
    for row in rows:
        values: dict[str, Any] = {}
        for column, kind in columns.items():
            if column not in row:
                raise QueryResultError(f"{source}: no column {column!r}; columns: {', '.join(map(str, row))}")
            value = row[column]
            if kind == TIME:
                values[column] = to_time(value, column)
            elif kind == OPTIONAL_TIME:
                values[column] = None if value is None else to_time(value, column)
            elif kind == MONEY:
                values[column] = to_cents(value, column)
            elif kind == TEXT:
                values[column] = str(value)
            else:
                values[column] = value
        converted.append(values)
    return converted


def first_signup(rows: Sequence[Mapping[str, Any]]) -> datetime | None:
    """The history input: one row whose first_signup_at is the first sign-up (NULL: no users yet)."""
    values = [row["first_signup_at"] for row in rows if row["first_signup_at"] is not None]
    return min(values) if values else None


def subscription_rows(rows: Sequence[Mapping[str, Any]]) -> list[cohorts.Subscription]:
    return [
        cohorts.Subscription(
            row["user_id"],
            row.get("plan", ""),
            row.get("monthly_amount_usd", 0),
            row["started_at"],
            row["ended_at"],
            row.get("status", "active"),
        )
        for row in rows
    ]


# Calculators --------------------------------------------------------------------------------------------


def retention_samples(inputs: Mapping[str, list[dict[str, Any]]], now: datetime) -> list[Sample]:
    grid = cohorts.weekly_retention(
        [cohorts.Signup(row["user_id"], row["signed_up_at"]) for row in inputs["signups"]],
        [cohorts.Activity(row["user_id"], row["started_at"], row["last_activity_at"]) for row in inputs["activity"]],
        first_signup(inputs["history"]),
        now,
    )
    samples: list[Sample] = []
    for c, start in enumerate(grid.cohort_starts):
        samples.append(("business_cohort_start_timestamp_seconds", (str(c), flag(c == 0)), epoch(start)))
    for c, users in sorted(grid.cohort_users.items()):
        samples.append(("business_cohort_users", (str(c), flag(c == 0)), float(users)))
    for (c, n), kept in sorted(grid.retained.items()):
        labels = (str(c), str(n), flag(grid.in_progress(c, n)))
        samples.append(("business_retained_users", labels, float(kept)))
        ratio = grid.ratio(c, n)
        if ratio is not None:
            samples.append(("business_retention_ratio", labels, ratio))
    return samples


def revenue_samples(inputs: Mapping[str, list[dict[str, Any]]], now: datetime) -> list[Sample]:
    figures = cohorts.revenue(
        subscription_rows(inputs["subscriptions"]),
        {row["user_id"]: row["first_paid_at"] for row in inputs["first_paid"] if row["first_paid_at"] is not None},
        first_signup(inputs["history"]),
        now,
        PAID_TIERS,
    )
    samples: list[Sample] = []
    for m, start in enumerate(figures.month_starts):
        samples.append(("business_month_start_timestamp_seconds", (str(m), flag(m == 0)), epoch(start)))
    for m, month in sorted(figures.months.items()):
        labels = (str(m), flag(m == 0))
        samples.append(("business_mrr_opening_usd", labels, usd(month.opening_cents)))
        samples.append(("business_mrr_closing_usd", labels, usd(month.closing_cents)))
        for movement in MOVEMENTS:
            samples.append(
                ("business_mrr_movement_usd", (str(m), movement, flag(m == 0)), usd(month.movements[movement]))
            )
        if month.retention.net is not None and month.retention.gross is not None:
            samples.append(("business_net_revenue_retention_ratio", labels, month.retention.net))
            samples.append(("business_gross_revenue_retention_ratio", labels, month.retention.gross))
    year = figures.retention_12m
    if year.net is not None and year.gross is not None:
        samples.append(("business_net_revenue_retention_12m_ratio", (), year.net))
        samples.append(("business_gross_revenue_retention_12m_ratio", (), year.gross))
    for tier, customers in figures.paying_customers.items():
        samples.append(("business_paying_customers", (tier,), float(customers)))
        arpu = figures.arpu_cents(tier)
        if arpu is not None:
            samples.append(("business_arpu_usd", (tier,), usd(arpu)))
    return samples


def trial_samples(inputs: Mapping[str, list[dict[str, Any]]], now: datetime) -> list[Sample]:
    trials = cohorts.trial_conversion(subscription_rows(inputs["trials"]), first_signup(inputs["history"]), now)
    samples: list[Sample] = [("business_trials_running", (), float(trials.running))]
    for m, outcomes in sorted(trials.ended.items()):
        for outcome in TRIAL_OUTCOMES:
            samples.append(("business_trials_ended", (str(m), outcome, flag(m == 0)), float(outcomes[outcome])))
        ratio = trials.conversion(m)
        if ratio is not None:
            samples.append(("business_trial_conversion_ratio", (str(m), flag(m == 0)), ratio))
    return samples


HISTORY = {"first_signup_at": OPTIONAL_TIME}
COHORT = {"cohort": COHORTS, "in_progress": FLAG}
CELL = {"cohort": COHORTS, "week": WEEK_NUMBERS, "in_progress": FLAG}
MONTH = {"month": MONTH_INDEXES, "in_progress": FLAG}
TIER = {"tier": TIER_LABELS}

CALCULATORS: dict[str, Calculator] = {
    "weekly_retention": Calculator(
        inputs={
            "signups": {"user_id": KEY, "signed_up_at": TIME},
            "activity": {"user_id": KEY, "started_at": TIME, "last_activity_at": TIME},
            "history": HISTORY,
        },
        metrics={
            "business_cohort_start_timestamp_seconds": MetricSpec(
                "Start of the cohort's signup week (Monday 00:00 UTC); cohort = weeks ago, 0 = this week.",
                labels=COHORT,
            ),
            "business_cohort_users": MetricSpec(
                "Users who signed up in the cohort's week (absent before the platform's first sign-up).",
                labels=COHORT,
            ),
            "business_retained_users": MetricSpec(
                "Users of the cohort active in week N after their signup week (week 0: all of them). Cells"
                " with N > cohort have not happened and are absent.",
                labels=CELL,
            ),
            "business_retention_ratio": MetricSpec(
                "Share of the cohort active in week N after its signup week (0..1; week 0 is 1 by definition)."
                " Absent for cells too young and for cohorts without users.",
                labels=CELL,
            ),
        },
        compute=retention_samples,
    ),
    "revenue": Calculator(
        inputs={
            "subscriptions": {
                "user_id": KEY,
                "plan": TEXT,
                "monthly_amount_usd": MONEY,
                "started_at": TIME,
                "ended_at": OPTIONAL_TIME,
            },
            "first_paid": {"user_id": KEY, "first_paid_at": OPTIONAL_TIME},
            "history": HISTORY,
        },
        metrics={
            "business_month_start_timestamp_seconds": MetricSpec(
                "Start of the calendar month (UTC); month = months ago, 0 = this month.", labels=MONTH
            ),
            "business_mrr_opening_usd": MetricSpec("MRR at the start of the month, in US dollars.", labels=MONTH),
            "business_mrr_closing_usd": MetricSpec(
                "MRR at the end of the month (now, for the month in progress), in US dollars.", labels=MONTH
            ),
            "business_mrr_movement_usd": MetricSpec(
                "MRR moved in the month, in US dollars, all positive: closing = opening + new + expansion +"
                " reactivation - contraction - churn.",
                labels={"month": MONTH_INDEXES, "movement": list(MOVEMENTS), "in_progress": FLAG},
            ),
            "business_net_revenue_retention_ratio": MetricSpec(
                "MRR at the end of the month from the customers paying at its start, over their MRR then.",
                labels=MONTH,
            ),
            "business_gross_revenue_retention_ratio": MetricSpec(
                "Net revenue retention of the month without expansion (0..1).", labels=MONTH
            ),
            "business_net_revenue_retention_12m_ratio": MetricSpec(
                "MRR at the start of this month from the customers paying 12 months earlier, over their MRR then."
            ),
            "business_gross_revenue_retention_12m_ratio": MetricSpec(
                "12-month net revenue retention without expansion (0..1)."
            ),
            "business_paying_customers": MetricSpec("Customers with a paid subscription now, by plan.", labels=TIER),
            "business_arpu_usd": MetricSpec(
                "Average revenue per paying customer (MRR / paying customers) by plan, in US dollars.", labels=TIER
            ),
        },
        compute=revenue_samples,
    ),
    "trial_conversion": Calculator(
        inputs={
            "trials": {"user_id": KEY, "plan": TEXT, "status": TEXT, "started_at": TIME, "ended_at": OPTIONAL_TIME},
            "history": HISTORY,
        },
        metrics={
            "business_trials_running": MetricSpec("Trials running now."),
            "business_trials_ended": MetricSpec(
                "Trials that ended in the month, by outcome (converted to a paid plan, or expired).",
                labels={"month": MONTH_INDEXES, "outcome": list(TRIAL_OUTCOMES), "in_progress": FLAG},
            ),
            "business_trial_conversion_ratio": MetricSpec(
                "Share of the trials that ended in the month which converted to a paid plan (0..1).", labels=MONTH
            ),
        },
        compute=trial_samples,
    ),
}


def calculate(name: str, rows: Mapping[str, Sequence[Mapping[Any, Any]]], now: datetime) -> list[Sample]:
    """The samples of calculator `name` from its inputs' rows (as the database or a vector gives them)."""
    calculator = CALCULATORS[name]
    inputs = {
        input_name: coerce(rows.get(input_name, []), columns, f"input {input_name}")
        for input_name, columns in calculator.inputs.items()
    }
    return calculator.compute(inputs, now)


# Queries of either kind ---------------------------------------------------------------------------------


def check_spec(spec: QuerySpec) -> str | None:
    """What is wrong with a query spec of either kind, or None."""
    if not spec.compute:
        return check_query(spec)
    calculator = CALCULATORS.get(spec.compute)
    if calculator is None:
        return f"compute: one of {', '.join(sorted(CALCULATORS))}, got {spec.compute!r}"
    if spec.sql.strip() or spec.metrics:
        return f"no sql or metrics with compute (calculator {spec.compute} has its own metrics)"
    if set(spec.inputs) != set(calculator.inputs):
        return f"inputs {', '.join(calculator.inputs)} for calculator {spec.compute}, got {', '.join(spec.inputs)}"
    for name, sql in spec.inputs.items():
        problem = check_bind_parameters(sql) if sql.strip() else "an SQL statement"
        if problem:
            return f"inputs.{name}: {problem}"
    return None


def metric_specs(spec: QuerySpec) -> dict[str, MetricSpec]:
    """The metrics a query publishes: its own, or its calculator's."""
    return CALCULATORS[spec.compute].metrics if spec.compute else spec.metrics


class AnalyticsRunner:
    """Runs a computed query: every input in one transaction with a database-side deadline, then the core."""

    def __init__(self, engine: Engine, spec: QuerySpec, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._spec = spec
        self._clock = clock
        self._statements = {name: (statement(sql), bind_parameter_names(sql)) for name, sql in spec.inputs.items()}

    def __call__(self) -> list[Sample]:
        now = self._clock()
        rows: dict[str, list[Any]] = {}
        with self._engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with statement_deadline(connection, self._spec.timeout_seconds):
                for name, (text, parameters) in self._statements.items():
                    result = connection.execute(text, parameter_values(parameters, now))
                    rows[name] = list(result.mappings())
        return calculate(self._spec.compute, rows, now)


def runner(engine: Engine, spec: QuerySpec, clock: Callable[[], datetime] = utc_now) -> Callable[[], list[Sample]]:
    """The runner of a query of either kind."""
    return AnalyticsRunner(engine, spec, clock) if spec.compute else QueryRunner(engine, spec, clock)
