"""Request and response models: they validate each request and are the OpenAPI document (one declaration).

A report's ``spec`` is a union discriminated by ``source``; each member is generated from the allow-list
(``reports_service.catalog``), so the document names exactly the dimensions, measures and filter fields of
each source, and a name from another source is a 422 naming the field before any SQL is built. Rules
between fields that a JSON Schema cannot state (a time range's start before its end, ordering only by a
selected column) are model validators: the same 422.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator

from reports_service.catalog import COHORT_DIMENSIONS, COHORT_SOURCE, SOURCES, TIME_DIMENSION, Grain
from service_kit.openapi import DateTime, Strict, json_integer

SharedRole = Literal["agent", "viewer", "service"]  # customers (end users) never see platform reports
Format = Literal["json", "csv", "png", "svg", "pdf"]
Chart = Literal["bar", "line"]
Text = Annotated[str, Field(min_length=1, max_length=200)]
Days = Annotated[int, Field(ge=1, le=732), BeforeValidator(json_integer)]
Limit = Annotated[int, Field(ge=1, le=10_000), BeforeValidator(json_integer)]
Periods = Annotated[int, Field(ge=2, le=24), BeforeValidator(json_integer)]
EMAIL = r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$"


def _plausible(moment: datetime) -> datetime:
    """Years 1970 to 9000: range arithmetic (weeks before a cohort's end, the next day) stays in range."""
    if not 1970 <= moment.year <= 9000:
        raise ValueError("a date-time between the years 1970 and 9000")
    return moment


Moment = Annotated[DateTime, AfterValidator(_plausible)]


class Body(Strict):
    """A request body: unknown fields refused (the kit's Strict), and strict types: a string is never read
    as a number or a boolean. Stored specs are read back through the same models."""

    model_config = ConfigDict(extra="forbid", strict=True)


class TimeRange(Body):
    """The last ``last_days`` days up to now (or up to the scheduled time of a run), or ``start``..``end``."""

    last_days: Days | None = Field(None, description="relative: the days up to the moment the report runs")
    start: Moment | None = Field(None, description="absolute range start (inclusive)")
    end: Moment | None = Field(None, description="absolute range end (exclusive)")

    @model_validator(mode="after")
    def _one_kind(self) -> TimeRange:
        absolute = self.start is not None or self.end is not None
        if self.last_days is not None and absolute:
            raise ValueError("give last_days, or start and end, not both")
        if self.last_days is None and (self.start is None or self.end is None):
            raise ValueError("give last_days, or both start and end")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError("start must be before end")
        return self

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """[start, end) as aware UTC datetimes; a relative range ends at ``now``."""
        if self.last_days is not None:
            return now - timedelta(days=self.last_days), now
        assert self.start is not None and self.end is not None
        return self.start, self.end


def _default_range() -> TimeRange:
    return TimeRange(last_days=30, start=None, end=None)


def _literal(names: tuple[str, ...]) -> Any:
    return Literal[names]


def _order_model(source: str, names: tuple[str, ...]) -> Any:
    fields: dict[str, Any] = {
        "field": (_literal(names), Field(description="a selected dimension or measure")),
        "descending": (bool, True),
    }
    return create_model(f"{_camel(source)}Order", __base__=Body, **fields)


def _filter_model(source: str, names: tuple[str, ...]) -> Any:
    fields: dict[str, Any] = {
        "field": (_literal(names), ...),
        "op": (Literal["in", "not_in"], "in"),
        "values": (list[Text], Field(min_length=1, max_length=100, description="bound as values, never SQL")),
    }
    return create_model(f"{_camel(source)}Filter", __base__=Body, **fields)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _check_table_spec(spec: Any) -> Any:
    """Order only by what is selected; a dimension or measure at most once."""
    if len(set(spec.dimensions)) != len(spec.dimensions):
        raise ValueError("dimensions must not repeat")
    if len(set(spec.measures)) != len(spec.measures):
        raise ValueError("measures must not repeat")
    selected = {*spec.dimensions, *spec.measures, *([TIME_DIMENSION] if spec.time_grain else [])}
    for order in spec.order_by:
        if order.field not in selected:
            raise ValueError(f"order_by field {order.field!r} is not among the selected dimensions and measures")
    return spec


def _table_spec(source: str) -> type[BaseModel]:
    catalog = SOURCES[source]
    dimensions = tuple(catalog.dimensions)
    measures = tuple(catalog.measures)
    # Built at import from the catalog, so the field types are values here (typed Any for mypy).
    fields: dict[str, Any] = {
        "source": (Literal[source], ...),
        "dimensions": (list[_literal(dimensions)], Field(default_factory=list, max_length=len(dimensions))),  # type: ignore[misc]
        "measures": (list[_literal(measures)], Field(min_length=1, max_length=len(measures))),  # type: ignore[misc]
        "time_grain": (Grain | None, Field(None, description=f"adds the '{TIME_DIMENSION}' dimension, bucketed")),
        "time_range": (TimeRange, Field(default_factory=_default_range)),
        "filters": (list[_filter_model(source, dimensions)], Field(default_factory=list, max_length=20)),  # type: ignore[misc]
        "order_by": (
            list[_order_model(source, (*dimensions, *measures, TIME_DIMENSION))],  # type: ignore[misc]
            Field(default_factory=list, max_length=5),
        ),
        "limit": (Limit, 1000),
        "chart": (Chart, "bar"),
    }
    model: type[BaseModel] = create_model(
        f"{_camel(source)}Spec",
        __base__=Body,
        __doc__=catalog.description,
        __validators__={"_rules": model_validator(mode="after")(_check_table_spec)},  # type: ignore[dict-item]
        **fields,
    )
    return model


class CohortFilter(Body):
    field: Literal[tuple(COHORT_DIMENSIONS)]  # type: ignore[valid-type]
    op: Literal["in", "not_in"] = "in"
    values: list[Text] = Field(min_length=1, max_length=100)


class RetentionCohortsSpec(Body):
    """Accounts by sign-up week, and the share of each cohort with a session in week N after sign-up.

    Week N is the Nth whole week after each account's own sign-up; week 0 is 100% by definition. A cell too
    young to have data is null, never 0; a cell some members have not finished yet is marked in progress."""

    source: Literal["retention_cohorts"]
    cohorts: Periods = 12
    periods: Periods = 12
    end: Moment | None = Field(None, description="the last cohort ends the week before this; default: now")
    filters: list[CohortFilter] = Field(default_factory=list, max_length=5)


TABLE_SPECS = {name: _table_spec(name) for name in SOURCES}
assert COHORT_SOURCE == "retention_cohorts"  # the literal of RetentionCohortsSpec.source
if TYPE_CHECKING:
    ReportSpec = Any  # generated members: mypy sees Any
else:
    ReportSpec = Annotated[Union[(*TABLE_SPECS.values(), RetentionCohortsSpec)], Field(discriminator="source")]


class QueryBody(Body):
    spec: ReportSpec


class NewReport(Body):
    name: Text
    description: str = Field("", max_length=2000)
    spec: ReportSpec
    shared_with: list[SharedRole] = Field(default_factory=list, description="roles that may view and run it")


class ReportPatch(Body):
    name: Text | None = None
    description: str | None = Field(None, max_length=2000)
    spec: ReportSpec | None = None
    shared_with: list[SharedRole] | None = None


class ResultQuery(Strict):
    format: Format = "json"


class Column(BaseModel):
    name: str
    kind: Literal["dimension", "measure"]
    unit: str | None


class ReportResult(BaseModel):
    columns: list[Column]
    rows: list[list[Any]]
    in_progress: list[list[bool]] | None = Field(None, description="cohort reports: cells not yet complete")
    range: dict[str, str]
    truncated: bool
    elapsed_ms: float


class Report(BaseModel):
    id: int
    name: str
    description: str
    spec: dict[str, Any]
    owner: str
    shared_with: list[str]
    created_at: str
    updated_at: str


class ReportList(BaseModel):
    data: list[Report]


class Catalog(BaseModel):
    sources: list[dict[str, Any]]


Email = Annotated[str, Field(pattern=EMAIL, max_length=254)]
Cron = Annotated[str, Field(min_length=9, max_length=100, pattern=r"^[0-9*,/ -]+$")]


class NewSchedule(Body):
    report_id: Annotated[int, Field(ge=1, le=2**31 - 1), BeforeValidator(json_integer)]
    cron: Cron = Field(description="five fields: minute hour day-of-month month day-of-week, e.g. 0 7 * * 1")
    timezone: str = Field("UTC", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+/-]+$")
    recipients: list[Email] = Field(min_length=1, max_length=20)
    enabled: bool = True


class SchedulePatch(Body):
    cron: Cron | None = None
    timezone: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+/-]+$")
    recipients: list[Email] | None = Field(None, min_length=1, max_length=20)
    enabled: bool | None = None


class Schedule(BaseModel):
    id: int
    report_id: int
    cron: str
    timezone: str
    recipients: list[str]
    enabled: bool
    next_run_at: str
    last_run_at: str | None
    skipped_runs: int
    created_by: str
    created_at: str


class ScheduleList(BaseModel):
    data: list[Schedule]


class Run(BaseModel):
    id: int
    schedule_id: int | None
    report_id: int
    trigger: str
    scheduled_for: str
    started_at: str
    finished_at: str | None
    status: str
    error: str | None
    delivered_to: list[str]
    pdf_bytes: int | None
    render_seconds: float | None


class RunList(BaseModel):
    data: list[Run]
