"""The desk's operations over a SQLAlchemy session: tickets, messages, merges, SLA upkeep.

Flask-free so the API, the web UI, the alert webhook and the sweeper share one implementation. Every
operation runs inside the caller's transaction: either everything it changed is committed or nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from service_kit.errors import AuthorizationError, ConflictError, NotFoundError, ValidationError
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
from tickets_app.search import SearchIndex
from tickets_app.sla import METRICS, Policy, SlaResult, compute_sla, select_policy
from tickets_app.workflow import (
    FOLLOW_UP,
    PRIORITIES,
    STATUSES,
    TIERS,
    TransitionError,
    check_transition,
    is_due_for_auto_close,
    status_after_customer_reply,
)

TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
TEMPLATE_PLACEHOLDERS = ("customer_name", "ticket_id", "agent_name")
MAX_BODY_CHARS = 50_000


@dataclass(frozen=True)
class Actor:
    """Who acts: a customer (own tickets, public messages), an agent, an admin, or the system."""

    id: str
    role: str
    name: str = ""
    email: str = ""
    tier: str = "free"

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
        """Own messages plus those of tickets merged into it, oldest first; customers see public only."""
        merged = select(Ticket.id).where(Ticket.merged_into_id == ticket.id)
        query = (
            select(Message)
            .where((Message.ticket_id == ticket.id) | Message.ticket_id.in_(merged))
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

    def events(self, session: Session, ticket: Ticket) -> list[TicketEvent]:
        return list(
            session.scalars(select(TicketEvent).where(TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id))
        )

    # -- writing -----------------------------------------------------------------------------------

    def create_ticket(
        self,
        session: Session,
        actor: Actor,
        payload: Mapping[str, Any],
        now: datetime,
        *,
        follow_up_of_id: int | None = None,
        alert_group_key: str | None = None,
    ) -> Ticket:
        """A new ticket with its first message. Staff must name the customer; customers are the requester."""
        errors: dict[str, str] = {}
        subject = _text_field(payload, "subject", 300, errors)
        body = _text_field(payload, "body", MAX_BODY_CHARS, errors)
        priority = _choice(payload, "priority", PRIORITIES, errors, default="medium")
        if actor.is_staff:
            customer = payload.get("customer")
            if not isinstance(customer, Mapping):
                errors["customer"] = "staff must give the customer: {id, name, email, tier}"
                customer = {}
            requester = Actor(
                id=_text_field(customer, "id", 120, errors, prefix="customer."),
                role="customer",
                name=str(customer.get("name", ""))[:200],
                email=str(customer.get("email", ""))[:254],
                tier=_choice(customer, "tier", TIERS, errors, default="free", prefix="customer."),
            )
        else:
            requester = actor
        category = self._category(session, payload.get("category"), errors)
        tags = _tags(payload.get("tags", []), errors)
        attachments = self._own_attachments(session, actor, payload.get("attachments", []), errors)
        if errors:
            raise ValidationError(errors)
        ticket = Ticket(
            subject=subject,
            status="open",
            priority=priority,
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
        self._log(session, ticket, actor, "created", now, {"priority": priority, "status": "open"})
        if tags:
            self._set_tags(session, ticket, actor, tags, now)
        self._add_message(session, ticket, actor, body, internal=False, attachments=attachments, now=now)
        self.refresh(session, ticket, now)
        return ticket

    def update_ticket(
        self, session: Session, actor: Actor, ticket: Ticket, payload: Mapping[str, Any], now: datetime
    ) -> Change:
        """Change fields and/or add a message in one step: all of it is applied or none of it.

        Payload keys: status, priority, assignee, category, tags, message {body, internal, attachments}.
        """
        fields = {k: payload[k] for k in ("status", "priority", "assignee", "category", "tags") if k in payload}
        if fields and not actor.is_staff:
            raise AuthorizationError(f"customers cannot change {', '.join(sorted(fields))}")
        if ticket.merged_into_id is not None:
            raise ConflictError(f"ticket {ticket.id} was merged into {ticket.merged_into_id}; write there")
        errors: dict[str, str] = {}
        message_spec = payload.get("message")
        body, internal, attachments = None, False, []
        if message_spec is not None:
            if not isinstance(message_spec, Mapping):
                errors["message"] = "expected an object {body, internal, attachments}"
            else:
                body = _text_field(message_spec, "body", MAX_BODY_CHARS, errors, prefix="message.")
                internal = message_spec.get("internal", False)
                if not isinstance(internal, bool):
                    errors["message.internal"] = "expected true or false"
                elif internal and not actor.is_staff:
                    errors["message.internal"] = "only staff can write internal notes"
                attachments = self._own_attachments(
                    session, actor, message_spec.get("attachments", []), errors, prefix="message."
                )
        if not fields and message_spec is None:
            errors["message"] = "nothing to do: give a message or fields to change"
        new_status = _choice(fields, "status", STATUSES, errors) if "status" in fields else None
        if new_status is not None:
            try:
                check_transition(ticket.status, new_status)
            except TransitionError as exc:
                errors["status"] = str(exc)
        priority = _choice(fields, "priority", PRIORITIES, errors) if "priority" in fields else None
        category = self._category(session, fields.get("category"), errors) if "category" in fields else None
        tags = _tags(fields.get("tags"), errors) if "tags" in fields else None
        assignee = fields.get("assignee", ...)
        if assignee is not ... and assignee is not None and (not isinstance(assignee, str) or not assignee):
            errors["assignee"] = "expected a staff id or null"
        if errors:
            raise ValidationError(errors)

        change = Change(ticket=ticket)
        if body is not None and not actor.is_staff and ticket.status == "closed":
            return self._follow_up(session, actor, ticket, body, attachments, now)
        if priority is not None and priority != ticket.priority:
            change.before["priority"], change.after["priority"] = ticket.priority, priority
            self._log(session, ticket, actor, "priority", now, {"from": ticket.priority, "to": priority})
            ticket.priority = priority
        if assignee is not ... and assignee != ticket.assignee_id:
            change.before["assignee"], change.after["assignee"] = ticket.assignee_id, assignee
            self._log(session, ticket, actor, "assignee", now, {"from": ticket.assignee_id, "to": assignee})
            ticket.assignee_id = assignee
        if "category" in fields:
            new_name = category.name if category else None
            old_name = ticket.category.name if ticket.category else None
            if new_name != old_name:
                change.before["category"], change.after["category"] = old_name, new_name
                self._log(session, ticket, actor, "category", now, {"from": old_name, "to": new_name})
                ticket.category = category
        if tags is not None:
            old_tags = self.tags_of(session, [ticket.id]).get(ticket.id, [])
            if sorted(tags) != old_tags:
                change.before["tags"], change.after["tags"] = old_tags, sorted(tags)
                self._set_tags(session, ticket, actor, tags, now)
        if body is not None:
            change.message = self._add_message(session, ticket, actor, body, internal, attachments, now)
            if not actor.is_staff and new_status is None:
                new_status = status_after_customer_reply(ticket.status)
        if new_status is not None and new_status != ticket.status:
            change.before["status"], change.after["status"] = ticket.status, new_status
            self._set_status(session, ticket, actor, new_status, now)
        ticket.updated_at = now
        self.refresh(session, ticket, now)
        return change

    def merge(self, session: Session, actor: Actor, source: Ticket, target: Ticket, now: datetime) -> Ticket:
        """Fold `source` into `target`: both threads show under the target; the source closes."""
        if source.id == target.id:
            raise ValidationError({"target_id": "cannot merge a ticket into itself"})
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
        dues = [result.due_at(metric) for metric in METRICS]
        ticket.sla_check_at = min((due for due in dues if due is not None and due > now), default=None)
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
        follow_up = self.create_ticket(
            session,
            actor,
            {"subject": f"Re: {closed.subject}"[:300], "body": body, "priority": closed.priority},
            now,
            follow_up_of_id=closed.id,
        )
        follow_up.category = closed.category
        for attachment in attachments:
            attachment.message_id = follow_up.messages[0].id if follow_up.messages else None
        self._log(session, closed, actor, "follow_up", now, {"ticket": follow_up.id})
        return Change(ticket=closed, follow_up=follow_up, message=follow_up.messages[0] if follow_up.messages else None)

    def _set_tags(self, session: Session, ticket: Ticket, actor: Actor, tags: list[str], now: datetime) -> None:
        old = set(self.tags_of(session, [ticket.id]).get(ticket.id, []))
        new = set(tags)
        session.execute(delete(ticket_tags).where(ticket_tags.c.ticket_id == ticket.id))
        if new:
            session.execute(insert(ticket_tags), [{"ticket_id": ticket.id, "tag": tag} for tag in sorted(new)])
        self._log(session, ticket, actor, "tags", now, {"added": sorted(new - old), "removed": sorted(old - new)})

    def _category(self, session: Session, name: Any, errors: dict[str, str]) -> Category | None:
        if name is None:
            return None
        category = session.scalar(select(Category).where(Category.name == str(name)))
        if category is None:
            errors["category"] = f"unknown category {str(name)[:80]!r}"
        return category

    def _own_attachments(
        self, session: Session, actor: Actor, ids: Any, errors: dict[str, str], prefix: str = ""
    ) -> list[Attachment]:
        """Uploads of this actor not yet attached to a message (the second step of a two-step upload)."""
        if not ids:
            return []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 10:
            errors[f"{prefix}attachments"] = "expected a list of at most 10 upload tokens"
            return []
        found = session.scalars(
            select(Attachment).where(
                Attachment.id.in_(ids), Attachment.uploader_id == actor.id, Attachment.message_id.is_(None)
            )
        ).all()
        if len(found) != len(set(ids)):
            errors[f"{prefix}attachments"] = "unknown or already used upload token"
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


def _text_field(data: Mapping[str, Any], key: str, limit: int, errors: dict[str, str], prefix: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        errors[prefix + key] = "required, a non-empty string"
        return ""
    if len(value) > limit:
        errors[prefix + key] = f"at most {limit} characters"
    if "\x00" in value:  # PostgreSQL text cannot hold NUL; refused on every backend alike
        errors[prefix + key] = "must not contain NUL characters"
    return value.strip()


def _choice(
    data: Mapping[str, Any],
    key: str,
    allowed: Iterable[str],
    errors: dict[str, str],
    default: str | None = None,
    prefix: str = "",
) -> str:
    value = data.get(key, default)
    options = tuple(allowed)
    if value not in options:
        errors[prefix + key] = f"expected one of {', '.join(options)}"
        return default or options[0]
    return str(value)


def _tags(value: Any, errors: dict[str, str]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 20:
        errors["tags"] = "expected a list of at most 20 tags"
        return []
    tags = [str(tag).strip().lower() for tag in value]
    bad = [tag for tag in tags if not TAG_PATTERN.match(tag)]
    if bad:
        errors["tags"] = f"tags are lower-case letters, digits, '_', '.', '-' (bad: {bad[0][:64]!r})"
    return sorted(set(tags))


def template_errors(body: str) -> dict[str, str]:
    """Unknown placeholders are refused when a template is saved, not discovered when it is used."""
    unknown = sorted({m.group(1) for m in PLACEHOLDER.finditer(body)} - set(TEMPLATE_PLACEHOLDERS))
    if unknown:
        return {"body": f"unknown placeholder {{{{{unknown[0]}}}}}; known: {', '.join(TEMPLATE_PLACEHOLDERS)}"}
    return {}
