"""Admin routes of the response cache (ratelimit_proxy/cache.py), a blueprint of the admin API declared on its
OpenAPI document (ratelimit_proxy/admin_common.py): purge by URL and by Surrogate-Key tag. Each purge deletes
the entries in Redis, is announced on ``rl:changes`` so every worker of every replica drops its local copies
at once, is forwarded to the CDN when one is configured (ratelimit_proxy/cdn.py), and is written to the audit
log. ``vibelux-proxy cache purge`` (ratelimit_proxy/cli.py) does the same from a shell, checked by the same
models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from ratelimit_proxy.admin_common import STORAGE_DOWN, Body, _value_only, api, audit, current_runtime
from ratelimit_proxy.cache import MAX_TAG_LENGTH, ResponseCache
from service_kit.auth import require_role
from service_kit.errors import NotFoundError

bp = Blueprint("ratelimit_cache", __name__, url_prefix="/api/v1")
MAX_PURGE_ITEMS = 100
CACHE_OFF = "the response cache is off (cache.enabled is false)"
# A path (with its query) or an absolute http(s) URL, without spaces, controls or NUL.
PURGE_URL = "^(/|https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/|$))[^\\s\\u0000-\\u001f\\u007f]*$"
PURGE_TAG = f"^[^\\s\\u0000-\\u001f\\u007f]{{1,{MAX_TAG_LENGTH}}}$"

Url = Annotated[str, Field(max_length=2048, pattern=PURGE_URL)]
Tag = Annotated[str, Field(max_length=MAX_TAG_LENGTH, pattern=PURGE_TAG)]


class UrlPurge(Body):
    urls: list[Url] = Field(
        min_length=1,
        max_length=MAX_PURGE_ITEMS,
        description="paths with their query, or absolute URLs (path and query count)",
    )


class TagPurge(Body):
    tags: list[Tag] = Field(min_length=1, max_length=MAX_PURGE_ITEMS, description="Surrogate-Key tags")


class CdnCall(BaseModel):
    """One call to the CDN's API: ``status`` when it answered, ``error`` (the exception's class) when not."""

    kind: Literal["url", "tags"]
    status: int | None = Field(None, description="the CDN's HTTP status", json_schema_extra=_value_only)
    error: str | None = Field(None, description="why the call got no answer", json_schema_extra=_value_only)


class CdnResult(BaseModel):
    provider: str = Field(description="none, fastly or cloudflare")
    calls: list[CdnCall]


class PurgeResult(BaseModel):
    urls: list[str] = Field(description="the targets purged, as the proxy keys them")
    tags: dict[str, int] = Field(description="per tag, the URLs it held here")
    cdn: CdnResult


def current_cache() -> ResponseCache:
    cache = current_runtime().cache
    if cache is None:
        raise NotFoundError("The response cache is off: cache.enabled is false.")
    return cache


def audited(action: str, target: str, result: dict[str, Any]) -> ResponseReturnValue:
    audit(action, "cache", target, after=result)
    return jsonify(result)


ERRORS = {404: CACHE_OFF, 503: STORAGE_DOWN}


@bp.post("/cache/purge/urls")
@require_role("admin")
@api.validate(json=UrlPurge, responses={200: PurgeResult}, tags=("cache",), security="bearer", extra=ERRORS)
def purge_urls() -> ResponseReturnValue:
    """Drop every stored variant of each URL on every replica, and forward the purge to the CDN."""
    body: UrlPurge = request.context.json  # type: ignore[attr-defined]
    return audited("cache.purge_urls", "urls", current_cache().purge(body.urls, []))


@bp.post("/cache/purge/tags")
@require_role("admin")
@api.validate(json=TagPurge, responses={200: PurgeResult}, tags=("cache",), security="bearer", extra=ERRORS)
def purge_tags() -> ResponseReturnValue:
    """Drop every URL stored under each Surrogate-Key tag on every replica, and forward it to the CDN."""
    body: TagPurge = request.context.json  # type: ignore[attr-defined]
    return audited("cache.purge_tags", "tags", current_cache().purge([], body.tags))
