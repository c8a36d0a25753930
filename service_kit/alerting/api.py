"""HTTP API for acks, for a service that wants its users to acknowledge alerts (the support desk's agents):

    GET    /api/v1/alerts/acks               active acks
    POST   /api/v1/alerts/acks               {"alertname", "labels"?, "comment", "duration" | "until"} -> 201
    DELETE /api/v1/alerts/acks/<silence_id>  unack -> 204

Agents and admins only; the acknowledger is the authenticated caller; every ack and unack is audited.
Register with ``app.register_blueprint(acks_blueprint(auth, db, AlertmanagerClient(url)))``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from service_kit.alerting.silences import Ack, AlertmanagerClient, AlertmanagerError, parse_duration, parse_matchers
from service_kit.auth import Auth, current_auth, require_role
from service_kit.db import Database
from service_kit.errors import ExternalAPIError, NotFoundError, ValidationError


def acks_blueprint(auth: Auth, db: Database, client: AlertmanagerClient) -> Blueprint:
    blueprint = Blueprint("alert_acks", __name__, url_prefix="/api/v1/alerts/acks")

    @blueprint.get("")
    @require_role("agent")
    def list_acks() -> ResponseReturnValue:
        with alertmanager_errors():
            return jsonify({"data": [ack_json(ack) for ack in client.acks()]})

    @blueprint.post("")
    @require_role("agent")
    def create_ack() -> ResponseReturnValue:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ValidationError({"body": "expected a JSON object"})
        labels = body.get("labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise ValidationError({"labels": "expected an object of label names to string values"})
        for key in ("alertname", "comment"):
            if not isinstance(body.get(key), str):
                raise ValidationError({key: "is required and must be a string"})
        principal = current_auth().current_principal()
        assert principal is not None  # require_role
        with alertmanager_errors():
            matchers = parse_matchers(body["alertname"], [f"{name}={value}" for name, value in labels.items()])
            until = _parse_until(body.get("until"))
            duration = parse_duration(str(body["duration"])) if body.get("duration") is not None else None
            silence_id = client.ack(matchers, by=principal.id, comment=body["comment"], until=until, duration=duration)
        auth.record("alert.ack", "silence", silence_id, after={"matchers": matchers, "comment": body["comment"]})
        db.session.commit()
        (ack,) = [ack for ack in client.acks() if ack.silence_id == silence_id]
        return jsonify(ack_json(ack)), 201

    @blueprint.delete("/<silence_id>")
    @require_role("agent")
    def delete_ack(silence_id: str) -> ResponseReturnValue:
        with alertmanager_errors():
            client.unack(silence_id)
        auth.record("alert.unack", "silence", silence_id)
        db.session.commit()
        return "", 204

    return blueprint


def ack_json(ack: Ack) -> dict[str, Any]:
    return {
        "silence_id": ack.silence_id,
        "matchers": ack.matchers,
        "created_by": ack.created_by,
        "comment": ack.comment,
        "starts_at": ack.starts_at.isoformat(),
        "ends_at": ack.ends_at.isoformat(),
    }


@contextmanager
def alertmanager_errors() -> Iterator[None]:
    """Bad input -> 422 naming the field; unknown silence -> 404; Alertmanager down or refusing -> 502."""
    try:
        yield
    except AlertmanagerError as error:
        if error.not_found:
            raise NotFoundError("No such silence.") from error
        if error.field:
            raise ValidationError({error.field: str(error)}) from error
        raise ExternalAPIError(str(error)) from error


def _parse_until(value: object) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError({"until": "expected an ISO 8601 time with a time zone"}) from None
