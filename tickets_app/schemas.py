"""The desk's API contract, written once: a pydantic model for every JSON body it takes and gives.

The API validates requests with these models and its OpenAPI document (``/openapi.json``) is generated from
them (``service_kit.openapi``); the Desk takes the same models, so the web UI's form passes the same checks.
Every limit lives here and only here. What a schema cannot state stays with the pure cores and answers
with the kit's errors: a status change the workflow forbids (409), spans of a day that overlap (422), a
category, ticket, upload or calendar that does not exist (409, naming the field: desk.UnknownReference).

Conventions, each because schemathesis found the contract and the code disagreeing without it:
- request bodies are strict: a string is never read as a number nor a number as a boolean, and an unknown
  field is refused;
- an optional field may also be null, meaning the same as leaving it out;
- patterns spell every character class out, without ``\\s`` or ``\\d``: those mean different characters in
  the document's regex dialect (ECMA 262), in Python and in pydantic's Rust engine;
- dates and times are RFC 3339 text, read by strict parsers (``service_kit.openapi.DateTime`` and
  ``full_date`` here), never pydantic's lenient ones, which also take Unix timestamps.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, TypeVar, get_args

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_core.core_schema import ValidationInfo
from typing_extensions import TypeAliasType

from service_kit.errors import ValidationError
from service_kit.openapi import MAX_ID, DateTime, Strict, json_integer, rfc3339, validation_details
from service_kit.tiers import DeskTier
from tickets_app.attachments import ALLOWED_TYPES, ATTACHMENT_ID_PATTERN
from tickets_app.business_hours import WEEKDAYS
from tickets_app.query import Sort, View
from tickets_app.sla import METRICS
from tickets_app.workflow import Priority, Status

MAX_SUBJECT_CHARS = 300
MAX_BODY_CHARS = 50_000
MAX_NAME_CHARS = 80  # categories, calendars and SLA policies (their columns are String(80))
MAX_TEMPLATE_NAME_CHARS = 120
MAX_TEMPLATE_CHARS = 20_000
MAX_TAGS = 20
TAG_PATTERN = "^[a-z0-9][a-z0-9_.-]{0,63}$"
MAX_ATTACHMENTS = 10
MAX_PAGE_SIZE = 100
# A list's total is counted up to here and one more: beyond it the list has "more than", so no page pays
# for counting everything.
TOTAL_CAP = 10_000
# The same for a search with a phrase among its terms (tickets_app.query.is_phrase): neither index counts a
# phrase cheaply (GIN keeps no positions, so every ticket holding its words is checked for them side by side;
# FTS5 reads each one's position lists), and counting 10,001 of a phrase of common words took 0.1-0.5 s at
# 100k tickets (issue 16). Search APIs cap totals this low too (GitHub's search gives at most 1,000 results).
PHRASE_TOTAL_CAP = 1_000
MAX_POSITION = 2**31 - 1  # PostgreSQL INTEGER
MAX_TARGET_MINUTES = 366 * 24 * 60  # a year: beyond it a deadline is no deadline

BLANK = " \t\n\u000b\f\r"  # what counts as blank around a subject, a body or a name (str.strip's ASCII part)
NOT_BLANK = "^[^\\u0000]*[^\\u0000 \\t\\n\\u000b\\f\\r][^\\u0000]*$"  # some text, and no NUL (json_object)

Metric = Literal["first_response", "next_response", "resolution"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Source = Literal["customer", "alert"]
assert (get_args(Metric), get_args(Weekday)) == (METRICS, WEEKDAYS)


def _strip(value: str) -> str:
    return value.strip(BLANK)


def limits(max_length: int) -> Any:
    """Text with something besides blanks and at most ``max_length`` characters, blanks around it
    included (the limit is what a client may send); STRIPPED then stores it without them."""
    return Field(min_length=1, max_length=max_length, pattern=NOT_BLANK)


STRIPPED = AfterValidator(_strip)
Subject = Annotated[str, limits(MAX_SUBJECT_CHARS), STRIPPED]
MessageText = Annotated[str, limits(MAX_BODY_CHARS), STRIPPED]
Name = Annotated[str, limits(MAX_NAME_CHARS), STRIPPED]
PersonId = Annotated[str, limits(120), STRIPPED]
Tag = Annotated[str, Field(pattern=TAG_PATTERN)]
UploadToken = Annotated[str, Field(pattern=ATTACHMENT_ID_PATTERN, description="an id from POST /attachments")]

_FULL_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def full_date(value: object) -> date:
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _FULL_DATE.fullmatch(value):
        raise PydanticCustomError("date", "expected a date YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("date", "not a date of the calendar") from None


Day = Annotated[date, BeforeValidator(full_date)]


# The bounds come before the validator: after it, pydantic writes them as "ge"/"le", no JSON Schema words.
Id = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(json_integer)]
Count = Annotated[int, Field(ge=0, le=MAX_ID), BeforeValidator(json_integer)]
Position = Annotated[int, Field(ge=0, le=MAX_POSITION), BeforeValidator(json_integer)]


class Body(Strict):
    """A request body: unknown fields refused (the kit's Strict), and strict types."""

    model_config = ConfigDict(strict=True)


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Mapping[str, Any]) -> M:
    """`data` (a web form's, say) validated by `model`, failing as the API does: the kit's 422 naming fields."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(validation_details(exc)) from None


# -- tickets -----------------------------------------------------------------------------------------


class CustomerInput(Body):
    id: PersonId
    name: str = Field(default="", max_length=200)
    email: str = Field(default="", max_length=254)
    tier: DeskTier | None = Field(default=None, description="null or left out: no tier")


class TicketInput(Body):
    """A new ticket with its first message. Staff name the customer they open it for; without one the
    ticket is their own internal one. A customer's own ticket is theirs, whatever ``customer`` says."""

    subject: Subject
    body: MessageText
    priority: Priority = "medium"
    category: Name | None = Field(default=None, description="the name of a category")
    tags: list[Tag] = Field(default=[], max_length=MAX_TAGS)
    attachments: list[UploadToken] = Field(default=[], max_length=MAX_ATTACHMENTS)
    customer: CustomerInput | None = Field(default=None, description="staff only")


class MessageInput(Body):
    body: MessageText
    internal: bool = Field(default=False, description="a note only staff see (staff only)")
    attachments: list[UploadToken] = Field(default=[], max_length=MAX_ATTACHMENTS)


class TicketFields(Body):
    """Fields staff change; a field left out stays as it is, null removes an assignee or a category."""

    status: Status | None = None
    priority: Priority | None = None
    assignee: PersonId | None = None
    category: Name | None = None
    tags: list[Tag] | None = Field(default=None, max_length=MAX_TAGS)


class TicketChange(TicketFields):
    """``PATCH /tickets/{id}``: fields and a message, applied together or not at all."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    message: MessageInput | None = None

    @model_validator(mode="after")
    def _something_to_do(self) -> TicketChange:
        if not self.model_fields_set:
            raise PydanticCustomError("nothing_to_do", "nothing to do: give a message or fields to change")
        return self


class NewMessage(MessageInput):
    """``POST /tickets/{id}/messages``: a message, and optionally fields changed in the same step."""

    fields: TicketFields = Field(default_factory=lambda: TicketFields())

    def as_change(self) -> TicketChange:
        message = MessageInput(body=self.body, internal=self.internal, attachments=self.attachments)
        changed = {name: getattr(self.fields, name) for name in self.fields.model_fields_set}
        return TicketChange(message=message, **changed)


class MergeRequest(Body):
    target_id: Id


class Customer(BaseModel):
    id: str
    name: str
    email: str
    tier: DeskTier | None


class SlaSummary(BaseModel):
    policy: str | None
    first_response_due_at: datetime | None
    next_response_due_at: datetime | None
    resolution_due_at: datetime | None
    next_due_at: datetime | None
    breached: bool
    at_risk: bool


class Ticket(BaseModel):
    id: int
    subject: str
    status: Status
    priority: Priority
    category: str | None
    tags: list[str]
    customer: Customer
    created_at: datetime
    updated_at: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    merged_into_id: int | None
    follow_up_of_id: int | None
    assignee: str | None = Field(default=None, description="staff only")
    sla: SlaSummary | None = Field(default=None, description="staff only")
    snippet: str | None = Field(default=None, description="search hits in [brackets], when searching")


class Author(BaseModel):
    kind: Literal["customer", "staff", "system"]
    id: str
    name: str


class Attachment(BaseModel):
    id: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    url: str


class Message(BaseModel):
    id: int
    ticket_id: int
    author: Author
    body: str
    internal: bool
    created_at: datetime
    attachments: list[Attachment]


class TicketWithThread(Ticket):
    messages: list[Message]


class TicketUpdate(BaseModel):
    ticket: Ticket
    message: Message | None = Field(default=None, description="the message added, if any")
    follow_up: Ticket | None = Field(default=None, description="a customer's reply to a closed ticket opens this one")


class TicketPageMeta(BaseModel):
    has_more: bool
    total: int = Field(
        description=f"tickets in the list, counted up to {TOTAL_CAP + 1:,}, or up to {PHRASE_TOTAL_CAP + 1:,} when "
        "the search has a phrase among its terms (a quoted phrase, or a word the index splits in several, like "
        "e-mail): a total one above its cap says there may be more (total_capped)"
    )
    total_capped: bool = Field(
        description=f"the total reached its cap ({TOTAL_CAP:,}, or {PHRASE_TOTAL_CAP:,} with a phrase) and was "
        "counted no further"
    )


class TicketPageLinks(BaseModel):
    next: str | None = Field(default=None, description="the next page, while there is one")
    prev: str | None = Field(default=None, description="the page before, after the first")


class TicketPage(BaseModel):
    data: list[Ticket]
    meta: TicketPageMeta
    links: TicketPageLinks


class Event(BaseModel):
    id: int
    at: datetime
    actor: str
    kind: str = Field(
        description="created, status, priority, assignee, category, tags, merged, follow_up, sla_breach, "
        "alert, alert_stale"
    )
    data: dict[str, Any]


class EventList(BaseModel):
    data: list[Event]


class MetricState(BaseModel):
    state: Literal["active", "paused", "fulfilled", "inactive"]
    started_at: datetime | None
    due_at: datetime | None
    fulfilled_at: datetime | None
    elapsed_seconds: float
    remaining_seconds: float
    breached: bool
    breached_at: datetime | None


class Breach(BaseModel):
    metric: Metric
    started_at: datetime
    breached_at: datetime


class SlaState(BaseModel):
    policy: str | None
    metrics: dict[Metric, MetricState]
    breaches: list[Breach]


class RenderedTemplate(BaseModel):
    template_id: int
    body: str


# -- list query --------------------------------------------------------------------------------------

# A position in a list: the sort key of the last ticket shown (Unix microseconds for times, the rank for
# priority and relevance) and its id. Any text of this shape is a position, so no cursor is refused.
CURSOR_PATTERN = "^-?[0-9]{1,20}([.][0-9]{1,20})?(e[-+]?[0-9]{1,3})?~[0-9]{1,18}$"
INSTANT_OR_DAY = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}]}


def instant_or_day(value: object) -> datetime:
    """A filter bound: an RFC 3339 date-time, or a date meaning its start in UTC."""
    if isinstance(value, str) and _FULL_DATE.fullmatch(value):
        day = full_date(value)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    return rfc3339(value)


Bound = Annotated[datetime, BeforeValidator(instant_or_day), WithJsonSchema(INSTANT_OR_DAY)]
Filter = Annotated[str, Field(description="comma-separated values")]


def _query_parameters(schema: dict[str, Any]) -> None:
    """A query string has no null: document each optional parameter as its type alone."""
    for prop in schema.get("properties", {}).values():
        options = prop.pop("anyOf", None)
        if options is not None:
            kept = [option for option in options if option.get("type") != "null"]
            prop.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
        if prop.get("default", ...) is None:
            del prop["default"]


class TicketQuery(BaseModel):
    """``GET /tickets``: the search box's query language in ``q``, explicit filters, sort and page."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_query_parameters, populate_by_name=True)

    q: str = Field(
        default="",
        description="the search box, its first 1000 characters: status:open priority:urgent tag:billing "
        'assignee:none tier:professional requester:ID created>2026-01-01 sort:-updated "exact phrase" words',
    )
    status: Filter | None = None
    priority: Filter | None = None
    category: Filter | None = None
    tag: Filter | None = None
    assignee: Filter | None = Field(default=None, description="comma-separated staff ids; none for unassigned")
    requester: Filter | None = Field(default=None, description="comma-separated customer ids or emails")
    tier: Filter | None = None
    created_after: Bound | None = None
    created_before: Bound | None = None
    updated_after: Bound | None = None
    updated_before: Bound | None = None
    view: View | None = Field(
        default=None,
        description="a set of tickets the query narrows: open (unresolved work), and for staff mine (assigned "
        "to the caller), unassigned, at_risk (a deadline within sla.at_risk_minutes), breached, each unresolved; "
        "or all. Left out: all",
    )
    sort: Sort | None = Field(
        default=None,
        description="relevance when searching words, else due (the nearest SLA deadline first) in a view other "
        "than all, else -updated; - descends. priority puts unresolved tickets before resolved and closed ones",
    )
    page_size: int = Field(default=25, ge=1, le=MAX_PAGE_SIZE, alias="page[size]")
    page_cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, alias="page[cursor]", description="links.next"
    )
    page_before: str | None = Field(
        default=None,
        pattern=CURSOR_PATTERN,
        alias="page[before]",
        description="links.prev: the page ending before this position (page[cursor] is then ignored)",
    )


# -- attachments ------------------------------------------------------------------------------------

SERVED_TYPES = sorted({content_type.split(";")[0] for content_type, _ in ALLOWED_TYPES.values()})

# -- alert webhook (Alertmanager's payload version 4: its field names are fixed by Alertmanager) --------

# What a field Alertmanager may add later can hold: any JSON, kept and ignored. Declared, so the document
# says the one thing the desk refuses in it: text with NUL (service_kit.requests.json_object).
JsonValue = TypeAliasType("JsonValue", "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None")


class AlertmanagerAlert(BaseModel):
    """One alert of a notification. Fields Alertmanager may add later are kept, not refused."""

    model_config = ConfigDict(extra="allow", strict=True)
    __pydantic_extra__: dict[str, JsonValue] = Field(init=False)

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    starts_at: DateTime = Field(alias="startsAt")
    ends_at: DateTime = Field(alias="endsAt", description="when it resolved; a firing alert's is Go's zero time")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str | None = Field(default=None, min_length=1, max_length=64)


class AlertmanagerPayload(BaseModel):
    """Alertmanager's webhook notification, payload version 4."""

    model_config = ConfigDict(extra="allow", strict=True)
    __pydantic_extra__: dict[str, JsonValue] = Field(init=False)

    version: Literal["4"]
    group_key: str = Field(alias="groupKey", min_length=1)
    truncated_alerts: Count = Field(default=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str
    group_labels: dict[str, str] = Field(default={}, alias="groupLabels")
    common_labels: dict[str, str] = Field(default={}, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default={}, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[AlertmanagerAlert]


class WebhookResult(BaseModel):
    ticket_id: int
    action: Literal["created", "updated", "repeat", "resolved", "stale"]
    status: Status


# -- admin: templates, categories, calendars, SLA policies ---------------------------------------------


class TemplateInput(Body):
    name: Annotated[str, limits(MAX_TEMPLATE_NAME_CHARS), STRIPPED]
    body: Annotated[str, limits(MAX_TEMPLATE_CHARS), STRIPPED] = Field(
        description="placeholders: {{customer_name}}, {{ticket_id}}, {{agent_name}}"
    )


class Template(BaseModel):
    id: int
    name: str
    body: str


class TemplateList(BaseModel):
    data: list[Template]


class CategoryInput(Body):
    name: Name


class Category(BaseModel):
    id: int
    name: str


class CategoryList(BaseModel):
    data: list[Category]


TIME_ZONES = sorted(zoneinfo.available_timezones())


def _known_zone(name: str) -> str:
    if name not in TIME_ZONES:
        raise PydanticCustomError("time_zone", "unknown time zone '{name}'", {"name": name[:64]})
    return name


TimeZone = Annotated[str, AfterValidator(_known_zone), WithJsonSchema({"type": "string", "enum": TIME_ZONES})]
Start = Annotated[str, Field(pattern="^([01][0-9]|2[0-3]):[0-5][0-9]$")]
End = Annotated[str, Field(pattern="^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")]
Span = Annotated[tuple[Start, End], Field(strict=False, description='["09:00", "17:00"]; ends after it starts')]


class CalendarInput(Body):
    """Weekly working hours in a time zone, minus whole-day holidays. A day's spans must not overlap."""

    name: Name
    timezone: TimeZone = "UTC"
    hours: dict[Weekday, Annotated[list[Span], Field(min_length=1)]] = Field(min_length=1)
    holidays: list[Day] = []

    def definition(self) -> dict[str, Any]:
        """What the desk stores and ``business_hours.Calendar.from_dict`` reads."""
        return self.model_dump(mode="json", exclude={"name"})


class Calendar(BaseModel):
    id: int
    name: str
    timezone: str
    # Lists, not tuples: schemathesis 4.32 cannot read a response schema's prefixItems.
    hours: dict[Weekday, list[Annotated[list[str], Field(min_length=2, max_length=2)]]]
    holidays: list[date]


class CalendarList(BaseModel):
    data: list[Calendar]


Minutes = Annotated[float, Field(gt=0, le=MAX_TARGET_MINUTES)]


class Targets(Body):
    """Minutes per metric; a metric left out has no target."""

    first_response: Minutes | None = None
    next_response: Minutes | None = None
    resolution: Minutes | None = None


class Conditions(Body):
    """All must hold for the policy to apply; a condition left out matches anything."""

    priority: Annotated[list[Priority], Field(min_length=1)] | None = None
    tier: Annotated[list[DeskTier], Field(min_length=1)] | None = None
    source: Annotated[list[Source], Field(min_length=1)] | None = None


class SlaPolicyInput(Body):
    """Policies are tried by position, lowest first; the first whose conditions match applies."""

    model_config = ConfigDict(
        json_schema_extra={
            # Business hours are a calendar's: with them, calendar_id is an id, not null or left out. (Its
            # bounds are repeated: schemathesis 4.32 reads a branch without the properties around it.)
            "anyOf": [
                {"properties": {"business_hours": {"const": False}}},
                {
                    "properties": {"calendar_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID}},
                    "required": ["calendar_id"],
                },
            ]
        }
    )

    name: Name
    position: Position = 0
    conditions: Conditions = Field(default_factory=lambda: Conditions())
    targets: Targets
    business_hours: bool = False
    pause_statuses: list[Status] = Field(default=["waiting"], description="statuses that pause the clock")
    calendar_id: Id | None = Field(default=None, validate_default=True)

    @field_validator("calendar_id")
    @classmethod
    def _calendar_for_business_hours(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None and info.data.get("business_hours"):
            raise PydanticCustomError("calendar_needed", "business-hours policies need a calendar")
        return value

    def definition(self) -> dict[str, Any]:
        """What the desk stores and ``sla.Policy.from_dict`` reads."""
        return self.model_dump(
            mode="json", include={"conditions", "targets", "business_hours", "pause_statuses"}, exclude_none=True
        )


class SlaPolicy(BaseModel):
    id: int
    name: str
    position: int
    conditions: Conditions
    targets: Targets
    business_hours: bool
    pause_statuses: list[Status]
    calendar_id: int | None


class SlaPolicyList(BaseModel):
    data: list[SlaPolicy]
