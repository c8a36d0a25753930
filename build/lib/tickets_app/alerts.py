"""Incident tickets from Alertmanager's webhook (payload version 4).

One ticket per alert group (Alertmanager's groupKey): the first notification opens it, repeats add a
note only when the set of firing alerts changed, and a resolved notification resolves it. A group that
fires again after its ticket was closed gets a new ticket linked to the old one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service_kit.errors import ValidationError
from tickets_app.desk import Actor, Desk
from tickets_app.models import Ticket, TicketEvent

ALERTMANAGER = Actor(id="alertmanager", role="system", name="Alertmanager")
SEVERITY_PRIORITY = {
    "critical": "urgent",
    "page": "urgent",
    "error": "high",
    "warning": "high",
    "info": "low",
}
_TAG_UNSAFE = re.compile(r"[^a-z0-9_.-]+")


def validate(payload: Any) -> Mapping[str, Any]:
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
    if errors:
        raise ValidationError(errors)
    return payload


def handle(session: Session, desk: Desk, payload: Any, now: datetime) -> tuple[Ticket, str]:
    """Apply one notification; returns the ticket and what was done (created, updated, repeat, resolved)."""
    payload = validate(payload)
    key = payload["groupKey"][:500]
    firing = payload["status"] == "firing"
    ticket = session.scalar(select(Ticket).where(Ticket.alert_group_key == key))
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
        _remember_firing(session, ticket, payload, now)
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
    fingerprints = _fingerprints(payload)
    if fingerprints == _last_firing(session, ticket) and ticket.status not in ("resolved",):
        return ticket, "repeat"
    update: dict[str, Any] = {"message": {"body": _describe(payload), "internal": False}}
    if ticket.status == "resolved":
        update["status"] = "open"
    desk.update_ticket(session, ALERTMANAGER, ticket, update, now)
    _remember_firing(session, ticket, payload, now)
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


def _fingerprints(payload: Mapping[str, Any]) -> list[str]:
    return sorted(
        str(a.get("fingerprint") or sorted(dict(a.get("labels", {})).items()))
        for a in payload["alerts"]
        if a.get("status") == "firing"
    )


def _remember_firing(session: Session, ticket: Ticket, payload: Mapping[str, Any], now: datetime) -> None:
    session.add(
        TicketEvent(
            ticket_id=ticket.id,
            at=now,
            actor=ALERTMANAGER.id,
            kind="alert",
            data={"firing": _fingerprints(payload)},
        )
    )


def _last_firing(session: Session, ticket: Ticket) -> list[str] | None:
    event = session.scalar(
        select(TicketEvent)
        .where(TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "alert")
        .order_by(TicketEvent.id.desc())
        .limit(1)
    )
    return None if event is None else list(event.data.get("firing", []))
