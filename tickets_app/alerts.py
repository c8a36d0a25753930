"""Incident tickets from Alertmanager's webhook (payload version 4).

One ticket per alert group (Alertmanager's groupKey): the first notification opens it, repeats add a
note only when the set of firing alerts changed, and a resolved notification resolves it. A group that
fires again after its ticket was closed gets a new ticket linked to the old one.

Stale notifications are ignored first. Delivery is at least once, and clustered Alertmanagers deliver out
of order: a peer that waited out its peer timeout sends the firing it computed before another peer sent
resolved. Each alert's fingerprint and startsAt/endsAt order what the desk hears of it (`is_stale`, checked
against `AlertState`, the newest firing applied per group and alert), so such a firing does not reopen the
ticket, while a genuine re-fire (a later startsAt) still does.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from service_kit.alerting.silences import silence_url
from service_kit.tiers import STAFF_TIER
from tickets_app.desk import Actor, Desk, UnknownReference
from tickets_app.models import AlertState, Ticket, TicketEvent
from tickets_app.schemas import (
    MAX_BODY_CHARS,
    MAX_SUBJECT_CHARS,
    AlertmanagerAlert,
    AlertmanagerPayload,
    CustomerInput,
    MessageInput,
    TicketChange,
    TicketInput,
)
from tickets_app.workflow import Priority

ALERTMANAGER = Actor(id="alertmanager", role="system", name="Alertmanager")
SEVERITY_PRIORITY: dict[str, Priority] = {
    "critical": "urgent",
    "page": "urgent",
    "error": "high",
    "warning": "high",
    "info": "low",
}
_TAG_UNSAFE = re.compile(r"[^a-z0-9_.-]+")


@dataclass(frozen=True)
class AlertInstance:
    """One alert as a notification reports it: which alert (fingerprint), which firing of it (startsAt),
    and when that firing ended (endsAt, None while it is firing)."""

    fingerprint: str
    starts_at: datetime
    ends_at: datetime | None


def is_stale(known: AlertInstance | None, seen: AlertInstance) -> bool:
    """Whether `seen` is older than what the desk already applied for the same alert (`known`).

    A firing whose startsAt is not after the known endsAt is the firing that resolution ended: Alertmanager
    gives a new firing of the same labels a new startsAt (Prometheus' new activation), later than the end.
    Otherwise a report about an earlier firing than the known one (an earlier startsAt), firing or resolved,
    is stale. Anything else, repeats included, is not: what to do with a repeat is the ticket's business.

    One genuine case looks the same and is ignored too: Alertmanager resolving an alert itself because
    Prometheus did not reach it before the alert's endsAt (4 resend delays, 4 min by default), then hearing
    of it again with the same startsAt. Its receivers are notified again; the incident ticket stays resolved.
    """
    if known is None:
        return False
    if known.ends_at is not None and seen.ends_at is None:
        return seen.starts_at <= known.ends_at
    return seen.starts_at < known.starts_at


def _instances(payload: AlertmanagerPayload) -> list[AlertInstance]:
    """Each alert's identity and times; a firing alert's endsAt is Alertmanager's zero time (or its
    estimate): only a resolution's is news."""
    return [
        AlertInstance(
            _identity(alert.fingerprint, alert.labels),
            alert.starts_at,
            alert.ends_at if alert.status == "resolved" else None,
        )
        for alert in payload.alerts
    ]


def _identity(fingerprint: str | None, labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of the alert's labels; a hash of the labels when a sender leaves it out."""
    if fingerprint:
        return fingerprint
    return hashlib.sha256(json.dumps(labels, sort_keys=True, default=str).encode()).hexdigest()


def handle(session: Session, desk: Desk, payload: AlertmanagerPayload, now: datetime) -> tuple[Ticket, str]:
    """Apply one notification; returns the ticket and what was done (created, updated, repeat, resolved,
    stale)."""
    seen = _instances(payload)
    key = payload.group_key[:500]
    firing = payload.status == "firing"
    known = _known_states(session, key, seen)  # locked first (PostgreSQL): notifications of a group take turns
    fresh = [alert for alert in seen if not is_stale(_known(known.get(alert.fingerprint)), alert)]
    _remember_states(session, key, known, fresh)
    ticket = session.scalar(select(Ticket).where(Ticket.alert_group_key == key))
    # A firing with no firing alert newer than what was applied, or a resolution reporting an older firing
    # than one applied since: what the group was before a change the ticket already shows.
    outdated = not _firing_ids(fresh) if firing else len(fresh) < len(seen)
    if ticket is not None and outdated:
        _remember_stale(session, ticket, seen, fresh, now)
        return ticket, "stale"
    previous_id = None
    if ticket is not None and ticket.status == "closed" and firing:
        ticket.alert_group_key = None  # history stays with the closed ticket; a fresh incident starts
        previous_id = ticket.id
        session.flush()
        ticket = None
    if ticket is None:
        if not firing:
            raise UnknownReference("groupKey", "no incident ticket for this group to resolve")
        ticket = desk.create_ticket(
            session, ALERTMANAGER, _new_ticket(payload), now, follow_up_of_id=previous_id, alert_group_key=key
        )
        _remember_firing(session, ticket, fresh, now)
        return ticket, "created"
    if not firing:
        if ticket.status in ("resolved", "closed"):
            return ticket, "repeat"
        resolution = TicketChange(status="resolved", message=MessageInput(body=_describe(payload)))
        desk.update_ticket(session, ALERTMANAGER, ticket, resolution, now)
        return ticket, "resolved"
    if _firing_ids(fresh) == _last_firing(session, ticket) and ticket.status not in ("resolved",):
        return ticket, "repeat"
    note = MessageInput(body=_describe(payload))
    update = TicketChange(status="open", message=note) if ticket.status == "resolved" else TicketChange(message=note)
    desk.update_ticket(session, ALERTMANAGER, ticket, update, now)
    _remember_firing(session, ticket, fresh, now)
    return ticket, "updated"


def _new_ticket(payload: AlertmanagerPayload) -> TicketInput:
    labels = {**payload.common_labels, **payload.group_labels}
    name = labels.get("alertname", "alert")
    severity = labels.get("severity", "").lower()
    tags = ["alert", _TAG_UNSAFE.sub("-", name.lower()).strip("-._")[:60] or "unnamed"]
    return TicketInput(
        subject=f"[{severity.upper() or 'ALERT'}] {name}: {_summary(payload)}"[:MAX_SUBJECT_CHARS],
        body=_describe(payload),
        priority=SEVERITY_PRIORITY.get(severity, "medium"),
        tags=tags,
        customer=CustomerInput.model_validate({"id": ALERTMANAGER.id, "name": ALERTMANAGER.name, "tier": STAFF_TIER}),
    )


def _summary(payload: AlertmanagerPayload) -> str:
    annotations = payload.common_annotations
    text = annotations.get("summary") or annotations.get("description")
    if not text and payload.alerts:
        first = payload.alerts[0].annotations
        text = first.get("summary") or first.get("description")
    return text or "no summary"


def _describe(payload: AlertmanagerPayload) -> str:
    """The notification as a message agents read: a headline, then per alert its summary, description (which
    carries the value), labels one per line and links (runbook, dashboard, source), and last the link that
    silences the group, as the Slack and email texts have them (config/alertmanager.tmpl). A group too large
    for one message lists the alerts that fit and says how many more Alertmanager holds."""
    alerts = payload.alerts
    firing = sum(1 for alert in alerts if alert.status == "firing")
    headline = (
        f"{payload.status.upper()}: {firing} alert{'' if firing == 1 else 's'} firing, {len(alerts) - firing} resolved"
    )
    footer = [f"Silence: {silence_url(payload.external_url, payload.common_labels)}"] if payload.external_url else []
    blocks = [_alert_block(alert) for alert in alerts]
    room = MAX_BODY_CHARS - len(headline) - sum(len(line) + 2 for line in footer) - 80  # 80: the "more" line
    shown: list[str] = []
    for block in blocks:
        if len(block) + 2 > room:
            break
        shown.append(block)
        room -= len(block) + 2
    if len(shown) < len(blocks):
        shown.append(f"... and {len(blocks) - len(shown)} more alerts in Alertmanager")
    return "\n\n".join([headline, *shown, *footer])[:MAX_BODY_CHARS]  # cut only if the labels alone are too long


def _alert_block(alert: AlertmanagerAlert) -> str:
    annotations = alert.annotations
    if alert.status == "firing":
        state = f"firing since {alert.starts_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    else:
        state = f"resolved at {alert.ends_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    lines = [f"{annotations.get('summary') or alert.labels.get('alertname', 'alert')} ({state})"]
    if annotations.get("description"):
        lines.append(annotations["description"])
    labels = [f"  - {name}: {value}" for name, value in sorted(alert.labels.items()) if name != "alertname"]
    lines += ["Labels:", *labels] if labels else []
    links = (
        ("Runbook", annotations.get("runbook_url")),
        ("Dashboard", annotations.get("dashboard_url")),
        ("Source", alert.generator_url),
    )
    lines += [f"{title}: {url}" for title, url in links if url]
    return "\n".join(lines)


def _firing_ids(alerts: list[AlertInstance]) -> list[str]:
    return sorted(alert.fingerprint for alert in alerts if alert.ends_at is None)


def _known_states(session: Session, key: str, seen: list[AlertInstance]) -> dict[str, AlertState]:
    rows = session.scalars(
        select(AlertState)
        .where(AlertState.group_key == key, AlertState.fingerprint.in_({alert.fingerprint for alert in seen}))
        .with_for_update()
    )
    return {row.fingerprint: row for row in rows}


def _known(state: AlertState | None) -> AlertInstance | None:
    return None if state is None else AlertInstance(state.fingerprint, state.starts_at, state.ends_at)


def _remember_states(session: Session, key: str, known: dict[str, AlertState], fresh: list[AlertInstance]) -> None:
    """Store each fresh alert as the newest known of it. A row another request inserted meanwhile is an
    IntegrityError at flush, which the route answers by applying the notification again."""
    for alert in fresh:
        state = known.get(alert.fingerprint)
        if state is None:
            state = known[alert.fingerprint] = AlertState(group_key=key, fingerprint=alert.fingerprint)
            session.add(state)
        state.starts_at, state.ends_at = alert.starts_at, alert.ends_at


def _remember_firing(session: Session, ticket: Ticket, fresh: list[AlertInstance], now: datetime) -> None:
    session.add(
        TicketEvent(
            ticket_id=ticket.id,
            at=now,
            actor=ALERTMANAGER.id,
            kind="alert",
            data={"firing": _firing_ids(fresh)},
        )
    )


def _remember_stale(
    session: Session, ticket: Ticket, seen: list[AlertInstance], fresh: list[AlertInstance], now: datetime
) -> None:
    """An ignored notification stays visible in the ticket's log: which alerts were older than applied."""
    ignored = sorted({alert.fingerprint for alert in seen} - {alert.fingerprint for alert in fresh})
    session.add(
        TicketEvent(ticket_id=ticket.id, at=now, actor=ALERTMANAGER.id, kind="alert_stale", data={"stale": ignored})
    )


def _last_firing(session: Session, ticket: Ticket) -> list[str] | None:
    event = session.scalar(
        select(TicketEvent)
        .where(TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "alert")
        .order_by(TicketEvent.id.desc())
        .limit(1)
    )
    return None if event is None else list(event.data.get("firing", []))
