"""JSON shapes of the API. Customers get no internal fields (assignee, SLA internals, other tiers)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from tickets_app.desk import Actor
from tickets_app.models import Attachment, Message, Ticket, TicketEvent
from tickets_app.search import MARK_END, MARK_START


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def sla_json(ticket: Ticket, at_risk: timedelta, now: datetime) -> dict[str, Any]:
    due = ticket.next_due_at
    return {
        "policy": ticket.sla_policy,
        "first_response_due_at": iso(ticket.first_response_due_at),
        "next_response_due_at": iso(ticket.next_response_due_at),
        "resolution_due_at": iso(ticket.resolution_due_at),
        "next_due_at": iso(due),
        "breached": ticket.sla_breached or (due is not None and due <= now),
        "at_risk": due is not None and now < due <= now + at_risk,
    }


def ticket_json(
    ticket: Ticket, tags: list[str], actor: Actor, at_risk: timedelta, now: datetime, snippet: str | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
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
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
        "first_response_at": iso(ticket.first_response_at),
        "resolved_at": iso(ticket.resolved_at),
        "closed_at": iso(ticket.closed_at),
        "merged_into_id": ticket.merged_into_id,
        "follow_up_of_id": ticket.follow_up_of_id,
    }
    if actor.is_staff:
        data["assignee"] = ticket.assignee_id
        data["sla"] = sla_json(ticket, at_risk, now)
    if snippet is not None:
        data["snippet"] = snippet.replace(MARK_START, "[").replace(MARK_END, "]")
    return data


def attachment_json(attachment: Attachment, url: Callable[[Attachment], str]) -> dict[str, Any]:
    return {
        "id": attachment.id,
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "size_bytes": attachment.size_bytes,
        "sha256": attachment.sha256,
        "url": url(attachment),
    }


def message_json(message: Message, url: Callable[[Attachment], str]) -> dict[str, Any]:
    return {
        "id": message.id,
        "ticket_id": message.ticket_id,
        "author": {"kind": message.author_kind, "id": message.author_id, "name": message.author_name},
        "body": message.body,
        "internal": message.internal,
        "created_at": iso(message.created_at),
        "attachments": [attachment_json(a, url) for a in message.attachments],
    }


def event_json(event: TicketEvent) -> dict[str, Any]:
    return {"id": event.id, "at": iso(event.at), "actor": event.actor, "kind": event.kind, "data": event.data}
