"""Admin API and metrics (port 9180), apart from proxied paths: keys, usage, bans, tier reload.

Callers need a kit API token with the admin role (``vibelux-proxy tokens create --role admin``) or the
bootstrap token from ``RATELIMIT_PROXY_ADMIN__TOKEN`` (audited as actor ``admin-token``); every change is
written to the kit's audit log (``GET /api/v1/audit``) in the same transaction as its record.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from flask import Blueprint, Flask, g, jsonify, request
from flask.typing import ResponseReturnValue

from ratelimit_proxy.key_ban_storage import KeyRecord
from ratelimit_proxy.metrics import ActiveBansCollector
from ratelimit_proxy.policy import PolicyError
from ratelimit_proxy.runtime import Runtime
from ratelimit_proxy.settings import ProxySettings
from service_kit.app import ServiceKit
from service_kit.auth import Auth, Principal, require_role
from service_kit.config import ConfigError
from service_kit.db import Database
from service_kit.errors import NotFoundError, ValidationError

MAX_BAN_SECONDS = 365 * 86400


def public(record: KeyRecord) -> dict[str, Any]:
    return asdict(record)


def create_admin_app(
    settings: ProxySettings, runtime: Runtime | None = None, reload: Callable[[], ProxySettings] | None = None
) -> Flask:
    """``runtime``: share the proxy's (single-process memory mode); else one is built on the same Redis.
    ``reload``: how to read the config file again (tier reload)."""
    app = Flask("ratelimit_proxy.admin")
    kit = ServiceKit("ratelimit-proxy-admin", sentry=settings.sentry, logging_settings=settings.logging)
    kit.init_app(app)
    runtime = runtime or Runtime(settings, kit.metrics.registry, reload=reload)
    kit.metrics.add_scrape_collector(ActiveBansCollector(lambda: len(runtime.bans.active())))
    if runtime.redis is not None:
        kit.health.add_check("redis", runtime.limiter_readiness)
    db = Database()
    db.init_app(app, settings.database.url)
    auth = Auth(db)
    auth.init_app(app)
    if settings.admin.token:
        app.before_request(bootstrap_token_check(settings.admin.token))
    app.register_blueprint(admin_blueprint(runtime, auth, db))
    app.extensions["ratelimit_proxy"] = runtime
    return app


def bootstrap_token_check(token: str) -> Callable[[], None]:
    """Make a caller presenting the configured bootstrap token an admin (compared in constant time)."""
    expected = hashlib.sha256(token.encode()).digest()

    def check() -> None:
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            presented = hashlib.sha256(header[7:].strip().encode()).digest()
            if hmac.compare_digest(presented, expected):
                g.principal = Principal(id="admin-token", role="admin", kind="token")

    return check


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    return body


def admin_blueprint(runtime: Runtime, auth: Auth, db: Database) -> Blueprint:
    bp = Blueprint("ratelimit_admin", __name__, url_prefix="/api/v1")

    def audit(action: str, target_type: str, target: str, before: Any = None, after: Any = None) -> None:
        auth.record(action, target_type, target, before=before, after=after)
        db.session.commit()

    def tier_of(body: dict[str, Any], required: bool) -> str | None:
        tier = body.get("tier")
        if tier is None and not required:
            return None
        if tier not in runtime.policy.tiers:
            raise ValidationError({"tier": f"must be one of {', '.join(runtime.policy.tiers)}"})
        return str(tier)

    def stored_key(key_id: str) -> KeyRecord:
        record = runtime.store.get_key(key_id)
        if record is None:
            raise NotFoundError(f"No key with id {key_id}.")
        return record

    @bp.get("/keys")
    @require_role("admin")
    def list_keys() -> ResponseReturnValue:
        return jsonify({"data": [public(r) for r in runtime.keys.all()]})

    @bp.post("/keys")
    @require_role("admin")
    def create_key() -> ResponseReturnValue:
        body = _body()
        tier = tier_of(body, required=True)
        owner = body.get("owner")
        if not isinstance(owner, str) or not owner.strip():
            raise ValidationError({"owner": "is required and must be a non-empty string"})
        api_key, record = runtime.keys.create(str(tier), owner.strip())
        audit("key.create", "api_key", record.key_id, after=public(record))
        return jsonify({"key": api_key, **public(record)}), 201

    @bp.patch("/keys/<key_id>")
    @require_role("admin")
    def update_key(key_id: str) -> ResponseReturnValue:
        body = _body()
        stored_key(key_id)
        tier = tier_of(body, required=False)
        status = body.get("status")
        if status is not None and status not in ("active", "revoked"):
            raise ValidationError({"status": "must be active or revoked"})
        if tier is None and status is None:
            raise ValidationError({"tier": "give tier or status", "status": "give tier or status"})
        before, after = runtime.keys.update(key_id, tier=tier, status=status)
        audit("key.update", "api_key", key_id, public(before), public(after))
        return jsonify(public(after))

    @bp.delete("/keys/<key_id>")
    @require_role("admin")
    def revoke_key(key_id: str) -> ResponseReturnValue:
        stored_key(key_id)
        before, after = runtime.keys.update(key_id, status="revoked")
        audit("key.revoke", "api_key", key_id, public(before), public(after))
        return jsonify(public(after))

    @bp.get("/keys/<key_id>/usage")
    @require_role("admin")
    def key_usage(key_id: str) -> ResponseReturnValue:
        record = next((r for r in runtime.keys.all() if r.key_id == key_id), None)
        if record is None:
            raise NotFoundError(f"No key with id {key_id}.")
        limits = runtime.policy.plan(record.tier, "GET", request.args.get("path", "/")).limits
        decision = runtime.limiter.peek(f"key:{key_id[:32]}", limits)
        windows = [
            {
                "window": w.limit.name,
                "quota": w.limit.quota,
                "window_seconds": w.limit.window_seconds,
                "used": w.limit.quota - w.remaining,
                "remaining": w.remaining,
                "reset_seconds": w.reset_seconds,
            }
            for w in decision.windows
        ]
        return jsonify({"key_id": key_id, "tier": record.tier, "windows": windows})

    @bp.get("/bans")
    @require_role("admin")
    def list_bans() -> ResponseReturnValue:
        return jsonify({"data": [b.as_dict() for b in runtime.bans.active()]})

    @bp.post("/bans")
    @require_role("admin")
    def add_ban() -> ResponseReturnValue:
        body = _body()
        network = body.get("network")
        try:
            network = str(ipaddress.ip_network(str(network), strict=False))
        except ValueError:
            raise ValidationError({"network": "must be an IP address or CIDR"}) from None
        seconds = body.get("seconds", 3600)
        if not isinstance(seconds, int) or not 1 <= seconds <= MAX_BAN_SECONDS:
            raise ValidationError({"seconds": f"must be an integer from 1 to {MAX_BAN_SECONDS}"})
        reason = str(body.get("reason") or "manual")[:200]
        ban = runtime.bans.ban(network, reason, "manual", seconds)
        assert ban is not None  # manual bans are never skipped
        audit("ban.create", "ban", network, after=ban.as_dict())
        return jsonify(ban.as_dict()), 201

    @bp.delete("/bans/<path:network>")
    @require_role("admin")
    def remove_ban(network: str) -> ResponseReturnValue:
        try:
            network = str(ipaddress.ip_network(network, strict=False))
        except ValueError:
            raise ValidationError({"network": "must be an IP address or CIDR"}) from None
        before = next((b.as_dict() for b in runtime.bans.active() if b.network == network), None)
        if not runtime.bans.unban(network):
            raise NotFoundError(f"No ban on {network}.")
        audit("ban.delete", "ban", network, before=before)
        return jsonify({"removed": network})

    @bp.post("/reload")
    @require_role("admin")
    def reload_tiers() -> ResponseReturnValue:
        before = sorted(runtime.policy.tiers)
        try:
            reloaded = runtime.reload_limits()
        except (ConfigError, PolicyError) as exc:
            raise ValidationError({"config": str(exc)}) from None
        if not reloaded:
            raise ValidationError({"reload": "this process was started without a config file"})
        runtime.announce_reload()
        audit(
            "tiers.reload", "tiers", "config", before={"tiers": before}, after={"tiers": sorted(runtime.policy.tiers)}
        )
        return jsonify({"tiers": {t: [asdict(lim) for lim in lims] for t, lims in runtime.policy.tiers.items()}})

    return bp
