"""Business-hours arithmetic: a weekly schedule in a time zone, minus holidays.

Pure functions over aware datetimes (UTC in, UTC out). The SLA clock asks two questions only:
how many business seconds lie between two instants, and which instant lies N business seconds after
another. Both walk the calendar one local day at a time, so DST changes fall out of zoneinfo.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from service_kit.errors import ValidationError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# A deadline further than this in calendar days is no deadline: the calendar has (almost) no working time.
MAX_DAYS_SCANNED = 3 * 366


class CalendarError(ValidationError):
    """A calendar definition that cannot be used: a 422 naming the offending key (`field`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__({field: message})
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Calendar:
    """Weekly working hours (local time) in `timezone`, with whole-day holidays.

    `always_open` is the calendar-hours case: every second counts.
    """

    timezone: str = "UTC"
    hours: Mapping[int, tuple[tuple[time, time | None], ...]] = field(default_factory=dict)
    holidays: frozenset[date] = frozenset()
    always_open: bool = False

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def calendar_hours(cls) -> Calendar:
        return cls(always_open=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Calendar:
        """Build from `{"timezone", "hours": {"mon": [["09:00", "17:00"]]}, "holidays": [...]}`, shaped as
        `tickets_app.schemas.CalendarInput` checks it; None means calendar hours (24/7). Raises
        CalendarError naming the day whose spans end before they start or overlap."""
        if data is None:
            return cls.calendar_hours()
        hours = {
            WEEKDAYS.index(day_name): _day_spans(f"hours.{day_name}", spans)
            for day_name, spans in data["hours"].items()
        }
        holidays = frozenset(date.fromisoformat(value) for value in data.get("holidays", ()))
        return cls(timezone=data.get("timezone", "UTC"), hours=hours, holidays=holidays)

    def working_spans(self, day: date) -> list[tuple[datetime, datetime]]:
        """The UTC intervals worked on local `day` (empty on holidays and days off)."""
        if day in self.holidays:
            return []
        zone = self.zone
        spans = []
        for start, end in self.hours.get(day.weekday(), ()):
            local_start = datetime.combine(day, start, tzinfo=zone)
            # None is "24:00": the end of the local day.
            local_end = (
                datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
                if end is None
                else datetime.combine(day, end, tzinfo=zone)
            )
            spans.append((local_start.astimezone(UTC), local_end.astimezone(UTC)))
        return spans

    def _spans_from(self, instant: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working spans overlapping or after `instant`, clipped to start no earlier than it, for
        MAX_DAYS_SCANNED days."""
        day = instant.astimezone(self.zone).date() - timedelta(days=1)
        for offset in range(MAX_DAYS_SCANNED):
            for start, end in self.working_spans(day + timedelta(days=offset)):
                if end <= instant:
                    continue
                yield max(start, instant), end

    def seconds_between(self, start: datetime, end: datetime) -> float:
        """Business seconds in [start, end); 0 when end <= start."""
        if end <= start:
            return 0.0
        if self.always_open:
            return (end - start).total_seconds()
        total = 0.0
        day = start.astimezone(self.zone).date() - timedelta(days=1)
        last_day = end.astimezone(self.zone).date() + timedelta(days=1)
        while day <= last_day:
            for span_start, span_end in self.working_spans(day):
                overlap = (min(span_end, end) - max(span_start, start)).total_seconds()
                if overlap > 0:
                    total += overlap
            day += timedelta(days=1)
        return total

    def add_seconds(self, start: datetime, seconds: float) -> datetime | None:
        """The instant at which `seconds` business seconds have passed since `start`; None when that is
        more than MAX_DAYS_SCANNED days away: a target the calendar's working time cannot reach is no
        deadline, rather than an error for every ticket the policy applies to."""
        if self.always_open:
            return start + timedelta(seconds=seconds)
        remaining = max(seconds, 0.0)
        for span_start, span_end in self._spans_from(start):
            available = (span_end - span_start).total_seconds()
            if remaining <= available:
                return span_start + timedelta(seconds=remaining)
            remaining -= available
        return None


def _day_spans(field: str, spans: Sequence[Sequence[str]]) -> tuple[tuple[time, time | None], ...]:
    """One weekday's spans in order; each must end after it starts and after the one before it ends."""
    parsed = sorted((_parse_span(field, span) for span in spans), key=lambda span: span[0])
    for (_, end), (start, _) in itertools.pairwise(parsed):
        if end is None or end > start:
            raise CalendarError(field, f"spans overlap: one ends at {_clock(end)}, the next starts at {_clock(start)}")
    return tuple(parsed)


def _clock(moment: time | None) -> str:
    return "24:00" if moment is None else moment.strftime("%H:%M")


def _parse_span(field: str, span: Sequence[str]) -> tuple[time, time | None]:
    start = time.fromisoformat(span[0])
    end = None if span[1] == "24:00" else time.fromisoformat(span[1])
    if end is not None and end <= start:
        raise CalendarError(field, f"span {list(span)!r} ends before it starts")
    return start, end
