"""The staff UI's words for statuses and for each event of a ticket's log (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from tickets_app import schemas
from tickets_app.wording import EVENT_KINDS, STATUS_LABELS, describe_event, label
from tickets_app.workflow import STATUSES

NAMES = {"ann": "Ann Agent", "raj": "Raj Rao"}


def name_of(person: str | None) -> str:
    return NAMES.get(person or "", person or "nobody")


def test_every_event_kind_the_desk_documents_has_a_sentence() -> None:
    documented = schemas.Event.model_fields["kind"].description or ""
    assert sorted(kind.strip() for kind in documented.split(",")) == sorted(EVENT_KINDS)


def test_every_status_has_a_name() -> None:
    assert set(STATUS_LABELS) == set(STATUSES)
    assert label(STATUS_LABELS, "in_progress") == "In progress"
    assert label(STATUS_LABELS, "escalated") == "Escalated"  # one added later still reads as a word


@pytest.mark.parametrize(
    ("kind", "data", "actor", "expected"),
    [
        ("created", {"priority": "low", "status": "open"}, "cust-1", "opened the ticket (Low priority)"),
        (
            "status",
            {"from": "open", "to": "in_progress", "priority": "low"},
            "ann",
            "changed the status from Open to In progress",
        ),
        ("priority", {"from": "low", "to": "urgent"}, "ann", "changed the priority from Low to Urgent"),
        ("assignee", {"from": None, "to": "ann"}, "ann", "took the ticket"),
        ("assignee", {"from": None, "to": "raj"}, "ann", "assigned it to Raj Rao"),
        ("assignee", {"from": "raj", "to": "ann"}, "ann", "took the ticket over from Raj Rao"),
        ("assignee", {"from": "ann", "to": "raj"}, "admin", "reassigned it from Ann Agent to Raj Rao"),
        ("assignee", {"from": "raj", "to": None}, "ann", "unassigned Raj Rao"),
        ("category", {"from": None, "to": "billing"}, "ann", "set the category to billing"),
        ("category", {"from": "billing", "to": "api"}, "ann", "changed the category from billing to api"),
        ("category", {"from": "api", "to": None}, "ann", "removed the category api"),
        ("tags", {"added": ["beta", "eu"], "removed": []}, "ann", "added the tags beta, eu"),
        ("tags", {"added": ["vip"], "removed": ["eu"]}, "ann", "added the tag vip and removed the tag eu"),
        ("merged", {"into": 12}, "ann", "merged this ticket into #12"),
        ("merged", {"from": 5}, "ann", "merged #5 into this ticket"),
        ("follow_up", {"ticket": 9}, "cust-1", "replied after it closed, which opened follow-up #9"),
        (
            "sla_breach",
            {"metric": "first_response", "priority": "high", "due_at": "2026-11-27T16:00:00+00:00"},
            "system",
            "recorded an SLA breach: the first reply was due 2026-11-27 16:00 UTC",
        ),
        ("alert", {"firing": ["a1", "b2"]}, "alertmanager", "reported 2 alerts firing"),
        ("alert", {"firing": []}, "alertmanager", "reported every alert of the group resolved"),
        (
            "alert_stale",
            {"stale": ["a1"]},
            "alertmanager",
            "sent an out-of-date notification (1 alert), which was ignored",
        ),
        ("escalated", {"to_team": "billing"}, "ann", "escalated: to team billing"),  # a kind added later
        ("status", {"to": "open"}, "ann", "status: to open"),  # data of another shape
    ],
)
def test_events_read_as_sentences(kind: str, data: dict[str, Any], actor: str, expected: str) -> None:
    sentence = describe_event(kind, data, actor, name_of)
    assert sentence == expected
    assert "{" not in sentence and "_" not in sentence
