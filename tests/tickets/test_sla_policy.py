"""Policy selection and calendar validation around the SLA clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service_kit.errors import ValidationError
from tickets_app.business_hours import Calendar, CalendarError
from tickets_app.schemas import CalendarInput, parse
from tickets_app.sla import Policy, compute_sla, select_policy

POLICIES = [
    Policy.from_dict(
        {
            "name": "enterprise-urgent",
            "conditions": {"tier": ["enterprise"], "priority": ["urgent"]},
            "targets": {"first_response": 15},
        }
    ),
    Policy.from_dict({"name": "urgent", "conditions": {"priority": ["urgent"]}, "targets": {"first_response": 60}}),
    Policy.from_dict({"name": "default", "targets": {"first_response": 480}}),
]


@pytest.mark.parametrize(
    ("ticket", "expected"),
    [
        ({"tier": "enterprise", "priority": "urgent"}, "enterprise-urgent"),
        ({"tier": "professional", "priority": "urgent"}, "urgent"),
        ({"tier": None, "priority": "urgent"}, "urgent"),
        ({"tier": "enterprise", "priority": "low"}, "default"),
    ],
)
def test_select_policy_first_match_wins(ticket: dict[str, str], expected: str) -> None:
    policy = select_policy(POLICIES, ticket)
    assert policy is not None
    assert policy.name == expected


def test_no_policy_means_no_clocks() -> None:
    result = compute_sla([{"at": "2026-11-24T10:00:00Z", "type": "created"}], None, Calendar(), datetime.now(UTC))
    assert result.metrics == {}
    assert result.breaches == ()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"hours": {"mon": [["17:00", "09:00"]]}}, "hours.mon"),
        ({"hours": {"tue": [["09:00", "09:00"]]}}, "hours.tue"),
        ({"hours": {"mon": [["09:00", "13:00"], ["12:00", "17:00"]]}}, "hours.mon"),
        ({"hours": {"mon": [["09:00", "24:00"], ["09:00", "17:00"]]}}, "hours.mon"),
    ],
)
def test_spans_that_end_before_they_start_or_overlap_name_their_day(data: dict[str, object], field: str) -> None:
    """What CalendarInput's schema cannot state; the rest of a calendar's shape is the schema's."""
    with pytest.raises(CalendarError) as caught:
        Calendar.from_dict(data)
    assert set(caught.value.details) == {field}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"timezone": "Mars/Olympus", "hours": {"mon": [["09:00", "17:00"]]}}, "timezone"),
        ({"hours": {"funday": [["09:00", "17:00"]]}}, "hours.funday.[key]"),
        ({"hours": {"mon": [["9:00", "17:00"]]}}, "hours.mon[0][0]"),
        ({"hours": {"mon": [["24:00", "24:00"]]}}, "hours.mon[0][0]"),
        ({"hours": {}}, "hours"),
        ({"hours": {"mon": []}}, "hours.mon"),
        ({"hours": {"mon": [["09:00", "17:00"]]}, "holidays": ["christmas"]}, "holidays[0]"),
        ({"hours": {"mon": [["09:00", "17:00"]]}, "holidays": ["2026-02-30"]}, "holidays[0]"),
        ({"hours": {"mon": [["09:00", "17:00"]]}, "holidays": {}}, "holidays"),
    ],
)
def test_a_calendar_of_the_wrong_shape_is_refused_by_its_schema(data: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse(CalendarInput, {"name": "c", **data})
    assert set(caught.value.details) == {field}


def test_business_seconds_across_dst_change() -> None:
    """New York leaves DST on 2026-11-01: Friday 16:00 EDT + 2h business = Monday 10:00 EST (15:00Z)."""
    calendar = Calendar.from_dict(
        {"timezone": "America/New_York", "hours": {d: [["09:00", "17:00"]] for d in ("mon", "fri")}}
    )
    start = datetime(2026, 10, 30, 20, 0, tzinfo=UTC)
    assert calendar.add_seconds(start, 7200) == datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
    assert calendar.seconds_between(start, datetime(2026, 11, 2, 15, 0, tzinfo=UTC)) == 7200


def test_a_deadline_the_calendar_cannot_reach_within_three_years_is_no_deadline() -> None:
    """A minute of work a week and a day's target: the policy gives no deadline instead of failing every
    ticket it applies to."""
    calendar = Calendar.from_dict({"hours": {"mon": [["09:00", "09:01"]]}})
    start = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert calendar.add_seconds(start, 60) == datetime(2026, 11, 23, 9, 1, tzinfo=UTC)
    assert calendar.add_seconds(start, 24 * 3600) is None
    policy = Policy.from_dict({"name": "slow", "business_hours": True, "targets": {"resolution": 24 * 60}})
    result = compute_sla([{"at": start, "type": "created"}], policy, calendar, start)
    assert result.metrics["resolution"]["due_at"] is None
    assert result.breaches == ()
