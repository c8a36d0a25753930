"""The desk's operations over a SQLAlchemy session: tickets, messages, merges, SLA upkeep.

Flask-free so the API, the web UI, the alert webhook and the sweeper share one implementation. Every
operation runs inside the caller's transaction: either everything it changed is committed or nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from service_kit.errors import AuthorizationError, ConflictError, NotFoundError, ValidationError
from service_kit.tiers import STAFF_TIER
from tickets_app.business_hours import Calendar
from tickets_app.models import (
    Attachment,
    BusinessCalendar,
    Category,
    Message,
    SlaPolicy,
    Template,
    Ticket,
    TicketEvent,
    ticket_tags,
)
from tickets_app.schemas import MAX_SUBJECT_CHARS, TicketChange, TicketInput
from tickets_app.search import SearchIndex
from tickets_app.sla import METRICS, Policy, SlaResult, compute_sla, select_policy
from tickets_app.workflow import (
    FOLLOW_UP,
    OPEN_STATUSES,
    check_transition,
    is_due_for_auto_close,
    status_after_customer_reply,
)

PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
TEMPLATE_PLACEHOLDERS = ("customer_name", "ticket_id", "agent_name")


class UnknownReference(ConflictError):
    """A body naming a category, ticket, upload or calendar that does not exist: a 409 naming the field.
    Not a 422: the same request succeeds once the thing exists. Not a 404: that says the path's resource
    is missing (and schemathesis reads it so, right after creating that resource)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, {field: message})


@dataclass(frozen=True)
class Actor:
    """Who acts: a customer (own tickets, public messages), an agent, an admin, or the system."""

    id: str
    role: str
    name: str = ""
    email: str = ""
    tier: str | None = None  # a customer's plan (service_kit.tiers), None when unknown

    @property
    def is_staff(self) -> bool:
        return self.role in ("agent", "admin", "system")


@dataclass
class Change:
    """What an update did, for the audit record and the API response."""

    ticket: Ticket
    message: Message | None = None
    follow_up: Ticket | None = None
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)


class Desk:
    """Ticket operations. `index` keeps search in step; SLA settings come from the config."""

    def __init__(self, index: SearchIndex, at_risk_seconds: float = 3600, auto_close_days: float = 4) -> None:
        self.index = index
        self.at_risk_seconds = at_risk_seconds
        self.auto_close_days = auto_close_days

    # -- reading -----------------------------------------------------------------------------------

    def get_ticket(self, session: Session, actor: Actor, ticket_id: int, for_update: bool = False) -> Ticket:
        """The ticket if the actor may see it; `for_update` locks the row where the database can (PostgreSQL)."""
        ticket = session.get(
            Ticket, ticket_id, options=[selectinload(Ticket.category)], with_for_update=for_update or None
        )
        if ticket is None or (not actor.is_staff and ticket.customer_id != actor.id):
            raise NotFoundError(f"ticket {ticket_id} not found")
        return ticket

    def thread(self, session: Session, actor: Actor, ticket: Ticket) -> list[Message]:
        """Own messages plus those of tickets merged into it, oldest first; customers see public only.

        The ticket ids come first, as a list: `ticket_id = x OR ticket_id IN (subquery)` could use no index,
        and PostgreSQL scanned every message for it (912 ms at 1M messages). A list is one index lookup per
        ticket, on messages' ticket index and, for the merged ones, `ix_tickets_merged_into`.
        """
        merged = session.scalars(select(Ticket.id).where(Ticket.merged_into_id == ticket.id))
        query = (
            select(Message)
            .where(Message.ticket_id.in_([ticket.id, *merged]))
            .options(selectinload(Message.attachments))
            .order_by(Message.created_at, Message.id)
        )
        if not actor.is_staff:
            query = query.where(Message.internal.is_(False))
        return list(session.scalars(query))

    def tags_of(self, session: Session, ticket_ids: Iterable[int]) -> dict[int, list[str]]:
        tags: dict[int, list[str]] = {}
        rows = session.execute(
            select(ticket_tags.c.ticket_id, ticket_tags.c.tag)
            .where(ticket_tags.c.ticket_id.in_(list(ticket_ids)))
            .order_by(ticket_tags.c.tag)
        )
        for ticket_id, tag in rows:
            tags.setdefault(ticket_id, []).append(tag)
        return tags

    def open_tickets_of(self, session: Session, ticket: Ticket, limit: int) -> list[Ticket]:
        """The requester's other unresolved tickets, newest first (the index on customer and id)."""
        return list(
            session.scalars(
                select(Ticket)
                .where(
                    Ticket.customer_id == ticket.customer_id,
                    Ticket.id != ticket.id,
                    Ticket.status.in_(OPEN_STATUSES),
                    Ticket.merged_into_id.is_(None),
                )
                .order_by(Ticket.id.desc())
                .limit(limit)
            )
        )

    def events(self, session: Session, ticket: Ticket) -> list[TicketEvent]:
        return list(
            session.scalars(select(TicketEvent).where(TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id))
        )

    # -- writing -----------------------------------------------------------------------------------

    def create_ticket(
        self,
        session: Session,
        actor: Actor,
        new: TicketInput,
        now: datetime,
        *,
        follow_up_of_id: int | None = None,
        alert_group_key: str | None = None,
    ) -> Ticket:
        """A new ticket with its first message. Staff name the customer or open an internal ticket of
        their own; a customer is the requester of theirs."""
        if not actor.is_staff:
            requester = actor
        elif new.customer is not None:
            given = new.customer
            requester = Actor(id=given.id, role="customer", name=given.name, email=given.email, tier=given.tier)
        else:
            requester = Actor(id=actor.id, role="customer", name=actor.name, email=actor.email, tier=STAFF_TIER)
        category = self._category(session, new.category) if new.category is not None else None
        attachments = self._own_attachments(session, actor, new.attachments, "attachments")
        ticket = Ticket(
            subject=new.subject,
            status="open",
            priority=new.priority,
            category=category,
            customer_id=requester.id,
            customer_name=requester.name,
            customer_email=requester.email,
            customer_tier=requester.tier,
            created_at=now,
            updated_at=now,
            follow_up_of_id=follow_up_of_id,
            alert_group_key=alert_group_key,
        )
        session.add(ticket)
        session.flush()
        self._log(session, ticket, actor, "created", now, {"priority": new.priority, "status": "open"})
        if new.tags:
            self._set_tags(session, ticket, actor, new.tags, now)
        self._add_message(session, ticket, actor, new.body, internal=False, attachments=attachments, now=now)
        self.refresh(session, ticket, now)
        return ticket

    def update_ticket(
        self,
        session: Session,
        actor: Actor,
        ticket: Ticket,
        change: TicketChange,
        now: datetime,
        attachments_field: str = "message.attachments",
    ) -> Change:
        """Change fields and/or add a message in one step: all of it is applied or none of it.
        `attachments_field` is where the request named the message's uploads, for a 404 naming it."""
        given = change.model_fields_set - {"message"}
        if given and not actor.is_staff:
            raise AuthorizationError(f"customers cannot change {', '.join(sorted(given))}")
        if ticket.merged_into_id is not None:
            raise ConflictError(f"ticket {ticket.id} was merged into {ticket.merged_into_id}; write there")
        message = change.message
        if message is not None and message.internal and not actor.is_staff:
            raise AuthorizationError("only staff can write internal notes")
        if change.status is not None:
            check_transition(ticket.status, change.status)
        category = self._category(session, change.category) if change.category is not None else None
        attachments = self._own_attachments(session, actor, message.attachments, attachments_field) if message else []

        result = Change(ticket=ticket)
        if message is not None and not actor.is_staff and ticket.status == "closed":
            return self._follow_up(session, actor, ticket, message.body, attachments, now)
        if change.priority is not None and change.priority != ticket.priority:
            result.before["priority"], result.after["priority"] = ticket.priority, change.priority
            self._log(session, ticket, actor, "priority", now, {"from": ticket.priority, "to": change.priority})
            ticket.priority = change.priority
        if "assignee" in given and change.assignee != ticket.assignee_id:
            result.before["assignee"], result.after["assignee"] = ticket.assignee_id, change.assignee
            self._log(session, ticket, actor, "assignee", now, {"from": ticket.assignee_id, "to": change.assignee})
            ticket.assignee_id = change.assignee
        if "category" in given:
            new_name = category.name if category else None
            old_name = ticket.category.name if ticket.category else None
            if new_name != old_name:
                result.before["category"], result.after["category"] = old_name, new_name
                self._log(session, ticket, actor, "category", now, {"from": old_name, "to": new_name})
                ticket.category = category
        if change.tags is not None:
            tags = sorted(set(change.tags))
            old_tags = self.tags_of(session, [ticket.id]).get(ticket.id, [])
            if tags != old_tags:
                result.before["tags"], result.after["tags"] = old_tags, tags
                self._set_tags(session, ticket, actor, tags, now)
        new_status: str | None = change.status
        if message is not None:
            result.message = self._add_message(session, ticket, actor, message.body, message.internal, attachments, now)
            if not actor.is_staff and new_status is None:
                new_status = status_after_customer_reply(ticket.status)
        if new_status is not None and new_status != ticket.status:
            result.before["status"], result.after["status"] = ticket.status, new_status
            self._set_status(session, ticket, actor, new_status, now)
        ticket.updated_at = now
        self.refresh(session, ticket, now)
        return result

    def merge(self, session: Session, actor: Actor, source: Ticket, target: Ticket, now: datetime) -> Ticket:
        """Fold `source` into `target`: both threads show under the target; the source closes."""
        if source.id == target.id:
            raise ConflictError("a ticket cannot be merged into itself", {"target_id": "is this ticket"})
        if source.merged_into_id is not None or target.merged_into_id is not None:
            raise ConflictError("a merged ticket cannot be merged again")
        session.execute(update(Ticket).where(Ticket.merged_into_id == source.id).values(merged_into_id=target.id))
        source.merged_into_id = target.id
        if source.status != "closed":
            self._set_status(session, source, actor, "closed", now)
        self._log(session, source, actor, "merged", now, {"into": target.id})
        self._log(session, target, actor, "merged", now, {"from": source.id})
        source.updated_at = target.updated_at = now
        self.refresh(session, source, now)
        self.refresh(session, target, now)
        return target

    def render_template(self, template: Template, ticket: Ticket, agent: Actor) -> str:
        values = {
            "customer_name": ticket.customer_name,
            "ticket_id": str(ticket.id),
            "agent_name": agent.name,
        }
        return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template.body)

    # -- SLA upkeep --------------------------------------------------------------------------------

    def refresh(self, session: Session, ticket: Ticket, now: datetime) -> SlaResult:
        """Recompute the SLA deadlines stored on the ticket, record new breaches, reindex for search."""
        session.flush()
        result = self.sla_state(session, ticket, now)
        ticket.sla_policy = result.policy
        for metric in METRICS:
            setattr(ticket, f"{metric}_due_at", result.due_at(metric))
        for breach in result.breaches:
            self._record_breach_once(session, ticket, breach.metric, breach.started_at, breach.breached_at, now)
        ticket.sla_breached = bool(result.breaches)
        dues = [due for due in (result.due_at(metric) for metric in METRICS) if due is not None]
        ticket.sla_due_at = min(dues, default=None)
        ticket.sla_check_at = min((due for due in dues if due > now), default=None)
        self.index.reindex(session, [ticket.merged_into_id or ticket.id])
        return result

    def sla_state(self, session: Session, ticket: Ticket, now: datetime) -> SlaResult:
        policies = session.scalars(select(SlaPolicy).order_by(SlaPolicy.position, SlaPolicy.id)).all()
        rules = [(Policy.from_dict({**p.definition, "name": p.name}), p.calendar) for p in policies]
        facts = {"priority": ticket.priority, "tier": ticket.customer_tier, "source": _source(ticket)}
        chosen = select_policy([policy for policy, _ in rules], facts)
        stored_calendar: BusinessCalendar | None = next((c for p, c in rules if p is chosen), None)
        calendar = Calendar.from_dict(stored_calendar.definition) if stored_calendar else Calendar.calendar_hours()
        return compute_sla(self._clock_events(session, ticket), chosen, calendar, now)

    def schedule_recompute(self, session: Session, now: datetime) -> None:
        """After a policy or calendar change: the next sweep recomputes every unresolved ticket."""
        session.execute(update(Ticket).where(Ticket.status.not_in(("resolved", "closed"))).values(sla_check_at=now))

    def sweep(self, session: Session, now: datetime) -> int:
        """Periodic upkeep: record breaches whose deadline passed and auto-close resolved tickets.

        Only tickets whose next deadline has come are recomputed, so a sweep costs what changed.
        """
        due = session.scalars(
            select(Ticket).where(Ticket.sla_check_at <= now, Ticket.status.not_in(("resolved", "closed")))
        ).all()
        for ticket in due:
            self.refresh(session, ticket, now)
        cutoff = now - timedelta(days=self.auto_close_days)
        # Locked, and skipped when another sweep or a request holds them: otherwise two sweeps at once
        # (replicas, or old and new during a rolling deploy) both read "resolved" and both close it.
        resolved = session.scalars(
            select(Ticket)
            .where(Ticket.status == "resolved", Ticket.resolved_at <= cutoff)
            .with_for_update(skip_locked=True)
        ).all()
        system = Actor(id="system", role="system", name="auto-close")
        for ticket in resolved:
            if is_due_for_auto_close(ticket.status, ticket.resolved_at, now, self.auto_close_days):
                self._set_status(session, ticket, system, "closed", now)
                self.refresh(session, ticket, now)
        return len(due)

    # -- internals ---------------------------------------------------------------------------------

    def _clock_events(self, session: Session, ticket: Ticket) -> list[dict[str, Any]]:
        """The ticket's own history in the SLA clock's vocabulary, in time order."""
        events: list[tuple[datetime, int, dict[str, Any]]] = [(ticket.created_at, 0, {"type": "created"})]
        for message in session.scalars(select(Message).where(Message.ticket_id == ticket.id)):
            if message.author_kind == "system":
                continue  # notices written by the desk itself answer nobody
            reply = {"type": "reply", "author": message.author_kind, "public": not message.internal}
            events.append((message.created_at, 1, reply))
        status_changes = session.scalars(
            select(TicketEvent).where(TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "status")
        )
        for event in status_changes:
            events.append((event.at, 2, {"type": "status", "to": event.data["to"]}))
        events.sort(key=lambda item: (item[0], item[1]))
        return [{**event, "at": at} for at, _, event in events]

    def _record_breach_once(
        self, session: Session, ticket: Ticket, metric: str, started: datetime, due: datetime, now: datetime
    ) -> None:
        key = f"{metric}@{started.isoformat()}"
        exists = session.scalar(
            select(func.count()).where(TicketEvent.ticket_id == ticket.id, TicketEvent.dedupe_key == key)
        )
        if exists:
            return
        try:
            with session.begin_nested():
                # Recorded when seen (`now`), never back-dated; the deadline it missed is in the data.
                self._log(
                    session,
                    ticket,
                    Actor("system", "system"),
                    "sla_breach",
                    now,
                    {"metric": metric, "priority": ticket.priority, "due_at": due.isoformat()},
                    dedupe_key=key,
                )
        except IntegrityError:
            pass  # another worker recorded it first

    def _set_status(self, session: Session, ticket: Ticket, actor: Actor, status: str, now: datetime) -> None:
        self._log(
            session, ticket, actor, "status", now, {"from": ticket.status, "to": status, "priority": ticket.priority}
        )
        ticket.status = status
        if status == "resolved":
            ticket.resolved_at = now
            ticket.resolution_seconds = (now - ticket.created_at).total_seconds()
        elif status == "closed":
            ticket.closed_at = now
            if ticket.resolved_at is None:
                ticket.resolved_at = now
                ticket.resolution_seconds = (now - ticket.created_at).total_seconds()
        else:
            ticket.resolved_at = None
            ticket.resolution_seconds = None

    def _add_message(
        self,
        session: Session,
        ticket: Ticket,
        actor: Actor,
        body: str,
        internal: bool,
        attachments: list[Attachment],
        now: datetime,
    ) -> Message:
        message = Message(
            ticket_id=ticket.id,
            author_kind="system" if actor.role == "system" else "staff" if actor.is_staff else "customer",
            author_id=actor.id,
            author_name=actor.name,
            body=body,
            internal=internal,
            created_at=now,
        )
        session.add(message)
        session.flush()
        for attachment in attachments:
            attachment.message_id = message.id
        if actor.is_staff and not internal and ticket.first_response_at is None and actor.role != "system":
            ticket.first_response_at = now
            ticket.first_response_seconds = (now - ticket.created_at).total_seconds()
        return message

    def _follow_up(
        self,
        session: Session,
        actor: Actor,
        closed: Ticket,
        body: str,
        attachments: list[Attachment],
        now: datetime,
    ) -> Change:
        """A customer reply to a closed ticket starts a linked ticket instead of reopening history."""
        assert status_after_customer_reply(closed.status) == FOLLOW_UP
        subject = f"Re: {closed.subject}"[:MAX_SUBJECT_CHARS]
        new = TicketInput.model_validate({"subject": subject, "body": body, "priority": closed.priority})
        follow_up = self.create_ticket(session, actor, new, now, follow_up_of_id=closed.id)
        follow_up.category = closed.category
        for attachment in attachments:
            attachment.message_id = follow_up.messages[0].id if follow_up.messages else None
        self._log(session, closed, actor, "follow_up", now, {"ticket": follow_up.id})
        return Change(ticket=closed, follow_up=follow_up, message=follow_up.messages[0] if follow_up.messages else None)

    def _set_tags(self, session: Session, ticket: Ticket, actor: Actor, tags: Iterable[str], now: datetime) -> None:
        old = set(self.tags_of(session, [ticket.id]).get(ticket.id, []))
        new = set(tags)
        session.execute(delete(ticket_tags).where(ticket_tags.c.ticket_id == ticket.id))
        if new:
            session.execute(insert(ticket_tags), [{"ticket_id": ticket.id, "tag": tag} for tag in sorted(new)])
        self._log(session, ticket, actor, "tags", now, {"added": sorted(new - old), "removed": sorted(old - new)})

    def _category(self, session: Session, name: str) -> Category:
        category = session.scalar(select(Category).where(Category.name == name))
        if category is None:
            raise UnknownReference("category", f"no category {name[:80]!r}")
        return category

    def _own_attachments(self, session: Session, actor: Actor, ids: list[str], field: str) -> list[Attachment]:
        """Uploads of this actor not yet attached to a message (the second step of a two-step upload)."""
        if not ids:
            return []
        found = session.scalars(
            select(Attachment).where(
                Attachment.id.in_(ids), Attachment.uploader_id == actor.id, Attachment.message_id.is_(None)
            )
        ).all()
        if len(found) != len(set(ids)):
            raise UnknownReference(field, "no unattached upload of yours with this id")
        return list(found)

    def _log(
        self,
        session: Session,
        ticket: Ticket,
        actor: Actor,
        kind: str,
        now: datetime,
        data: dict[str, Any],
        dedupe_key: str | None = None,
    ) -> None:
        session.add(
            TicketEvent(ticket_id=ticket.id, at=now, actor=actor.id, kind=kind, data=data, dedupe_key=dedupe_key)
        )
        session.flush()


def _source(ticket: Ticket) -> str:
    return "alert" if ticket.alert_group_key else "customer"


def check_template(body: str) -> None:
    """Unknown placeholders are refused when a template is saved, not discovered when it is used."""
    unknown = sorted({m.group(1) for m in PLACEHOLDER.finditer(body)} - set(TEMPLATE_PLACEHOLDERS))
    if unknown:
        known = ", ".join(TEMPLATE_PLACEHOLDERS)
        raise ValidationError({"body": f"unknown placeholder {{{{{unknown[0]}}}}}; known: {known}"})
