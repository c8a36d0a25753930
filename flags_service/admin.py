"""Admin REST API: flags, segments, toggles, rollouts, history, rollback, SDK keys, stale flags.

Admins write, viewers read. Every write is audited (the kit's audit log, with before/after documents)
and versioned; ``ETag`` carries the version and a stale ``If-Match`` gets 412.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import pydantic
from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from flags_service.api import ADMIN_TOKEN, api
from flags_service.model import (
    Document,
    Flag,
    FlagDocument,
    InvalidDocument,
    NewFlag,
    NewSegment,
    Segment,
    SegmentDocument,
    VariantName,
    WeightedVariant,
    state_of,
)
from flags_service.service import current_flags
from flags_service.storage.errors import FlagNotFound
from flags_service.storage.flags import Change
from flags_service.storage.sdk_keys import SdkKeyKind
from service_kit.auth import current_auth, require_role
from service_kit.errors import ValidationError
from service_kit.openapi import MAX_ID, JsonInt

bp = Blueprint("flags_admin", __name__, url_prefix="/api/v1")
ETAG_PATTERN = r'^(?:W/)?"?(\d+)"?$'
_ETAG = re.compile(ETAG_PATTERN)
ROLLOUT_SCALE = 100  # percentages with two decimals become integer weights out of 10,000
WRITE_ERRORS = {409: "the key exists, or other flags still use it", 412: "If-Match names an older version"}


# -- request and response models -------------------------------------------------------------------
class IfMatch(BaseModel):
    if_match: str | None = Field(
        default=None, alias="If-Match", pattern=ETAG_PATTERN, description='the version read, like "3"'
    )


class Toggle(Document):
    enabled: bool | None = Field(default=None, description="absent: flip")


class Rollout(Document):
    """``{"percentage": 25, "variant": "on"}``: 25% to ``on``, the rest to the off variant; or the whole
    ``rollout`` of weights."""

    percentage: float | None = Field(default=None, ge=0, le=100)
    variant: VariantName | None = Field(default=None, description="default: the first variant but the off one")
    rollout: list[WeightedVariant] | None = Field(default=None, min_length=1, max_length=100)

    @pydantic.model_validator(mode="after")
    def _one_of_percentage_or_rollout(self) -> Rollout:
        if (self.percentage is None) == (self.rollout is None):
            raise ValueError("send either percentage (with an optional variant) or rollout")
        return self


class Rollback(Document):
    version: JsonInt = Field(ge=1, le=MAX_ID, description="a version from the flag's history")


class NewSdkKey(Document):
    environment: str = Field(min_length=1, max_length=64)
    kind: SdkKeyKind
    name: str = Field(min_length=1, max_length=200)


class StaleQuery(BaseModel):
    environment: str | None = Field(default=None, description="default: the last configured environment")


class EnvironmentVersion(BaseModel):
    name: str
    version: int | None


class Environments(BaseModel):
    data: list[EnvironmentVersion]


class Flags(BaseModel):
    data: list[Flag]


class Change_(BaseModel):
    path: str
    before: Any
    after: Any


class HistoryEntry(BaseModel):
    version: int
    action: str
    actor: str
    createdAt: str | None
    changes: list[Change_]


class History(BaseModel):
    data: list[HistoryEntry]


class StaleFlag(BaseModel):
    key: str
    kind: str
    owner: str
    reason: Literal["expired", "never-evaluated", "not-evaluated-recently"]
    lastEvaluatedAt: str | None
    expiresAt: str | None


class StaleFlags(BaseModel):
    environment: str
    data: list[StaleFlag]


class Segments(BaseModel):
    data: list[Segment]


class SdkKeyInfo(BaseModel):
    id: int
    environment: str
    kind: str
    name: str
    createdAt: str
    revoked: bool


class SdkKeys(BaseModel):
    data: list[SdkKeyInfo]


class CreatedSdkKey(BaseModel):
    id: int
    environment: str
    kind: str
    name: str
    token: str = Field(description="shown once; only its SHA-256 is stored")


# -- helpers ---------------------------------------------------------------------------------------
def expected_version() -> int | None:
    """The version named by ``If-Match`` (``"3"``), or ``None`` when the header is absent."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    match = _ETAG.match(header.strip())
    if not match:
        raise ValidationError({"If-Match": 'must be an ETag from a previous read, like "3"'})
    return int(match.group(1))


def with_etag(document: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(document)
    response.status_code = status
    response.headers["ETag"] = f'"{document["version"]}"'
    return response


def actor() -> str:
    principal = current_auth().current_principal()
    return principal.id if principal else "anonymous"


def environment(name: str) -> str:
    """A configured environment named in the path; any other is not found."""
    if name not in current_flags().environments:
        raise FlagNotFound(f"environment {name}")
    return name


def rollout_weights(body: Rollout, flag: dict[str, Any]) -> list[dict[str, Any]]:
    if body.rollout is not None:
        return [part.model_dump() for part in body.rollout]
    off = flag["offVariant"]
    variant = body.variant or next((name for name in flag["variants"] if name != off), None)
    if variant not in flag["variants"] or variant == off:
        raise InvalidDocument({"variant": "must name a variant other than the off variant"})
    weight = round((body.percentage or 0) * ROLLOUT_SCALE)
    return [
        {"variant": variant, "weight": weight},
        {"variant": off, "weight": 100 * ROLLOUT_SCALE - weight},
    ]


def _flag(key: str) -> Response:
    return with_etag(current_flags().flag_store().get_flag(key))


# -- flags -----------------------------------------------------------------------------------------
@bp.get("/environments")
@require_role("viewer")
@api.validate(responses={200: Environments}, tags=("flags",), security=ADMIN_TOKEN)
def list_environments() -> ResponseReturnValue:
    service = current_flags()
    versions = service.environment_store().versions()
    return jsonify({"data": [{"name": env, "version": versions.get(env)} for env in service.environments]})


@bp.get("/flags")
@require_role("viewer")
@api.validate(responses={200: Flags}, tags=("flags",), security=ADMIN_TOKEN)
def list_flags() -> ResponseReturnValue:
    return jsonify({"data": current_flags().flag_store().list_flags()})


@bp.post("/flags")
@require_role("admin")
@api.validate(
    json=NewFlag,
    responses={201: Flag},
    tags=("flags",),
    security=ADMIN_TOKEN,
    extra={409: "a flag with that key exists"},
)
def create_flag() -> ResponseReturnValue:
    body = request.get_json()
    service = current_flags()
    change = service.write("create", "flag", lambda: service.flag_store().create_flag(body, actor()))
    return with_etag(service.flag_store().get_flag(change.key), 201)


@bp.get("/flags/<key>")
@require_role("viewer")
@api.validate(responses={200: Flag}, tags=("flags",), security=ADMIN_TOKEN)
def get_flag(key: str) -> ResponseReturnValue:
    return _flag(key)


@bp.put("/flags/<key>")
@require_role("admin")
@api.validate(
    json=FlagDocument, headers=IfMatch, responses={200: Flag}, tags=("flags",), security=ADMIN_TOKEN, extra=WRITE_ERRORS
)
def replace_flag(key: str) -> ResponseReturnValue:
    body, version, service = request.get_json(), expected_version(), current_flags()
    service.write(
        "update", "flag", lambda: service.flag_store().update_flag(key, body, actor(), expected_version=version)
    )
    return _flag(key)


@bp.delete("/flags/<key>")
@require_role("admin")
@api.validate(headers=IfMatch, responses={204: None}, tags=("flags",), security=ADMIN_TOKEN, extra=WRITE_ERRORS)
def delete_flag(key: str) -> ResponseReturnValue:
    version, service = expected_version(), current_flags()
    service.write("delete", "flag", lambda: service.flag_store().delete_flag(key, actor(), expected_version=version))
    return "", 204


@bp.post("/flags/<key>/environments/<env>/toggle")
@require_role("admin")
@api.validate(
    json=Toggle, headers=IfMatch, responses={200: Flag}, tags=("flags",), security=ADMIN_TOKEN, extra=WRITE_ERRORS
)
def toggle_flag(key: str, env: str) -> ResponseReturnValue:
    env, version, service = environment(env), expected_version(), current_flags()
    body: Toggle = request.context.json  # type: ignore[attr-defined]

    def operation() -> Change:
        store = service.flag_store()
        current = state_of(store.get_flag(key), env)["enabled"]
        target = (not current) if body.enabled is None else body.enabled
        return store.patch_environment(
            key, env, {"enabled": target}, actor(), expected_version=version, action="toggle"
        )

    service.write("toggle", "flag", operation)
    return _flag(key)


@bp.put("/flags/<key>/environments/<env>/rollout")
@require_role("admin")
@api.validate(
    json=Rollout, headers=IfMatch, responses={200: Flag}, tags=("flags",), security=ADMIN_TOKEN, extra=WRITE_ERRORS
)
def set_rollout(key: str, env: str) -> ResponseReturnValue:
    env, version, service = environment(env), expected_version(), current_flags()
    body: Rollout = request.context.json  # type: ignore[attr-defined]

    def operation() -> Change:
        store = service.flag_store()
        changes = {"fallthrough": {"rollout": rollout_weights(body, store.get_flag(key))}}
        return store.patch_environment(key, env, changes, actor(), expected_version=version, action="rollout")

    service.write("rollout", "flag", operation)
    return _flag(key)


@bp.get("/flags/<key>/history")
@require_role("viewer")
@api.validate(responses={200: History}, tags=("flags",), security=ADMIN_TOKEN)
def flag_history(key: str) -> ResponseReturnValue:
    return jsonify({"data": current_flags().flag_store().history(key)})


@bp.post("/flags/<key>/rollback")
@require_role("admin")
@api.validate(
    json=Rollback, headers=IfMatch, responses={200: Flag}, tags=("flags",), security=ADMIN_TOKEN, extra=WRITE_ERRORS
)
def rollback_flag(key: str) -> ResponseReturnValue:
    body: Rollback = request.context.json  # type: ignore[attr-defined]
    version, service = expected_version(), current_flags()
    service.write(
        "rollback",
        "flag",
        lambda: service.flag_store().rollback(key, body.version, actor(), expected_version=version),
    )
    return _flag(key)


@bp.get("/stale-flags")
@require_role("viewer")
@api.validate(query=StaleQuery, responses={200: StaleFlags}, tags=("flags",), security=ADMIN_TOKEN)
def list_stale_flags() -> ResponseReturnValue:
    service = current_flags()
    query: StaleQuery = request.context.query  # type: ignore[attr-defined]
    env = query.environment or service.environments[-1]
    if env not in service.environments:
        raise ValidationError({"environment": f"must be one of {', '.join(service.environments)}"})
    days = service.settings.flags.stale_after_days
    return jsonify({"environment": env, "data": service.stats_store().stale_flags(env, stale_after_days=days)})


# -- segments --------------------------------------------------------------------------------------
@bp.get("/environments/<env>/segments")
@require_role("viewer")
@api.validate(responses={200: Segments}, tags=("segments",), security=ADMIN_TOKEN)
def list_segments(env: str) -> ResponseReturnValue:
    return jsonify({"data": current_flags().segment_store().list_segments(environment(env))})


@bp.post("/environments/<env>/segments")
@require_role("admin")
@api.validate(
    json=NewSegment,
    responses={201: Segment},
    tags=("segments",),
    security=ADMIN_TOKEN,
    extra={409: "a segment with that key exists"},
)
def create_segment(env: str) -> ResponseReturnValue:
    env, body, service = environment(env), request.get_json(), current_flags()
    change = service.write(
        "create", "segment", lambda: service.segment_store().put_segment(env, body, expected_version=None)
    )
    return with_etag(service.segment_store().get_segment(env, change.key), 201)


@bp.get("/environments/<env>/segments/<key>")
@require_role("viewer")
@api.validate(responses={200: Segment}, tags=("segments",), security=ADMIN_TOKEN)
def get_segment(env: str, key: str) -> ResponseReturnValue:
    return with_etag(current_flags().segment_store().get_segment(environment(env), key))


@bp.put("/environments/<env>/segments/<key>")
@require_role("admin")
@api.validate(
    json=SegmentDocument,
    headers=IfMatch,
    responses={200: Segment},
    tags=("segments",),
    security=ADMIN_TOKEN,
    extra=WRITE_ERRORS,
)
def replace_segment(env: str, key: str) -> ResponseReturnValue:
    env, body, version, service = environment(env), request.get_json(), expected_version(), current_flags()
    service.write(
        "update",
        "segment",
        lambda: service.segment_store().put_segment(env, body, expected_version=version, key=key),
    )
    return with_etag(service.segment_store().get_segment(env, key))


@bp.delete("/environments/<env>/segments/<key>")
@require_role("admin")
@api.validate(headers=IfMatch, responses={204: None}, tags=("segments",), security=ADMIN_TOKEN, extra=WRITE_ERRORS)
def delete_segment(env: str, key: str) -> ResponseReturnValue:
    env, version, service = environment(env), expected_version(), current_flags()
    service.write(
        "delete", "segment", lambda: service.segment_store().delete_segment(env, key, expected_version=version)
    )
    return "", 204


# -- SDK keys --------------------------------------------------------------------------------------
@bp.get("/sdk-keys")
@require_role("admin")
@api.validate(responses={200: SdkKeys}, tags=("sdk keys",), security=ADMIN_TOKEN)
def list_sdk_keys() -> ResponseReturnValue:
    return jsonify({"data": current_flags().sdk_key_store().list_sdk_keys()})


@bp.post("/sdk-keys")
@require_role("admin")
@api.validate(json=NewSdkKey, responses={201: CreatedSdkKey}, tags=("sdk keys",), security=ADMIN_TOKEN)
def create_sdk_key() -> ResponseReturnValue:
    body: NewSdkKey = request.context.json  # type: ignore[attr-defined]
    service = current_flags()
    key, token = service.sdk_key_store().create_sdk_key(body.environment, body.kind, body.name)
    document = {"id": key.id, "environment": key.environment, "kind": key.kind, "name": key.name}
    service.auth.record("sdk_key.create", "sdk_key", key.id, None, document)
    service.db.session.commit()
    return jsonify({**document, "token": token}), 201


@bp.delete("/sdk-keys/<int:key_id>")
@require_role("admin")
@api.validate(responses={204: None}, tags=("sdk keys",), security=ADMIN_TOKEN)
def revoke_sdk_key(key_id: int) -> ResponseReturnValue:
    service = current_flags()
    service.sdk_key_store().revoke_sdk_key(key_id)
    service.auth.record("sdk_key.revoke", "sdk_key", key_id, None, {"revoked": True})
    service.db.session.commit()
    return "", 204
