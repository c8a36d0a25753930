"""OpenFeature Remote Evaluation Protocol (open-feature/protocol service/openapi.yaml).

``POST /ofrep/v1/evaluate/flags/{key}`` and ``POST /ofrep/v1/evaluate/flags`` (bulk, ETag /
If-None-Match). Server SDK keys evaluate every flag; client keys (browsers, with CORS) only flags marked
client-visible, and any other flag is simply not found for them. 401/403 carry no body, as the spec says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request

from flags_service.engine import ERROR, evaluate
from flags_service.snapshots import Snapshot, content_hash
from flags_service.storage import SdkKey

if TYPE_CHECKING:
    from flags_service.app import FlagsService

JSON_TYPE = "application/json"
CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-API-Key, If-None-Match"


class OfrepError(Exception):
    """An OFREP error body ``{"key"?, "errorCode", "errorDetails"}`` with its status."""

    def __init__(self, status: int, code: str, details: str, key: str | None = None) -> None:
        super().__init__(details)
        self.status, self.code, self.details, self.key = status, code, details, key

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"errorCode": self.code, "errorDetails": self.details}
        return body if self.key is None else {"key": self.key, **body}


def _json(document: Any, status: int = 200) -> Response:
    return Response(json.dumps(document, separators=(",", ":")), status=status, mimetype=JSON_TYPE)


def _context() -> dict[str, Any]:
    try:
        body = json.loads(request.get_data(cache=False) or b"{}")
    except ValueError:
        raise OfrepError(400, "PARSE_ERROR", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise OfrepError(400, "PARSE_ERROR", "the request body must be a JSON object")
    context = body.get("context", {})
    if not isinstance(context, dict):
        raise OfrepError(400, "INVALID_CONTEXT", "context must be a JSON object")
    targeting_key = context.get("targetingKey")
    if targeting_key is not None and not isinstance(targeting_key, str):
        raise OfrepError(400, "INVALID_CONTEXT", "targetingKey must be a string")
    return context


def _item(key: str, flag: Mapping[str, Any], context: Mapping[str, Any], snapshot: Snapshot) -> dict[str, Any]:
    result = evaluate(flag, context, snapshot.segments, snapshot.flags)
    if result.reason == ERROR:
        return {"key": key, "errorCode": result.error_code or "GENERAL", "errorDetails": result.error_message or ""}
    return {
        "key": key,
        "value": result.value,
        "reason": result.reason,
        "variant": result.variant,
        "metadata": dict(result.metadata),
    }


def ofrep_blueprint(service: FlagsService) -> Blueprint:
    blueprint = Blueprint("flags_ofrep", __name__, url_prefix="/ofrep/v1")
    origins = list(service.settings.flags.cors_origins)

    def sdk_key() -> SdkKey:
        token = service.auth.credential_from_request()
        key = service.sdk_key(token) if token else None
        if key is None:
            raise OfrepError(401, "", "")
        return key

    def visible_flags(key: SdkKey, snapshot: Snapshot) -> Mapping[str, Mapping[str, Any]]:
        return snapshot.flags if key.kind == "server" else snapshot.client_flags

    def count(environment: str, items: list[dict[str, Any]]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for item in items:
            if "variant" in item and item["variant"] is not None:
                counts[(item["key"], item["variant"])] = counts.get((item["key"], item["variant"]), 0) + 1
        if counts:
            service.recorder.add_many(environment, counts)

    # Our own OPTIONS handler answers CORS preflights, so Flask's automatic one is off.
    @blueprint.route("/evaluate/flags/<key>", methods=["POST"], provide_automatic_options=False)
    def evaluate_one(key: str) -> Response:
        try:
            api_key = sdk_key()
            context = _context()
            snapshot = service.cache.get(api_key.environment)
            flag = visible_flags(api_key, snapshot).get(key)
            if flag is None:
                raise OfrepError(404, "FLAG_NOT_FOUND", f"flag {key!r} was not found", key)
            item = _item(key, flag, context, snapshot)
        except OfrepError as error:
            return _error_response(error, key)
        if "errorCode" in item:
            return _json(item, 400)
        count(api_key.environment, [item])
        return _json(item)

    @blueprint.route("/evaluate/flags", methods=["POST"], provide_automatic_options=False)
    def evaluate_bulk() -> Response:
        try:
            api_key = sdk_key()
            context = _context()
        except OfrepError as error:
            return _error_response(error, None)
        snapshot = service.cache.get(api_key.environment)
        etag = f'"{content_hash(snapshot.environment, snapshot.version, api_key.kind, context)}"'
        if etag in _etags(request.headers.get("If-None-Match", "")):
            response = Response(status=304)
            response.headers["ETag"] = etag
            return response
        flags = visible_flags(api_key, snapshot)
        items = [_item(key, flag, context, snapshot) for key, flag in flags.items()]
        count(api_key.environment, items)
        response = _json({"flags": items})
        response.headers["ETag"] = etag
        return response

    @blueprint.route("/evaluate/flags", methods=["OPTIONS"])
    @blueprint.route("/evaluate/flags/<key>", methods=["OPTIONS"])
    def preflight(key: str | None = None) -> Response:
        response = Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    @blueprint.after_request
    def cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and ("*" in origins or origin in origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
            response.headers["Access-Control-Expose-Headers"] = "ETag"
            if "*" not in origins:
                response.headers["Vary"] = "Origin"
        return response

    return blueprint


def _error_response(error: OfrepError, key: str | None) -> Response:
    if error.status in (401, 403):
        return Response(status=error.status)
    if error.key is None and key is not None:
        error.key = key
    return _json(error.body(), error.status)


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}
