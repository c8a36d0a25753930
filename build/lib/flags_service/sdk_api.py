"""Endpoints for server-side SDKs: the snapshot (ETag/304), its SSE change stream, evaluation counts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue

from flags_service.storage import SdkKey
from service_kit.errors import AuthenticationError, AuthorizationError, ValidationError

if TYPE_CHECKING:
    from flags_service.app import FlagsService

MAX_COUNT_ITEMS = 5000


def sdk_blueprint(service: FlagsService) -> Blueprint:
    blueprint = Blueprint("flags_sdk", __name__, url_prefix="/api/v1/sdk")
    settings = service.settings.flags

    def server_key() -> SdkKey:
        token = service.auth.credential_from_request()
        key = service.sdk_key(token) if token else None
        if key is None:
            raise AuthenticationError("A server SDK key is required.")
        if key.kind != "server":
            raise AuthorizationError("Client keys can only evaluate through OFREP.")
        return key

    @blueprint.get("/snapshot")
    def snapshot() -> ResponseReturnValue:
        key = server_key()
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

    @blueprint.get("/stream")
    def stream() -> ResponseReturnValue:
        """Server-sent events: ``event: version`` with ``{"environment", "version"}`` on connect and on
        every change; a comment line as heartbeat. Closes after ``stream_max_seconds`` (clients reconnect)."""
        key = server_key()
        service.metrics.sdk_polls.labels(key.environment, "stream").inc()
        cache = service.cache

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
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        return response

    @blueprint.post("/evaluations")
    def evaluations() -> ResponseReturnValue:
        """``{"counts": [{"flag", "variant", "count"}]}`` from an SDK; unknown flags/variants are dropped
        so a misbehaving client cannot blow up metric cardinality."""
        key = server_key()
        body = request.get_json(silent=True)
        items = body.get("counts") if isinstance(body, dict) else None
        if not isinstance(items, list) or len(items) > MAX_COUNT_ITEMS:
            raise ValidationError({"counts": f"must be a list of at most {MAX_COUNT_ITEMS} items"})
        flags = service.cache.get(key.environment).flags
        counts: dict[tuple[str, str], int] = {}
        accepted = 0
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValidationError({f"counts[{index}]": "must be an object"})
            flag, variant, count = item.get("flag"), item.get("variant"), item.get("count")
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValidationError({f"counts[{index}].count": "must be a positive integer"})
            if isinstance(flag, str) and flag in flags and variant in flags[flag]["variants"]:
                counts[(flag, str(variant))] = counts.get((flag, str(variant)), 0) + count
                accepted += 1
        service.recorder.add_many(key.environment, counts)
        return {"accepted": accepted, "dropped": len(items) - accepted}, 202

    return blueprint
