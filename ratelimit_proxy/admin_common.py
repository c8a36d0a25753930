"""What the proxy's admin blueprints share (ratelimit_proxy/admin.py, admin_cache.py, release_admin.py): the
one OpenAPI document their models are declared on, the request body base, the audit helper and the
runtime of the app. Kept apart from admin.py so each blueprint is a module-level ``bp`` that admin.py
imports and registers, without a circular import."""

from __future__ import annotations

from typing import Any

from flask import current_app
from pydantic import BaseModel, ConfigDict

from ratelimit_proxy.runtime import Runtime
from service_kit.auth import current_auth
from service_kit.db import current_db
from service_kit.openapi import ApiDocument

STORAGE_DOWN = "Redis is unavailable (Retry-After)"

api = ApiDocument(
    "VibeLux rate-limiting proxy: admin API",
    "API keys of proxied clients, their usage, IP bans, tier reloads and response cache purges. The proxied "
    "paths (port 8080) are the upstream's, not described here.",
    security={
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "kit API token with the admin role, or the bootstrap token RATELIMIT_PROXY_ADMIN__TOKEN",
        }
    },
)


def current_runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["ratelimit_proxy"]
    return runtime


def audit(action: str, target_type: str, target: str, before: Any = None, after: Any = None) -> None:
    current_auth().record(action, target_type, target, before=before, after=after)
    current_db().session.commit()


class Body(BaseModel):
    """Request bodies: unknown fields refused, and no coercion (``true`` is not 1, ``"60"`` not 60)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _value_only(schema: dict[str, Any]) -> None:
    """An optional field that is absent or a value, never null: None is only how Python says "absent"."""
    (value,) = [s for s in schema.pop("anyOf") if s != {"type": "null"}]
    schema.pop("default", None)
    schema.update(value)
