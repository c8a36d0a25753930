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
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service_kit.errors import ValidationError
from tickets_app.desk import Actor, Desk
from tickets_app.models import AlertState, Ticket, TicketEvent

ALERTMANAGER = Actor(id="alertmanager", role="system", name="Alertmanager")
SEVERITY_PRIORITY = {
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


def validate(payload: Any) -> tuple[Mapping[str, Any], list[AlertInstance]]:
    """Check the fields this handler relies on; 422 names each missing or wrong one."""
    if not isinstance(payload, Mapping):
        raise ValidationError({"body": "expected an Alertmanager webhook JSON object"})
    errors = {}
    if str(payload.get("version")) != "4":
        errors["version"] = 'expected "4" (Alertmanager webhook payload version)'
    if not isinstance(payload.get("groupKey"), str) or not payload["groupKey"]:
        errors["groupKey"] = "required, a non-empty string"
    if payload.get("status") not in ("firing", "resolved"):
        errors["status"] = "expected firing or resolved"
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not all(isinstance(a, Mapping) for a in alerts):
        errors["alerts"] = "expected a list of alert objects"
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        if not isinstance(payload.get(key, {}), Mapping):
            errors[key] = "expected an object"
    instances = []
    if isinstance(alerts, list) and "alerts" not in errors:
        for index, alert in enumerate(alerts):
            instance = _instance(alert, f"alerts[{index}]", errors)
            if instance is not None:
                instances.append(instance)
    if errors:
        raise ValidationError(errors)
    return payload, instances


def _instance(alert: Mapping[str, Any], path: str, errors: dict[str, str]) -> AlertInstance | None:
    """The alert's identity and times, or None with `errors` naming what is wrong."""
    before = len(errors)
    status = alert.get("status")
    if status not in ("firing", "resolved"):
        errors[f"{path}.status"] = "expected firing or resolved"
    labels = alert.get("labels", {})
    if not isinstance(labels, Mapping):
        errors[f"{path}.labels"] = "expected an object"
    fingerprint = alert.get("fingerprint")
    if fingerprint is not None and not (isinstance(fingerprint, str) and 0 < len(fingerprint) <= 64):
        errors[f"{path}.fingerprint"] = "expected a string of 1 to 64 characters"
    starts_at = _timestamp(alert.get("startsAt"))
    if starts_at is None:
        errors[f"{path}.startsAt"] = "required, an RFC 3339 timestamp"
    # A firing alert's endsAt is Alertmanager's zero time (or its estimate): only a resolution's is news.
    ends_at = _timestamp(alert.get("endsAt")) if status == "resolved" else None
    if status == "resolved" and ends_at is None:
        errors[f"{path}.endsAt"] = "required for a resolved alert, an RFC 3339 timestamp"
    if len(errors) > before or starts_at is None or not isinstance(labels, Mapping):
        return None
    return AlertInstance(_identity(fingerprint, labels), starts_at, ends_at)


def _timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp with its zone (Go writes nanoseconds; microseconds are kept), else None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _identity(fingerprint: str | None, labels: Mapping[str, Any]) -> str:
    """Alertmanager's fingerprint of the alert's labels; a hash of the labels when a sender leaves it out."""
    if fingerprint:
        return fingerprint
    return hashlib.sha256(json.dumps(labels, sort_keys=True, default=str).encode()).hexdigest()


def handle(session: Session, desk: Desk, payload: Any, now: datetime) -> tuple[Ticket, str]:
    """Apply one notification; returns the ticket and what was done (created, updated, repeat, resolved,
    stale)."""
    payload, seen = validate(payload)
    key = payload["groupKey"][:500]
    firing = payload["status"] == "firing"
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
            raise ValidationError({"groupKey": "no incident ticket for this group; nothing to resolve"})
        ticket = desk.create_ticket(
            session, ALERTMANAGER, _new_ticket(payload), now, follow_up_of_id=previous_id, alert_group_key=key
        )
        _remember_firing(session, ticket, fresh, now)
        return ticket, "created"
    if not firing:
        if ticket.status in ("resolved", "closed"):
            return ticket, "repeat"
        desk.update_ticket(
            session,
            ALERTMANAGER,
            ticket,
            {"status": "resolved", "message": {"body": _describe(payload)}},
            now,
        )
        return ticket, "resolved"
    if _firing_ids(fresh) == _last_firing(session, ticket) and ticket.status not in ("resolved",):
        return ticket, "repeat"
    update: dict[str, Any] = {"message": {"body": _describe(payload), "internal": False}}
    if ticket.status == "resolved":
        update["status"] = "open"
    desk.update_ticket(session, ALERTMANAGER, ticket, update, now)
    _remember_firing(session, ticket, fresh, now)
    return ticket, "updated"


def _new_ticket(payload: Mapping[str, Any]) -> dict[str, Any]:
    labels = {**payload.get("commonLabels", {}), **payload.get("groupLabels", {})}
    name = str(labels.get("alertname", "alert"))
    severity = str(labels.get("severity", "")).lower()
    tags = ["alert", _TAG_UNSAFE.sub("-", name.lower()).strip("-.")[:60] or "unnamed"]
    return {
        "subject": f"[{severity.upper() or 'ALERT'}] {name}: {_summary(payload)}"[:300],
        "body": _describe(payload),
        "priority": SEVERITY_PRIORITY.get(severity, "medium"),
        "tags": tags,
        "customer": {
            "id": "alertmanager",
            "name": str(payload.get("receiver", "Alertmanager")),
            "tier": "internal",
        },
    }


def _summary(payload: Mapping[str, Any]) -> str:
    annotations = payload.get("commonAnnotations", {})
    text = annotations.get("summary") or annotations.get("description")
    if not text and payload["alerts"]:
        first = payload["alerts"][0].get("annotations", {})
        text = first.get("summary") or first.get("description")
    return str(text or "no summary")


def _describe(payload: Mapping[str, Any]) -> str:
    """A plain-text body listing each alert with its state, labels and summary."""
    alerts = payload["alerts"]
    firing = sum(1 for a in alerts if a.get("status") == "firing")
    lines = [f"Alertmanager: {payload['status']} ({firing} firing, {len(alerts) - firing} resolved)"]
    for alert in alerts[:50]:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(dict(alert.get("labels", {})).items()))
        summary = dict(alert.get("annotations", {})).get("summary", "")
        lines.append(f"- [{alert.get('status')}] {labels} {summary} (since {alert.get('startsAt')})".rstrip())
    if payload.get("externalURL"):
        lines.append(f"Alertmanager: {payload['externalURL']}")
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
