"""The API's answers built from rows, as the models of tickets_app.schemas. Customers get no internal
fields (assignee, SLA internals)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from tickets_app import schemas
from tickets_app.desk import Actor
from tickets_app.models import Attachment, Message, Ticket, TicketEvent
from tickets_app.search import MARK_END, MARK_START


def sla_summary(ticket: Ticket, at_risk: timedelta, now: datetime) -> schemas.SlaSummary:
    due = ticket.sla_due_at
    return schemas.SlaSummary(
        policy=ticket.sla_policy,
        first_response_due_at=ticket.first_response_due_at,
        next_response_due_at=ticket.next_response_due_at,
        resolution_due_at=ticket.resolution_due_at,
        next_due_at=due,
        breached=ticket.sla_breached or (due is not None and due <= now),
        at_risk=due is not None and now < due <= now + at_risk,
    )


def ticket_out(
    ticket: Ticket, tags: list[str], actor: Actor, at_risk: timedelta, now: datetime, snippet: str | None = None
) -> schemas.Ticket:
    """A ticket as `actor` may see it: staff-only fields are left out (not null) for others."""
    fields: dict[str, object] = {
        "id": ticket.id,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "category": ticket.category.name if ticket.category else None,
        "tags": tags,
        "customer": {
            "id": ticket.customer_id,
            "name": ticket.customer_name,
            "email": ticket.customer_email,
            "tier": ticket.customer_tier,
        },
        "created_at": ticket.created_at,
        "updated_at": ticket.updated_at,
        "first_response_at": ticket.first_response_at,
        "resolved_at": ticket.resolved_at,
        "closed_at": ticket.closed_at,
        "merged_into_id": ticket.merged_into_id,
        "follow_up_of_id": ticket.follow_up_of_id,
    }
    if actor.is_staff:
        fields["assignee"] = ticket.assignee_id
        fields["sla"] = sla_summary(ticket, at_risk, now)
    if snippet is not None:
        fields["snippet"] = snippet.replace(MARK_START, "[").replace(MARK_END, "]")
    return schemas.Ticket.model_validate(fields)


def attachment_out(attachment: Attachment, url: Callable[[Attachment], str]) -> schemas.Attachment:
    return schemas.Attachment(
        id=attachment.id,
        filename=attachment.filename,
        content_type=attachment.content_type,
        size_bytes=attachment.size_bytes,
        sha256=attachment.sha256,
        url=url(attachment),
    )


def message_out(message: Message, url: Callable[[Attachment], str]) -> schemas.Message:
    return schemas.Message(
        id=message.id,
        ticket_id=message.ticket_id,
        author=schemas.Author.model_validate(
            {"kind": message.author_kind, "id": message.author_id, "name": message.author_name}
        ),
        body=message.body,
        internal=message.internal,
        created_at=message.created_at,
        attachments=[attachment_out(a, url) for a in message.attachments],
    )


def event_out(event: TicketEvent) -> schemas.Event:
    return schemas.Event(id=event.id, at=event.at, actor=event.actor, kind=event.kind, data=event.data)
