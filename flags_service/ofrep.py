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

from flags_service.engine import ERROR, context_attributes, evaluate
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


Served = tuple[str, str]  # (flag key, variant): what the evaluation counters count


MEMO_LIMIT = 20_000  # memoised results per snapshot and process; beyond it, evaluate every time


def _plan(key: str, flag: Mapping[str, Any], snapshot: Snapshot) -> tuple[str, ...] | None:
    """The sorted attributes the flag's result depends on (``()``: none), or ``None``: varies per user."""
    try:
        return snapshot.memo_plans[key]
    except KeyError:
        attributes = context_attributes(flag, snapshot.flags)
        plan = snapshot.memo_plans[key] = None if attributes is None else tuple(sorted(attributes))
        return plan


def _evaluate(
    key: str, flag: Mapping[str, Any], context: Mapping[str, Any], snapshot: Snapshot
) -> tuple[str, Served | None]:
    """One OFREP item as JSON text, and what was served (``None`` for an error item).

    A flag yields few distinct items (one per variant and reason), so their JSON and their counter key are
    made once per snapshot. Flags whose result depends only on a few attributes (tier, country…) are
    memoised per snapshot by those attributes' values (and types: ``True`` is not ``1``); flags that read the
    targeting key or bucket users are evaluated every time.
    """
    context_free = snapshot.context_free_items.get(key)
    if context_free is not None:
        return context_free
    plan = _plan(key, flag, snapshot)
    memo_key: tuple[Any, ...] | None = None
    if plan:
        values = tuple([context.get(attribute) for attribute in plan])
        memo_key = (key, values, tuple(map(type, values)))
        try:
            hit = snapshot.memo.get(memo_key)
        except TypeError:  # a list-valued attribute: not hashable, not memoised
            hit, memo_key = None, None
        if hit is not None:
            return hit
    result = evaluate(flag, context, snapshot.segments, snapshot.flags)
    if result.reason == ERROR:
        error = {"key": key, "errorCode": result.error_code or "GENERAL", "errorDetails": result.error_message or ""}
        return json.dumps(error, separators=(",", ":")), None
    cache_key = (key, result.variant, result.reason)
    rendered = snapshot.rendered_items.get(cache_key)
    if rendered is None:
        item = {
            "key": key,
            "value": result.value,
            "reason": result.reason,
            "variant": result.variant,
            "metadata": dict(result.metadata),
        }
        rendered = (json.dumps(item, separators=(",", ":")), (key, str(result.variant)))
        snapshot.rendered_items[cache_key] = rendered
    if plan == ():
        snapshot.context_free_items[key] = rendered
    elif memo_key is not None and len(snapshot.memo) < MEMO_LIMIT:
        snapshot.memo[memo_key] = rendered
    return rendered


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
            text, served = _evaluate(key, flag, context, snapshot)
        except OfrepError as error:
            return _error_response(error, key)
        if served is None:
            return Response(text, status=400, mimetype=JSON_TYPE)
        service.recorder.add_served(api_key.environment, [served])
        return Response(text, mimetype=JSON_TYPE)

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
        rendered = [_evaluate(key, flag, context, snapshot) for key, flag in flags.items()]
        service.recorder.add_served(api_key.environment, [served for _, served in rendered if served is not None])
        response = Response('{"flags":[' + ",".join(text for text, _ in rendered) + "]}", mimetype=JSON_TYPE)
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
