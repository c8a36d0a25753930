"""Policy selection and calendar validation around the SLA clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tickets_app.business_hours import Calendar, CalendarError
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
        ({"tier": "pro", "priority": "urgent"}, "urgent"),
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
        ({"timezone": "Mars/Olympus", "hours": {"mon": [["09:00", "17:00"]]}}, "timezone"),
        ({"hours": {"funday": [["09:00", "17:00"]]}}, "hours.funday"),
        ({"hours": {"mon": [["17:00", "09:00"]]}}, "hours.mon"),
        ({"hours": {}}, "hours"),
        ({"hours": {"mon": [["09:00", "17:00"]]}, "holidays": ["christmas"]}, "holidays[0]"),
    ],
)
def test_bad_calendar_names_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(CalendarError) as caught:
        Calendar.from_dict(data)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "targets": {"first_reply": 10}}, "targets.first_reply"),
        ({"name": "x", "targets": {"resolution": -5}}, "targets.resolution"),
    ],
)
def test_bad_policy_names_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Policy.from_dict(data)


def test_business_seconds_across_dst_change() -> None:
    """New York leaves DST on 2026-11-01: Friday 16:00 EDT + 2h business = Monday 10:00 EST (15:00Z)."""
    calendar = Calendar.from_dict(
        {"timezone": "America/New_York", "hours": {d: [["09:00", "17:00"]] for d in ("mon", "fri")}}
    )
    start = datetime(2026, 10, 30, 20, 0, tzinfo=UTC)
    assert calendar.add_seconds(start, 7200) == datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
    assert calendar.seconds_between(start, datetime(2026, 11, 2, 15, 0, tzinfo=UTC)) == 7200
