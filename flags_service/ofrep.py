"""OpenFeature Remote Evaluation Protocol (open-feature/protocol service/openapi.yaml).

``POST /ofrep/v1/evaluate/flags/{key}``, ``POST /ofrep/v1/evaluate/flags`` (bulk) and
``GET /ofrep/v1/configuration`` (what providers may assume); the last two answer ETag / If-None-Match.
Server SDK keys evaluate every flag; client keys (browsers, with CORS) only flags marked client-visible, and
any other flag is simply not found for them. 401/403 carry no body, as the spec says.

The pydantic models below are OFREP's shapes (camelCase as the spec names them) and this document's part
of ``/openapi.json``; a request they refuse is OFREP's 400 ``{"key"?, "errorCode", "errorDetails"}``, not the
kit's 422: a body that is not a JSON object is ``PARSE_ERROR``, a context of the wrong shape
``INVALID_CONTEXT``. A context ``tier`` outside ``service_kit.tiers.TIERS`` is an invalid context too (400
for single and bulk evaluation alike, the bulk one being the spec's ``bulkEvaluationFailure``): an unknown
tier is never served as if it were another, nor quietly as no tier. Both count in
``flags_invalid_context_total{reason}``.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, TypeVar

import pydantic
from flask import Blueprint, Response, g, request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from flags_service.engine import ERROR, Evaluation, context_attributes, evaluate
from flags_service.service import current_flags
from flags_service.snapshots import Snapshot, content_hash
from flags_service.storage.sdk_keys import SdkKey
from service_kit.errors import ValidationError
from service_kit.openapi import ApiDocument, field_name
from service_kit.requests import refuse_nul
from service_kit.tiers import Tier

JSON_TYPE = "application/json"
CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-API-Key, If-None-Match"
PROVIDER_NAME = "vibelux-flags"
# The OFREP types our flag types serve: a number flag answers int and float, a json flag answers object.
SUPPORTED_TYPES = ("boolean", "string", "int", "float", "object")
F = TypeVar("F", bound=Callable[..., Any])


class OfrepError(Exception):
    """An OFREP error body ``{"key"?, "errorCode", "errorDetails"}`` with its status."""

    def __init__(self, status: int, code: str, details: str, key: str | None = None) -> None:
        super().__init__(details)
        self.status, self.code, self.details, self.key = status, code, details, key

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"errorCode": self.code, "errorDetails": self.details}
        return body if self.key is None else {"key": self.key, **body}


# -- OFREP's shapes --------------------------------------------------------------------------------
class EvaluationContext(BaseModel):
    """Any attributes; ``targetingKey`` a string and ``tier`` one of the platform's tiers when present."""

    model_config = ConfigDict(extra="allow")
    targetingKey: StrictStr | None = None
    tier: Tier | None = None


class EvaluationRequest(BaseModel):
    context: EvaluationContext = Field(default_factory=EvaluationContext)


Metadata = dict[str, bool | str | float]


class EvaluationSuccess(BaseModel):
    key: str
    value: Any
    reason: str = Field(description="STATIC, TARGETING_MATCH, SPLIT, DISABLED or DEFAULT")
    variant: str
    metadata: Metadata


class EvaluationFailure(BaseModel):
    key: str
    errorCode: Literal["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"]
    errorDetails: str


class FlagNotFound(BaseModel):
    key: str
    errorCode: Literal["FLAG_NOT_FOUND"]
    errorDetails: str


class BulkItemFailure(BaseModel):
    key: str
    errorCode: Literal["FLAG_NOT_FOUND", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"]
    errorDetails: str


class BulkEvaluationSuccess(BaseModel):
    flags: list[EvaluationSuccess | BulkItemFailure]


class BulkEvaluationFailure(BaseModel):
    errorCode: Literal["PARSE_ERROR", "INVALID_CONTEXT", "GENERAL"]
    errorDetails: str


class Polling(BaseModel):
    enabled: bool
    minPollingIntervalMs: int


class CacheInvalidation(BaseModel):
    polling: Polling


class FlagEvaluation(BaseModel):
    supportedTypes: list[Literal["boolean", "string", "int", "float", "object"]]


class Capabilities(BaseModel):
    cacheInvalidation: CacheInvalidation
    flagEvaluation: FlagEvaluation


class ConfigurationResponse(BaseModel):
    name: str
    capabilities: Capabilities


def invalid_context(error: pydantic.ValidationError) -> OfrepError:
    """A context the models refuse: ``INVALID_CONTEXT`` naming the field, counted by reason."""
    first = error.errors(include_url=False, include_input=False)[0]
    location = tuple(first["loc"])
    reason = "unknown_tier" if location == ("context", "tier") else "malformed"
    current_flags().metrics.invalid_contexts.labels(reason).inc()
    return OfrepError(400, "INVALID_CONTEXT", f"{field_name(location)}: {first['msg']}")


def read_evaluation_request() -> dict[str, Any]:
    """OFREP's body rules: any media type, an empty body is an empty context, anything but a JSON object is
    ``PARSE_ERROR``, and NUL in a context's text or key is ``INVALID_CONTEXT`` (the document says so of
    every string, as for the kit's bodies). The parsed body stays cached for the view (``get_json``)."""
    if not request.get_data(cache=True):
        return {}
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise OfrepError(400, "PARSE_ERROR", "the request body must be a JSON object")
    try:
        refuse_nul(body.get("context"), "context")  # other fields are ignored, NUL or not
    except ValidationError as error:
        current_flags().metrics.invalid_contexts.labels("malformed").inc()
        ((field, message),) = error.details.items()
        raise OfrepError(400, "INVALID_CONTEXT", f"{field}: {message}") from None
    return body


ofrep_api = ApiDocument(
    "OpenFeature Remote Evaluation Protocol",
    security={"sdk_key": {"type": "http", "scheme": "bearer", "description": "fsk_… SDK key (or X-API-Key)"}},
    invalid_request=invalid_context,
    invalid_status=400,
    invalid_model=EvaluationFailure,
    read_body=read_evaluation_request,
)
bp = Blueprint("flags_ofrep", __name__, url_prefix="/ofrep/v1")
NO_BODY = {401: None, 403: None}  # the spec's 401 and 403 have no body
OPTIONAL_BODY = {"requestBody": {"required": False}}  # no body: the empty context


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


@functools.lru_cache(maxsize=8)
def _configuration(min_polling_seconds: float) -> tuple[str, str]:
    """The configuration's JSON and ETag, made once per setting."""
    document = provider_configuration(min_polling_seconds)
    return json.dumps(document, separators=(",", ":")), f'"{content_hash(document)}"'


def require_sdk_key(view: F) -> F:
    """Any SDK key of the request (``g.sdk_key``) before the body is read; else a 401 without a body."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        service = current_flags()
        token = service.auth.credential_from_request()
        g.sdk_key = service.sdk_key(token) if token else None
        if g.sdk_key is None:
            raise OfrepError(401, "", "")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _visible_flags(key: SdkKey, snapshot: Snapshot) -> Mapping[str, Mapping[str, Any]]:
    return snapshot.flags if key.kind == "server" else snapshot.client_flags


def _evaluation_context() -> dict[str, Any]:
    """The validated request's context as sent (the engine reads plain dicts; no copy through the model)."""
    body = request.get_json(silent=True)
    context: dict[str, Any] = (body or {}).get("context") or {}
    return context


# Response validation is off on these hot paths: it would parse every rendered item again (bulk: all 50)
# and cost more than the evaluation; tests/flags/test_ofrep.py and the schemathesis run check the shapes.
# Our own OPTIONS handlers answer CORS preflights, so Flask's automatic ones are off.
@bp.route("/evaluate/flags/<key>", methods=["POST"], provide_automatic_options=False)
@require_sdk_key
@ofrep_api.validate(
    json=EvaluationRequest,
    responses={200: EvaluationSuccess, 400: EvaluationFailure, 404: FlagNotFound, **NO_BODY},
    tags=("ofrep",),
    security="sdk_key",
    openapi=OPTIONAL_BODY,
    validate_responses=False,
)
def evaluate_flag(key: str) -> Response:
    api_key: SdkKey = g.sdk_key
    service = current_flags()
    snapshot = service.cache.get(api_key.environment)
    flag = _visible_flags(api_key, snapshot).get(key)
    if flag is None:
        raise OfrepError(404, "FLAG_NOT_FOUND", f"flag {key!r} was not found", key)
    text, served = _item(_flag_plan(key, flag, snapshot), _evaluation_context(), snapshot, {})
    if served is None:
        return Response(text, status=400, mimetype=JSON_TYPE)
    service.recorder.add_served(api_key.environment, [served])
    return Response(text, mimetype=JSON_TYPE)


@bp.route("/evaluate/flags", methods=["POST"], provide_automatic_options=False)
@require_sdk_key
@ofrep_api.validate(
    json=EvaluationRequest,
    responses={200: BulkEvaluationSuccess, 304: None, 400: BulkEvaluationFailure, **NO_BODY},
    tags=("ofrep",),
    security="sdk_key",
    openapi=OPTIONAL_BODY,
    validate_responses=False,
)
def evaluate_flags() -> Response:
    api_key: SdkKey = g.sdk_key
    service = current_flags()
    context = _evaluation_context()
    snapshot = service.cache.get(api_key.environment)
    etag = f'"{content_hash(snapshot.environment, snapshot.version, api_key.kind, context)}"'
    if _not_modified(etag):
        return _with_etag(Response(status=304), etag)
    layout = _bulk_layout(api_key.kind, _visible_flags(api_key, snapshot), snapshot)
    items, served = list(layout.items), list(layout.served)
    signatures: dict[Any, Signature] = {}
    for slot, plan in layout.varying:
        items[slot], counted = _item(plan, context, snapshot, signatures)
        if counted is not None:
            served.append(counted)
    service.recorder.add_served(api_key.environment, served)
    return _with_etag(Response('{"flags":[' + ",".join(items) + "]}", mimetype=JSON_TYPE), etag)


@bp.route("/configuration", methods=["GET"], provide_automatic_options=False)
@require_sdk_key
@ofrep_api.validate(responses={200: ConfigurationResponse, 304: None, **NO_BODY}, tags=("ofrep",), security="sdk_key")
def provider_configuration_document() -> Response:
    """Keyed like evaluation, so providers send one set of credentials and get one 401 for all routes."""
    text, etag = _configuration(current_flags().settings.flags.ofrep_min_polling_seconds)
    if _not_modified(etag):
        return _with_etag(Response(status=304), etag)
    return _with_etag(Response(text, mimetype=JSON_TYPE), etag)


@bp.route("/evaluate/flags", methods=["OPTIONS"])
@bp.route("/evaluate/flags/<key>", methods=["OPTIONS"])
def evaluation_preflight(key: str | None = None) -> Response:
    return _preflight("POST, OPTIONS")


@bp.route("/configuration", methods=["OPTIONS"])
def configuration_preflight() -> Response:
    return _preflight("GET, OPTIONS")


@bp.after_request
def cors(response: Response) -> Response:
    origins = current_flags().settings.flags.cors_origins
    origin = request.headers.get("Origin")
    if origin and ("*" in origins or origin in origins):
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
        response.headers["Access-Control-Expose-Headers"] = "ETag"
        if "*" not in origins:
            response.headers["Vary"] = "Origin"
    return response


@bp.errorhandler(OfrepError)
def ofrep_error(error: OfrepError) -> Response:
    """OFREP's error bodies (401/403 have none); a single evaluation's error names its flag."""
    if error.status in (401, 403):
        return Response(status=error.status)
    key = (request.view_args or {}).get("key")
    if error.key is None and key is not None:
        error.key = key
    return Response(json.dumps(error.body(), separators=(",", ":")), status=error.status, mimetype=JSON_TYPE)


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
