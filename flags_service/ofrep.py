"""OpenFeature Remote Evaluation Protocol (open-feature/protocol service/openapi.yaml).

``POST /ofrep/v1/evaluate/flags/{key}``, ``POST /ofrep/v1/evaluate/flags`` (bulk) and
``GET /ofrep/v1/configuration`` (what providers may assume); the last two answer ETag / If-None-Match.
Server SDK keys evaluate every flag; client keys (browsers, with CORS) only flags marked client-visible, and
any other flag is simply not found for them. 401/403 carry no body, as the spec says.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from flask import Blueprint, Response, request

from flags_service.engine import ERROR, Evaluation, context_attributes, evaluate
from flags_service.snapshots import Snapshot, content_hash
from flags_service.storage import SdkKey

if TYPE_CHECKING:
    from flags_service.app import FlagsService

JSON_TYPE = "application/json"
CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-API-Key, If-None-Match"
PROVIDER_NAME = "vibelux-flags"
# The OFREP types our flag types serve: a number flag answers int and float, a json flag answers object.
SUPPORTED_TYPES = ("boolean", "string", "int", "float", "object")


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
Item = tuple[str, Served | None]  # one OFREP item as JSON text, and what it served (None: an error item)
Signature = tuple[tuple[Any, ...], tuple[type, ...]] | None  # attribute values and their types; None: unhashable


MEMO_LIMIT = 20_000  # memoised results per snapshot and process; beyond it, evaluate every time


class FlagPlan(NamedTuple):
    """How a snapshot answers one flag, worked out once per snapshot.

    ``attributes`` are the sorted context attributes the result depends on (``()``: none, ``None``: varies
    per user, as when it reads the targeting key or buckets users); a context-free flag's ``item`` is made
    once, the others are memoised by those attributes' values or evaluated every time.
    """

    key: str
    flag: Mapping[str, Any]
    attributes: tuple[str, ...] | None
    item: Item | None


class BulkLayout(NamedTuple):
    """One audience's bulk response, worked out once per snapshot: the items of context-free flags already
    in their places (``""`` marks a slot filled per request) and what they serve, and the other flags."""

    items: tuple[str, ...]
    served: tuple[Served, ...]
    varying: tuple[tuple[int, FlagPlan], ...]


def _flag_plan(key: str, flag: Mapping[str, Any], snapshot: Snapshot) -> FlagPlan:
    """The flag's plan, made on first use (threads racing here make equal plans; the last one stays)."""
    try:
        plan: FlagPlan = snapshot.flag_plans[key]
        return plan
    except KeyError:
        pass
    attributes = context_attributes(flag, snapshot.flags)
    ordered = None if attributes is None else tuple(sorted(attributes))
    # A result that reads no attribute is the same for every context, the empty one included.
    item = _render(key, evaluate(flag, {}, snapshot.segments, snapshot.flags), snapshot) if ordered == () else None
    plan = snapshot.flag_plans[key] = FlagPlan(key, flag, ordered, item)
    return plan


def _bulk_layout(kind: str, flags: Mapping[str, Mapping[str, Any]], snapshot: Snapshot) -> BulkLayout:
    """The bulk layout of the ``flags`` a key of ``kind`` sees, in snapshot order, made on first use."""
    try:
        layout: BulkLayout = snapshot.bulk_layouts[kind]
        return layout
    except KeyError:
        pass
    plans = [_flag_plan(key, flag, snapshot) for key, flag in flags.items()]
    layout = snapshot.bulk_layouts[kind] = BulkLayout(
        items=tuple("" if plan.item is None else plan.item[0] for plan in plans),
        served=tuple(plan.item[1] for plan in plans if plan.item is not None and plan.item[1] is not None),
        varying=tuple((slot, plan) for slot, plan in enumerate(plans) if plan.item is None),
    )
    return layout


def _render(key: str, result: Evaluation, snapshot: Snapshot) -> Item:
    """A flag yields few distinct items (one per variant and reason): their JSON and counter key are made
    once per snapshot."""
    if result.reason == ERROR:
        error = {"key": key, "errorCode": result.error_code or "GENERAL", "errorDetails": result.error_message or ""}
        return json.dumps(error, separators=(",", ":")), None
    cache_key = (key, result.variant, result.reason)
    rendered: Item | None = snapshot.rendered_items.get(cache_key)
    if rendered is None:
        item = {
            "key": key,
            "value": result.value,
            "reason": result.reason,
            "variant": result.variant,
            "metadata": dict(result.metadata),
        }
        rendered = snapshot.rendered_items[cache_key] = (
            json.dumps(item, separators=(",", ":")),
            (key, str(result.variant)),
        )
    return rendered


def _signature(attributes: tuple[str, ...], context: Mapping[str, Any]) -> Signature:
    """The values of ``attributes`` and their types (``True`` is not ``1``), or ``None`` when one is a list
    or an object (not hashable, so not memoised)."""
    values = tuple([context.get(attribute) for attribute in attributes])
    signature = (values, tuple(map(type, values)))
    try:
        hash(signature)
    except TypeError:
        return None
    return signature


def _item(plan: FlagPlan, context: Mapping[str, Any], snapshot: Snapshot, signatures: dict[Any, Signature]) -> Item:
    """The flag's item for ``context``. ``signatures`` holds the request's signature per attribute tuple, so
    flags that read the same attributes share one look at the context."""
    if plan.item is not None:
        return plan.item
    attributes = plan.attributes
    memo_key = None
    if attributes:
        try:
            signature = signatures[attributes]
        except KeyError:
            signature = signatures[attributes] = _signature(attributes, context)
        if signature is not None:
            memo_key = (plan.key, signature)
            hit: Item | None = snapshot.memo.get(memo_key)
            if hit is not None:
                return hit
    rendered = _render(plan.key, evaluate(plan.flag, context, snapshot.segments, snapshot.flags), snapshot)
    if memo_key is not None and rendered[1] is not None and len(snapshot.memo) < MEMO_LIMIT:
        snapshot.memo[memo_key] = rendered
    return rendered


def provider_configuration(min_polling_seconds: float) -> dict[str, Any]:
    """The OFREP ``configurationResponse``: providers see changes by polling the bulk endpoint (ETag/304).
    The optional ``caching`` capability is left out, so server providers do not cache single evaluations."""
    return {
        "name": PROVIDER_NAME,
        "capabilities": {
            "cacheInvalidation": {
                "polling": {"enabled": True, "minPollingIntervalMs": math.ceil(min_polling_seconds * 1000)}
            },
            "flagEvaluation": {"supportedTypes": list(SUPPORTED_TYPES)},
        },
    }


def ofrep_blueprint(service: FlagsService) -> Blueprint:
    blueprint = Blueprint("flags_ofrep", __name__, url_prefix="/ofrep/v1")
    origins = list(service.settings.flags.cors_origins)
    configuration_document = provider_configuration(service.settings.flags.ofrep_min_polling_seconds)
    configuration_text = json.dumps(configuration_document, separators=(",", ":"))
    configuration_etag = f'"{content_hash(configuration_document)}"'

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
            text, served = _item(_flag_plan(key, flag, snapshot), context, snapshot, {})
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
        if _not_modified(etag):
            return _with_etag(Response(status=304), etag)
        layout = _bulk_layout(api_key.kind, visible_flags(api_key, snapshot), snapshot)
        items, served = list(layout.items), list(layout.served)
        signatures: dict[Any, Signature] = {}
        for slot, plan in layout.varying:
            items[slot], counted = _item(plan, context, snapshot, signatures)
            if counted is not None:
                served.append(counted)
        service.recorder.add_served(api_key.environment, served)
        return _with_etag(Response('{"flags":[' + ",".join(items) + "]}", mimetype=JSON_TYPE), etag)

    @blueprint.route("/configuration", methods=["GET"], provide_automatic_options=False)
    def configuration() -> Response:
        """Keyed like evaluation, so providers send one set of credentials and get one 401 for all routes."""
        try:
            sdk_key()
        except OfrepError as error:
            return _error_response(error, None)
        if _not_modified(configuration_etag):
            return _with_etag(Response(status=304), configuration_etag)
        return _with_etag(Response(configuration_text, mimetype=JSON_TYPE), configuration_etag)

    @blueprint.route("/evaluate/flags", methods=["OPTIONS"])
    @blueprint.route("/evaluate/flags/<key>", methods=["OPTIONS"])
    def preflight(key: str | None = None) -> Response:
        return _preflight("POST, OPTIONS")

    @blueprint.route("/configuration", methods=["OPTIONS"])
    def configuration_preflight() -> Response:
        return _preflight("GET, OPTIONS")

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


def _preflight(allowed_methods: str) -> Response:
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = allowed_methods
    response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
    response.headers["Access-Control-Max-Age"] = "600"
    return response


def _not_modified(etag: str) -> bool:
    """Whether the request's If-None-Match already names ``etag`` (weak or strong)."""
    header = request.headers.get("If-None-Match", "")
    return etag in {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}


def _with_etag(response: Response, etag: str) -> Response:
    response.headers["ETag"] = etag
    return response
