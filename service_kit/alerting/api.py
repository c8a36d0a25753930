"""HTTP API for acks, for a service that wants its users to acknowledge alerts (the support desk's agents):

    GET    /api/v1/alerts/acks               active acks
    POST   /api/v1/alerts/acks               {"alertname", "labels"?, "comment", "duration"? | "until"?} -> 201
    DELETE /api/v1/alerts/acks/<silence_id>  unack -> 204

Agents and admins only; the acknowledger is the authenticated caller; every ack and unack is audited.
A service mounts it with ``service_kit.alerting.api.init_app(app, AlertmanagerClient(url))`` after the
kit's ``Auth`` and ``Database``; its operations join the service's /openapi.json.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from flask import Blueprint, Flask, current_app, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError
from pydantic_core.core_schema import ValidationInfo

from service_kit.alerting.silences import LABEL_NAME, MAX_ACK, Ack, AlertmanagerClient, parse_duration
from service_kit.auth import current_auth, require_role
from service_kit.db import current_db
from service_kit.openapi import ApiDocument, DateTime, Strict

api = ApiDocument(
    "Alert acknowledgements",
    security={"bearer": {"type": "http", "scheme": "bearer", "description": "vbx_… API token"}},
)
bp = Blueprint("alert_acks", __name__, url_prefix="/api/v1/alerts/acks")
ALERTMANAGER_DOWN = "Alertmanager is unreachable or refused the request"

# One number and one unit, up to the longest ack (7 days): 604800s, 10080m, 168h, 7d.
DURATION_PATTERN = (
    "^(([1-9][0-9]{0,4}|[1-5][0-9]{5}|60[0-3][0-9]{3}|604[0-7][0-9]{2}|604800)s"
    "|([1-9][0-9]{0,3}|100[0-7][0-9]|10080)m|([1-9][0-9]?|1[0-5][0-9]|16[0-8])h|[1-7]d)$"
)
LabelName = Annotated[str, Field(pattern=LABEL_NAME.pattern)]
LabelValue = Annotated[str, Field(min_length=1, max_length=1000)]
NOT_BLANK = "^[^\\u0000]*[^\\u0000 \\t\\n\\r][^\\u0000]*$"  # some text, and no NUL
assert parse_duration(f"{MAX_ACK.days}d") == MAX_ACK


def init_app(app: Flask, client: AlertmanagerClient) -> None:
    app.extensions["alertmanager"] = client
    api.init_app(app)
    app.register_blueprint(bp)


def current_alertmanager() -> AlertmanagerClient:
    client: AlertmanagerClient = current_app.extensions["alertmanager"]
    return client


class AckInput(Strict):
    """An ack of the alerts named by `alertname` and `labels`, for `duration` or `until` a time (at most
    7 days from now; an hour when neither is given). The acknowledger is the caller, never the body."""

    model_config = ConfigDict(
        strict=True,
        json_schema_extra={
            "not": {
                "required": ["duration", "until"],
                "properties": {"duration": {"type": "string"}, "until": {"type": "string"}},
            }
        },
    )

    alertname: LabelValue
    labels: dict[LabelName, LabelValue] = Field(default={}, json_schema_extra={"additionalProperties": False})
    comment: str = Field(min_length=1, max_length=1000, pattern=NOT_BLANK)
    duration: str | None = Field(default=None, pattern=DURATION_PATTERN, description="one number and unit: 90m, 2h, 1d")
    until: DateTime | None = None

    @field_validator("until")
    @classmethod
    def _not_with_duration(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is not None and info.data.get("duration") is not None:
            raise PydanticCustomError("duration_or_until", "give duration or until, not both")
        return value


class AckList(BaseModel):
    data: list[Ack]


def _json(model: BaseModel, status: int = 200) -> ResponseReturnValue:
    return current_app.response_class(model.model_dump_json(), status, mimetype="application/json")


@bp.get("")
@require_role("agent")
@api.validate(responses={200: AckList}, tags=("alerts",), security="bearer", extra={502: ALERTMANAGER_DOWN})
def ack_list() -> ResponseReturnValue:
    """Active acknowledgements: the Alertmanager silences made by acking (agents)."""
    return _json(AckList(data=current_alertmanager().acks()))


@bp.post("")
@require_role("agent")
@api.validate(
    json=AckInput,
    responses={201: Ack},
    tags=("alerts",),
    security="bearer",
    extra={422: "a field is invalid, or until is not in the next 7 days", 502: ALERTMANAGER_DOWN},
)
def ack_create() -> ResponseReturnValue:
    """Acknowledge alerts (agents): a silence with who (the caller), why and until when; audited."""
    body: AckInput = request.context.json  # type: ignore[attr-defined]
    principal = current_auth().current_principal()
    assert principal is not None  # require_role
    client = current_alertmanager()
    matchers = {"alertname": body.alertname, **body.labels}
    duration = parse_duration(body.duration or "1h") if body.until is None else None
    silence_id = client.ack(matchers, by=principal.id, comment=body.comment, until=body.until, duration=duration)
    current_auth().record("alert.ack", "silence", silence_id, after={"matchers": matchers, "comment": body.comment})
    current_db().session.commit()
    (ack,) = [ack for ack in client.acks() if ack.silence_id == silence_id]
    return _json(ack, 201)


@bp.delete("/<uuid:silence_id>")
@require_role("agent")
@api.validate(responses={204: None}, tags=("alerts",), security="bearer", extra={502: ALERTMANAGER_DOWN})
def ack_delete(silence_id: object) -> ResponseReturnValue:
    """Remove an acknowledgement (agents): the silence expires; audited. Silence ids are UUIDs."""
    current_alertmanager().unack(str(silence_id))
    current_auth().record("alert.unack", "silence", str(silence_id))
    current_db().session.commit()
    return "", 204
