"""Admin REST API: flags, segments, toggles, rollouts, history, rollback, SDK keys, stale flags.

Admins write, viewers read. Every write is audited (the kit's audit log, with before/after documents)
and versioned; ``ETag`` carries the version and a stale ``If-Match`` gets 412.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from flags_service.model import InvalidDocument
from flags_service.storage import FlagStore
from service_kit.auth import require_role
from service_kit.errors import ValidationError

if TYPE_CHECKING:
    from flags_service.app import FlagsService

_ETAG = re.compile(r'^(?:W/)?"?(\d+)"?$')
ROLLOUT_SCALE = 100  # percentages with two decimals become integer weights out of 10,000


def expected_version() -> int | None:
    """The version named by ``If-Match`` (``"3"``), or ``None`` when the header is absent."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    match = _ETAG.match(header.strip())
    if not match:
        raise ValidationError({"If-Match": 'must be an ETag from a previous read, like "3"'})
    return int(match.group(1))


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    return body


def with_etag(document: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(document)
    response.status_code = status
    response.headers["ETag"] = f'"{document["version"]}"'
    return response


def rollout_weights(body: dict[str, Any], flag: dict[str, Any]) -> list[dict[str, Any]]:
    """``{"percentage": 25, "variant": "on"}`` -> 25% to ``on``, the rest to the off variant."""
    if "rollout" in body:
        rollout = body["rollout"]
        if not isinstance(rollout, list):
            raise InvalidDocument({"rollout": "must be a list of {variant, weight}"})
        return rollout
    percentage = body.get("percentage")
    if isinstance(percentage, bool) or not isinstance(percentage, int | float) or not 0 <= percentage <= 100:
        raise InvalidDocument({"percentage": "must be a number from 0 to 100"})
    off = flag["offVariant"]
    default_variant = next((name for name in flag["variants"] if name != off), None)
    variant = body.get("variant", default_variant)
    if variant not in flag["variants"] or variant == off:
        raise InvalidDocument({"variant": "must name a variant other than the off variant"})
    weight = round(percentage * ROLLOUT_SCALE)
    return [
        {"variant": variant, "weight": weight},
        {"variant": off, "weight": 100 * ROLLOUT_SCALE - weight},
    ]


def admin_blueprint(service: FlagsService) -> Blueprint:
    blueprint = Blueprint("flags_admin", __name__, url_prefix="/api/v1")

    def store() -> FlagStore:
        return service.store()

    def actor() -> str:
        principal = service.auth.current_principal()
        return principal.id if principal else "anonymous"

    def environment(name: str) -> str:
        if name not in service.environments:
            raise ValidationError({"environment": f"must be one of {', '.join(service.environments)}"})
        return name

    # -- flags ------------------------------------------------------------------------------------
    @blueprint.get("/environments")
    @require_role("viewer")
    def list_environments() -> ResponseReturnValue:
        versions = store().environment_versions()
        return jsonify({"data": [{"name": env, "version": versions.get(env)} for env in service.environments]})

    @blueprint.get("/flags")
    @require_role("viewer")
    def list_flags() -> ResponseReturnValue:
        return jsonify({"data": store().list_flags()})

    @blueprint.post("/flags")
    @require_role("admin")
    def create_flag() -> ResponseReturnValue:
        body = json_body()
        change = service.write("create", "flag", lambda s: s.create_flag(body, actor()))
        return with_etag(store().get_flag(change.key), 201)

    @blueprint.get("/flags/<key>")
    @require_role("viewer")
    def get_flag(key: str) -> ResponseReturnValue:
        return with_etag(store().get_flag(key))

    @blueprint.put("/flags/<key>")
    @require_role("admin")
    def replace_flag(key: str) -> ResponseReturnValue:
        body, version = json_body(), expected_version()
        service.write("update", "flag", lambda s: s.update_flag(key, body, actor(), expected_version=version))
        return with_etag(store().get_flag(key))

    @blueprint.delete("/flags/<key>")
    @require_role("admin")
    def delete_flag(key: str) -> ResponseReturnValue:
        version = expected_version()
        service.write("delete", "flag", lambda s: s.delete_flag(key, actor(), expected_version=version))
        return "", 204

    @blueprint.post("/flags/<key>/environments/<env>/toggle")
    @require_role("admin")
    def toggle(key: str, env: str) -> ResponseReturnValue:
        env, version = environment(env), expected_version()
        body = request.get_json(silent=True) or {}
        enabled = body.get("enabled") if isinstance(body, dict) else None
        if enabled is not None and not isinstance(enabled, bool):
            raise ValidationError({"enabled": "must be true, false or absent (flip)"})

        def operation(s: FlagStore) -> Any:
            current = s.get_flag(key)["environments"][env]["enabled"]
            target = (not current) if enabled is None else enabled
            return s.patch_environment(
                key, env, {"enabled": target}, actor(), expected_version=version, action="toggle"
            )

        service.write("toggle", "flag", operation)
        return with_etag(store().get_flag(key))

    @blueprint.put("/flags/<key>/environments/<env>/rollout")
    @require_role("admin")
    def rollout(key: str, env: str) -> ResponseReturnValue:
        env, version, body = environment(env), expected_version(), json_body()

        def operation(s: FlagStore) -> Any:
            weights = rollout_weights(body, s.get_flag(key))
            changes = {"fallthrough": {"rollout": weights}}
            return s.patch_environment(key, env, changes, actor(), expected_version=version, action="rollout")

        service.write("rollout", "flag", operation)
        return with_etag(store().get_flag(key))

    @blueprint.get("/flags/<key>/history")
    @require_role("viewer")
    def history(key: str) -> ResponseReturnValue:
        return jsonify({"data": store().history(key)})

    @blueprint.post("/flags/<key>/rollback")
    @require_role("admin")
    def rollback(key: str) -> ResponseReturnValue:
        body, version = json_body(), expected_version()
        target = body.get("version")
        if isinstance(target, bool) or not isinstance(target, int) or target < 1:
            raise ValidationError({"version": "must be a version number from the flag's history"})
        service.write("rollback", "flag", lambda s: s.rollback(key, target, actor(), expected_version=version))
        return with_etag(store().get_flag(key))

    @blueprint.get("/stale-flags")
    @require_role("viewer")
    def stale_flags() -> ResponseReturnValue:
        env = environment(request.args.get("environment", service.environments[-1]))
        days = service.settings.flags.stale_after_days
        return jsonify({"environment": env, "data": store().stale_flags(env, stale_after_days=days)})

    # -- segments ---------------------------------------------------------------------------------
    @blueprint.get("/environments/<env>/segments")
    @require_role("viewer")
    def list_segments(env: str) -> ResponseReturnValue:
        return jsonify({"data": store().list_segments(environment(env))})

    @blueprint.post("/environments/<env>/segments")
    @require_role("admin")
    def create_segment(env: str) -> ResponseReturnValue:
        env, body = environment(env), json_body()
        change = service.write("create", "segment", lambda s: s.put_segment(env, body, expected_version=None))
        return with_etag(store().get_segment(env, change.key), 201)

    @blueprint.get("/environments/<env>/segments/<key>")
    @require_role("viewer")
    def get_segment(env: str, key: str) -> ResponseReturnValue:
        return with_etag(store().get_segment(environment(env), key))

    @blueprint.put("/environments/<env>/segments/<key>")
    @require_role("admin")
    def replace_segment(env: str, key: str) -> ResponseReturnValue:
        env, body, version = environment(env), json_body(), expected_version()
        service.write("update", "segment", lambda s: s.put_segment(env, body, expected_version=version, key=key))
        return with_etag(store().get_segment(env, key))

    @blueprint.delete("/environments/<env>/segments/<key>")
    @require_role("admin")
    def delete_segment(env: str, key: str) -> ResponseReturnValue:
        env, version = environment(env), expected_version()
        service.write("delete", "segment", lambda s: s.delete_segment(env, key, expected_version=version))
        return "", 204

    # -- SDK keys ---------------------------------------------------------------------------------
    @blueprint.get("/sdk-keys")
    @require_role("admin")
    def list_sdk_keys() -> ResponseReturnValue:
        return jsonify({"data": store().list_sdk_keys()})

    @blueprint.post("/sdk-keys")
    @require_role("admin")
    def create_sdk_key() -> ResponseReturnValue:
        body = json_body()
        key, token = store().create_sdk_key(body.get("environment", ""), body.get("kind", ""), body.get("name", ""))
        document = {"id": key.id, "environment": key.environment, "kind": key.kind, "name": key.name}
        service.auth.record("sdk_key.create", "sdk_key", key.id, None, document)
        service.db.session.commit()
        return jsonify({**document, "token": token}), 201

    @blueprint.delete("/sdk-keys/<int:key_id>")
    @require_role("admin")
    def revoke_sdk_key(key_id: int) -> ResponseReturnValue:
        store().revoke_sdk_key(key_id)
        service.auth.record("sdk_key.revoke", "sdk_key", key_id, None, {"revoked": True})
        service.db.session.commit()
        return "", 204

    return blueprint
