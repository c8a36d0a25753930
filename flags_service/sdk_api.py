"""Endpoints for server-side SDKs: the snapshot (ETag/304), its SSE change stream, evaluation counts."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from flask import Blueprint, Response, g, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from flags_service.api import SDK_KEY, api
from flags_service.model import Document
from flags_service.service import current_flags
from service_kit.errors import AuthenticationError, AuthorizationError, RateLimitError
from service_kit.openapi import MAX_ID, JsonInt
from service_kit.tiers import Tier

bp = Blueprint("flags_sdk", __name__, url_prefix="/api/v1/sdk")
MAX_COUNT_ITEMS = 5000
F = TypeVar("F", bound=Callable[..., Any])


class SnapshotDocument(BaseModel):
    """Everything an SDK evaluates locally: compiled flags and segments of one environment at a version."""

    environment: str
    version: int
    tiers: list[Tier]
    flags: dict[str, dict[str, Any]]
    segments: dict[str, dict[str, Any]]


class EvaluationCount(Document):
    flag: str = Field(max_length=100)
    variant: str = Field(max_length=64)
    count: JsonInt = Field(ge=1, le=MAX_ID)


class EvaluationCounts(Document):
    """``{"counts": [{"flag", "variant", "count"}]}``: what an SDK evaluated since its last report."""

    counts: list[EvaluationCount] = Field(max_length=MAX_COUNT_ITEMS)


class Accepted(BaseModel):
    accepted: int
    dropped: int = Field(description="counts of unknown flags or variants, dropped")


def require_server_key(view: F) -> F:
    """The request's server SDK key (``g.sdk_key``) before the body is read: 401 without a valid key, 403
    for a client (browser) key."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        service = current_flags()
        token = service.auth.credential_from_request()
        key = service.sdk_key(token) if token else None
        if key is None:
            raise AuthenticationError("A server SDK key is required.")
        if key.kind != "server":
            raise AuthorizationError("Client keys can only evaluate through OFREP.")
        g.sdk_key = key
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@bp.get("/snapshot")
@require_server_key
@api.validate(
    responses={200: SnapshotDocument, 304: None},
    tags=("sdk",),
    security=SDK_KEY,
    validate_responses=False,  # the body is the snapshot JSON built once per version (snapshots.py)
)
def get_snapshot() -> ResponseReturnValue:
    service, key = current_flags(), g.sdk_key
    current = service.cache.get(key.environment)
    if current.etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
        service.metrics.sdk_polls.labels(key.environment, "not_modified").inc()
        response = Response(status=304)
    else:
        service.metrics.sdk_polls.labels(key.environment, "updated").inc()
        response = Response(current.body, mimetype="application/json")
    response.headers["ETag"] = current.etag
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/stream")
@require_server_key
@api.validate(
    responses={200: None},
    tags=("sdk",),
    security=SDK_KEY,
    extra={429: "every stream slot of this worker is taken; poll the snapshot"},
    openapi={"responses": {"200": {"description": "server-sent events", "content": {"text/event-stream": {}}}}},
    validate_responses=False,  # a stream: spectree would read it to the end
)
def stream_changes() -> ResponseReturnValue:
    """Server-sent events: ``event: version`` with ``{"environment", "version"}`` on connect and on
    every change; a comment line as heartbeat. Closes after ``stream_max_seconds`` (clients reconnect)."""
    service, key = current_flags(), g.sdk_key
    if not service.stream_slots.acquire(blocking=False):
        raise RateLimitError("Too many open streams on this worker; poll the snapshot instead.", 30)
    service.metrics.sdk_polls.labels(key.environment, "stream").inc()
    settings, cache, slots = service.settings.flags, service.cache, service.stream_slots

    def events() -> Iterator[str]:
        started = last_sent = time.monotonic()
        sent_version = None
        while time.monotonic() - started < settings.stream_max_seconds:
            current = cache.get(key.environment)
            now = time.monotonic()
            if current.version != sent_version:
                sent_version = current.version
                data = json.dumps({"environment": key.environment, "version": current.version})
                yield f"event: version\nid: {current.version}\ndata: {data}\n\n"
                last_sent = now
            elif now - last_sent >= settings.stream_heartbeat_seconds:
                yield ": keepalive\n\n"
                last_sent = now
            with cache.changed:
                cache.changed.wait(timeout=min(settings.db_poll_seconds, settings.stream_heartbeat_seconds))

    response = Response(events(), mimetype="text/event-stream")
    response.call_on_close(slots.release)  # the WSGI server closes the body when the client goes
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


@bp.post("/evaluations")
@require_server_key
@api.validate(json=EvaluationCounts, responses={202: Accepted}, tags=("sdk",), security=SDK_KEY)
def report_evaluations() -> ResponseReturnValue:
    """Counts of unknown flags or variants are dropped, so a misbehaving client cannot blow up metric
    cardinality."""
    service, key = current_flags(), g.sdk_key
    body: EvaluationCounts = request.context.json  # type: ignore[attr-defined]
    flags = service.cache.get(key.environment).flags
    counts: dict[tuple[str, str], int] = {}
    accepted = 0
    for item in body.counts:
        if item.flag in flags and item.variant in flags[item.flag]["variants"]:
            counts[(item.flag, item.variant)] = counts.get((item.flag, item.variant), 0) + item.count
            accepted += 1
    service.recorder.add_many(key.environment, counts)
    return {"accepted": accepted, "dropped": len(body.counts) - accepted}, 202
