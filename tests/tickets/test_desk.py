"""Desk operations on a real SQLite database: SLA upkeep, replies, merges, follow-ups, validation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from service_kit.errors import AuthorizationError, ConflictError, ValidationError
from tests.tickets.conftest import AGENT, CUSTOMER, T0, ticket_change, ticket_input
from tickets_app.desk import Desk, UnknownReference
from tickets_app.models import BusinessCalendar, Category, SlaPolicy, Ticket, TicketEvent


def add_policy(session: Session, name: str = "default", **targets: int) -> None:
    session.add(SlaPolicy(name=name, position=0, definition={"targets": targets or {"first_response": 60}}))
    session.flush()


def new_ticket(desk: Desk, session: Session, **extra: object) -> Ticket:
    payload = {"subject": "Cannot log in", "body": "My API key returns 401", "priority": "high", **extra}
    return desk.create_ticket(session, CUSTOMER, ticket_input(payload), T0)


def breach_events(session: Session, ticket: Ticket) -> list[TicketEvent]:
    query = select(TicketEvent).where(TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "sla_breach")
    return list(session.scalars(query))


def test_create_stores_deadline_from_policy(desk: Desk, session: Session) -> None:
    add_policy(session, first_response=60, resolution=240)
    ticket = new_ticket(desk, session)
    assert ticket.sla_policy == "default"
    assert ticket.first_response_due_at == T0 + timedelta(minutes=60)
    assert ticket.resolution_due_at == T0 + timedelta(minutes=240)
    assert ticket.customer_tier == "professional"


def test_breach_recorded_once_at_detection_time(desk: Desk, session: Session) -> None:
    add_policy(session, first_response=60)
    ticket = new_ticket(desk, session)
    desk.sweep(session, T0 + timedelta(minutes=59))
    assert breach_events(session, ticket) == []
    seen = T0 + timedelta(minutes=75)
    assert desk.sweep(session, seen) == 1
    assert desk.sweep(session, seen + timedelta(minutes=5)) == 0  # nothing new is due: nothing recomputed
    desk.refresh(session, ticket, seen + timedelta(minutes=10))
    events = breach_events(session, ticket)
    assert len(events) == 1
    assert events[0].at == seen  # not back-dated to the deadline
    assert events[0].data["due_at"] == (T0 + timedelta(minutes=60)).isoformat()
    assert ticket.sla_breached


def test_waiting_pauses_clock_and_customer_reply_resumes(desk: Desk, session: Session) -> None:
    add_policy(session, resolution=120)
    ticket = new_ticket(desk, session)
    desk.update_ticket(
        session,
        AGENT,
        ticket,
        ticket_change({"status": "waiting", "message": {"body": "Which key?"}}),
        T0 + timedelta(minutes=30),
    )
    assert ticket.resolution_due_at is None
    desk.update_ticket(
        session, CUSTOMER, ticket, ticket_change({"message": {"body": "vbx_live key"}}), T0 + timedelta(hours=5)
    )
    assert ticket.status == "open"
    assert ticket.resolution_due_at == T0 + timedelta(hours=5, minutes=90)


def test_internal_note_is_not_first_response(desk: Desk, session: Session) -> None:
    add_policy(session, first_response=60)
    ticket = new_ticket(desk, session)
    desk.update_ticket(
        session,
        AGENT,
        ticket,
        ticket_change({"message": {"body": "looking", "internal": True}}),
        T0 + timedelta(minutes=5),
    )
    assert ticket.first_response_at is None
    assert ticket.first_response_due_at == T0 + timedelta(minutes=60)
    desk.update_ticket(
        session, AGENT, ticket, ticket_change({"message": {"body": "Fixed"}}), T0 + timedelta(minutes=10)
    )
    assert ticket.first_response_at == T0 + timedelta(minutes=10)
    assert ticket.first_response_due_at is None


def test_business_calendar_policy_uses_calendar(desk: Desk, session: Session) -> None:
    calendar = BusinessCalendar(
        name="berlin",
        definition={
            "timezone": "Europe/Berlin",
            "hours": {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")},
        },
    )
    session.add(calendar)
    session.flush()
    session.add(
        SlaPolicy(
            name="bh",
            position=0,
            calendar_id=calendar.id,
            definition={"business_hours": True, "targets": {"first_response": 120}},
        )
    )
    ticket = desk.create_ticket(
        session, CUSTOMER, ticket_input({"subject": "s", "body": "b"}), T0.replace(day=27, hour=15)
    )
    assert ticket.first_response_due_at == T0.replace(day=30, hour=9)


def test_update_is_atomic_when_a_reference_is_unknown(desk: Desk, session: Session) -> None:
    ticket = new_ticket(desk, session)
    change = ticket_change({"priority": "urgent", "category": "nope", "message": {"body": "hi"}})
    with pytest.raises(UnknownReference) as caught:
        desk.update_ticket(session, AGENT, ticket, change, T0)
    assert set(caught.value.details) == {"category"}
    assert ticket.priority == "high"
    assert len(ticket.messages) == 1


def test_a_status_the_workflow_forbids_is_a_conflict_and_changes_nothing(desk: Desk, session: Session) -> None:
    ticket = new_ticket(desk, session)
    desk.update_ticket(session, AGENT, ticket, ticket_change({"status": "closed"}), T0)
    with pytest.raises(ConflictError) as caught:
        desk.update_ticket(session, AGENT, ticket, ticket_change({"status": "open", "priority": "low"}), T0)
    assert set(caught.value.details) == {"status"}
    assert (ticket.status, ticket.priority) == ("closed", "high")


def test_customer_cannot_change_fields_or_write_notes(desk: Desk, session: Session) -> None:
    ticket = new_ticket(desk, session)
    with pytest.raises(AuthorizationError):
        desk.update_ticket(session, CUSTOMER, ticket, ticket_change({"priority": "urgent"}), T0)
    with pytest.raises(AuthorizationError, match="only staff can write internal notes"):
        desk.update_ticket(session, CUSTOMER, ticket, ticket_change({"message": {"body": "x", "internal": True}}), T0)


def test_reply_to_closed_ticket_opens_linked_follow_up(desk: Desk, session: Session) -> None:
    ticket = new_ticket(desk, session)
    desk.update_ticket(session, AGENT, ticket, ticket_change({"status": "closed"}), T0 + timedelta(minutes=1))
    change = desk.update_ticket(
        session, CUSTOMER, ticket, ticket_change({"message": {"body": "again!"}}), T0 + timedelta(days=9)
    )
    assert ticket.status == "closed"
    assert change.follow_up is not None
    assert change.follow_up.follow_up_of_id == ticket.id
    assert change.follow_up.status == "open"
    assert [m.body for m in change.follow_up.messages] == ["again!"]


def test_resolved_reopens_on_customer_reply_and_auto_closes(desk: Desk, session: Session) -> None:
    ticket = new_ticket(desk, session)
    desk.update_ticket(session, AGENT, ticket, ticket_change({"status": "resolved"}), T0)
    desk.update_ticket(
        session, CUSTOMER, ticket, ticket_change({"message": {"body": "still broken"}}), T0 + timedelta(hours=1)
    )
    assert ticket.status == "open"
    desk.update_ticket(session, AGENT, ticket, ticket_change({"status": "resolved"}), T0 + timedelta(hours=2))
    desk.sweep(session, T0 + timedelta(days=2))
    assert ticket.status == "resolved"
    desk.sweep(session, T0 + timedelta(days=3, hours=2))
    assert ticket.status == "closed"


def test_merge_keeps_both_threads_and_closes_source(desk: Desk, session: Session) -> None:
    first = new_ticket(desk, session)
    second = new_ticket(desk, session, body="Same problem from my phone")
    desk.merge(session, AGENT, second, first, T0 + timedelta(minutes=3))
    assert second.status == "closed"
    assert second.merged_into_id == first.id
    bodies = [m.body for m in desk.thread(session, AGENT, first)]
    assert bodies == ["My API key returns 401", "Same problem from my phone"]
    with pytest.raises(ConflictError):
        desk.update_ticket(session, AGENT, second, ticket_change({"message": {"body": "x"}}), T0)


def test_tags_category_and_event_log(desk: Desk, session: Session) -> None:
    session.add(Category(name="billing"))
    ticket = new_ticket(desk, session, tags=["vip"])
    desk.update_ticket(
        session,
        AGENT,
        ticket,
        ticket_change({"tags": ["billing", "vip"], "category": "billing", "assignee": "agent-ann"}),
        T0,
    )
    assert desk.tags_of(session, [ticket.id])[ticket.id] == ["billing", "vip"]
    kinds = [e.kind for e in desk.events(session, ticket)]
    assert kinds == ["created", "tags", "assignee", "category", "tags"]
    with pytest.raises(ValidationError) as caught:
        ticket_change({"tags": ["billing", "Bad Tag!"]})
    assert set(caught.value.details) == {"tags[1]"}
