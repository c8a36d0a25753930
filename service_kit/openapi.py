"""One declaration per body: pydantic models validate each request and generate the service's OpenAPI 3.1
document at ``/openapi.json``.

Built on spectree, chosen over flask-openapi3 and APIFlask because it decorates plain Flask views: no app
or blueprint subclass, so every service keeps the kit's shape (``create_app``, module-level blueprints,
resources through ``init_app``). flask-openapi3 needs its ``OpenAPI`` app and ``APIBlueprint``; APIFlask its
own ``APIFlask`` class and marshmallow-first schemas. spectree validates query, JSON body and headers with
pydantic v2 and emits OpenAPI 3.1.

The kit adds what every operation shares, so no view repeats it:
- the body is checked to be a JSON object without NUL first (``service_kit.requests.json_object``);
- a failed validation is the kit's 422 error body, with ``details`` naming each field;
- the error responses an operation can give (401/403 when it needs a credential, 404 with path parameters,
  413/415/422 with a body, 422 with a query) are documented with the kit's error schema;
- integer path parameters are bounded to a signed 64-bit id, as Flask's ``int`` converter is here.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from flask import Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError
from spectree import Response, SecurityScheme, SpecTree
from spectree.models import SecuritySchemeData
from spectree.plugins.base import Context
from werkzeug.exceptions import NotFound
from werkzeug.routing import IntegerConverter

from service_kit import __version__
from service_kit.errors import ValidationError
from service_kit.requests import json_object, refuse_nul

F = TypeVar("F", bound=Callable[..., Any])
MAX_ID = 2**31 - 1  # ids are INTEGER columns: 32 bits on PostgreSQL, so a larger id can only be unknown
_EXTRA = "__openapi_extra__"


def json_integer(value: object) -> object:
    """JSON has one kind of number: ``3.0`` is the integer 3, as JSON Schema says (schemathesis sends such
    numbers), while ``"3"``, ``true`` and ``3.5`` stay refused by a strict integer after this."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[int, BeforeValidator(json_integer)]
"""An integer as JSON Schema counts them. Put bounds before the validator in an ``Annotated`` alias
(``Annotated[int, Field(ge=1), BeforeValidator(json_integer)]``): after it, pydantic documents them as
``ge``/``le``, which are no JSON Schema words."""


class Strict(BaseModel):
    """Base of request bodies: unknown fields are a 422 naming them, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})")


def rfc3339(value: object) -> datetime:
    """An RFC 3339 date-time with its zone, as an aware UTC datetime (Go's nanoseconds cut to microseconds).
    Text only: pydantic's own parsing also takes Unix timestamps (``"0"``), which the document's
    ``format: date-time`` refuses. 0001-01-01T00:00:00+01:00 is valid text but no instant a datetime holds."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise PydanticCustomError("date_time", "expected an RFC 3339 date-time with a zone, like 2026-11-24T10:00:00Z")
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except (ValueError, OverflowError):
        raise PydanticCustomError("date_time", "not an instant between the years 1 and 9999 UTC") from None


DateTime = Annotated[datetime, BeforeValidator(rfc3339)]


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorBody(BaseModel):
    """Every 4xx/5xx body of every service (``service_kit.errors``)."""

    error: ErrorDetail


class BoundedIntegerConverter(IntegerConverter):
    """``<int:…>`` up to the largest INTEGER id: a larger one is a 404 at once, not an overflow deep in the
    driver. Not through werkzeug's ``max``: a value it refuses makes werkzeug try the path's rules for
    other methods, and answer 405 naming them (schemathesis, on the desk's PUT and DELETE of one path)."""

    def to_python(self, value: str) -> Any:
        number = super().to_python(value)
        if number > MAX_ID:
            raise NotFound()
        return number


def field_name(location: tuple[int | str, ...]) -> str:
    """``("tags", 3, "name")`` -> ``tags[3].name``; the root of the body is ``body``."""
    name = ""
    for part in location:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def validation_details(exc: pydantic.ValidationError) -> dict[str, str]:
    details: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        details.setdefault(field_name(tuple(error["loc"])), error["msg"])
    return details


def kit_validation_error(error: pydantic.ValidationError) -> Exception:
    """A failed validation is the kit's 422 with each field named."""
    return ValidationError(validation_details(error))


def _nothing(*_: Any) -> None:
    return None


def _model_name(model: type[Any]) -> str:
    return model.__name__


def _nested_name(_parent: str, child: str) -> str:
    return child


Scheme = Literal["bearer", "header"]


class ApiDocument:
    """A service's API: ``validate`` declares each operation, ``init_app`` serves ``/openapi.json``."""

    def __init__(
        self,
        title: str,
        description: str = "",
        *,
        security: Mapping[str, Mapping[str, str]] | None = None,
        invalid_request: Callable[[pydantic.ValidationError], Exception] = kit_validation_error,
        invalid_status: int = 422,
        invalid_model: type[BaseModel] = ErrorBody,
        read_body: Callable[[], Any] = json_object,
    ) -> None:
        """The defaults are the kit's contract. A protocol with its own error shape (OFREP) passes
        ``invalid_request`` (the exception a failed validation raises), its status and body model, and
        ``read_body`` (run before the body model: checks the body and returns it)."""
        self.invalid_request = invalid_request
        self.read_body = read_body
        schemes = [
            SecurityScheme(
                name=name,
                data=SecuritySchemeData(
                    **{("field_in" if key == "in" else key): value for key, value in data.items()}  # type: ignore[arg-type]
                ),
            )
            for name, data in (security or {}).items()
        ]
        self.spec = SpecTree(
            "flask",
            title=title,
            description=description or None,
            version=__version__,
            mode="strict",  # only decorated views are documented: each says what it takes and returns
            annotations=False,
            page_templates={},
            validation_error_status=invalid_status,
            validation_error_model=invalid_model,
            naming_strategy=_model_name,
            nested_naming_strategy=_nested_name,
            security_schemes=schemes or None,
            before=self._raise_invalid_request,
            after=_nothing,
        )

    def _raise_invalid_request(self, _request: Any, _response: Any, error: Exception | None, *_: Any) -> None:
        """spectree's ``before`` hook: a failed validation raises the document's error."""
        if isinstance(error, pydantic.ValidationError):
            raise self.invalid_request(error) from None

    def validate(
        self,
        *,
        json: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        headers: type[BaseModel] | None = None,
        responses: Mapping[int, type[BaseModel] | None] | None = None,
        tags: tuple[str, ...] = (),
        security: str | None = None,
        extra: Mapping[int, str] | None = None,
        openapi: Mapping[str, Any] | None = None,
        validate_responses: bool = True,
    ) -> Callable[[F], F]:
        """Declare an operation. ``responses`` maps each success status to its body model (None for no
        body); ``extra`` maps further error statuses to a description; ``security`` names the scheme the
        operation needs; ``openapi`` is merged into the operation (a non-JSON response's content type).
        ``validate_responses=False`` validates only the request and returns the view's response as it is:
        for a stream (spectree would read it whole) or a hot path whose responses are tested instead."""
        declared: dict[str, Any] = {f"HTTP_{status}": model for status, model in (responses or {200: None}).items()}
        errors = dict(extra or {})
        if security:
            errors.setdefault(401, "no valid credential")
            errors.setdefault(403, "the credential lacks the role")
        if json is not None:
            errors.setdefault(413, "the body is too large")
            errors.setdefault(415, "the body is not application/json")
        for status in errors:
            declared.setdefault(f"HTTP_{status}", ErrorBody)
        spectree_validate = self.spec.validate(
            json=json,
            query=query,
            headers=headers,
            resp=Response(**declared),
            tags=list(tags),
            security={security: []} if security else {},
        )

        def decorator(view: F) -> F:
            inner = spectree_validate(view)

            @functools.wraps(inner)  # spectree finds its declaration through ``__wrapped__``
            def validated(*args: Any, **kwargs: Any) -> Any:
                for name, value in request.args.items(multi=True):
                    refuse_nul(value, name)
                # By default a JSON object without NUL, before the model sees it.
                body = self.read_body() if json is not None else None
                if validate_responses:
                    return inner(*args, **kwargs)
                try:
                    if query is None and headers is None:  # the body alone: no headers and cookies parsed
                        request.context = Context(None, json and json.model_validate(body), None, None, None)  # type: ignore[attr-defined]
                    else:
                        self.spec.backend.request_validation(request, query, json, None, headers, None)  # type: ignore[attr-defined]
                except pydantic.ValidationError as error:
                    raise self.invalid_request(error) from None
                return view(*args, **kwargs)

            setattr(validated, _EXTRA, {"descriptions": errors, "openapi": dict(openapi or {})})
            return validated  # type: ignore[return-value]

        return decorator

    def init_app(self, app: Flask) -> None:
        app.extensions.setdefault("openapi_documents", []).append(self)
        if "openapi_document" not in app.view_functions:
            app.add_url_rule("/openapi.json", "openapi_document", serve_document)

    def document(self, app: Flask) -> dict[str, Any]:
        """The OpenAPI document of ``app``'s routes declared with this ``ApiDocument``."""
        # Not ``spec.spec``: cached across apps. And on a copy of the models: spectree lifts their nested
        # ``$defs`` into the document by deleting them, so a second app's document would lack them.
        models = self.spec.models
        self.spec.models = copy.deepcopy(models)
        try:
            with app.app_context():
                spec: dict[str, Any] = self.spec._generate_spec()
        finally:
            self.spec.models = models
        _refine(spec, app)
        return spec


def serve_document() -> ResponseReturnValue:
    """``GET /openapi.json``: every document the app registered, merged (the kit's routes and the service's)."""
    cached: dict[str, Any] | None = current_app.extensions.get("openapi_cache")
    if cached is None:
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        documents = [doc.document(app) for doc in app.extensions["openapi_documents"]]
        cached = documents[0]
        for other in documents[1:]:
            cached["paths"].update(other["paths"])
            cached.setdefault("components", {}).setdefault("schemas", {}).update(
                other.get("components", {}).get("schemas", {})
            )
            for name, scheme in other.get("components", {}).get("securitySchemes", {}).items():
                cached["components"].setdefault("securitySchemes", {})[name] = scheme
            known = {tag["name"] for tag in cached.get("tags", [])}
            cached.setdefault("tags", []).extend(t for t in other.get("tags", []) if t["name"] not in known)
        current_app.extensions["openapi_cache"] = cached
    return jsonify(cached)


_STATUS_TEXT = {
    401: "no valid credential",
    403: "the credential lacks the role",
    404: "not found",
    413: "the body is too large",
    415: "the body is not application/json",
    422: "a field is invalid; details names each one",
}


def _refine(spec: dict[str, Any], app: Flask) -> None:
    """What spectree cannot say alone: bounded integer path ids, the 404 of a path with parameters, the
    descriptions of the kit's error statuses, and per-operation overrides."""
    views = {(rule.rule, rule.endpoint): rule for rule in app.url_map.iter_rules()}  # a path has a rule per view
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorBody, ErrorDetail):
        schemas.setdefault(model.__name__, _schema_of(model))
    _state_no_nul(schemas)
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            view = _view_of(app, views, path, method)
            extra = getattr(view, _EXTRA, {"descriptions": {}, "openapi": {}})
            responses = operation.setdefault("responses", {})
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                if parameter.get("in") == "path" and schema.get("type") == "integer":
                    schema.pop("format", None)
                    schema.update({"minimum": 0, "maximum": MAX_ID})
            _state_no_nul(operation.get("parameters", []))
            if any(p.get("in") == "path" for p in operation.get("parameters", [])):
                responses.setdefault("404", _error_response("not found"))
            for status, response in responses.items():
                description = extra["descriptions"].get(int(status)) or _STATUS_TEXT.get(int(status))
                if description and int(status) >= 400:
                    response["description"] = description
            _merge(operation, extra["openapi"])


NO_NUL = "^[^\\u0000]*$"  # json_object refuses NUL in any text or key: PostgreSQL text cannot hold it


def _state_no_nul(node: Any) -> None:
    """Say in the document what ``json_object`` enforces: no string, and no object key, holds NUL."""
    if isinstance(node, list):
        for item in node:
            _state_no_nul(item)
        return
    if not isinstance(node, dict):
        return
    types = node.get("type")
    is_string = types == "string" or (isinstance(types, list) and "string" in types)
    if is_string and not {"enum", "const", "format"} & node.keys():
        if "pattern" not in node:
            node["pattern"] = NO_NUL
        elif _may_match_nul(node["pattern"]) and {"pattern": NO_NUL} not in node.get("allOf", []):
            node.setdefault("allOf", []).append({"pattern": NO_NUL})  # JSON Schema ANDs allOf with the pattern
    if node.get("type") == "object" and node.get("additionalProperties") not in (None, False):
        node.setdefault("propertyNames", {"pattern": NO_NUL})
    for value in node.values():
        _state_no_nul(value)


_NUL_FREE_CLASS = re.compile(r"\[\^[^\]]*\\u0000[^\]]*\]")
_PATTERN_TOKEN = re.compile(r"\\.|\[[^\]]*\]|\.")


def _may_match_nul(pattern: str) -> bool:
    """Whether text holding NUL could match `pattern`: through NUL itself, ``.``, ``\\D``, ``\\S``, ``\\W``
    or a negated class not naming ``\\u0000``. Beside a pattern of literals and plain classes, NO_NUL
    says nothing new, and each such allOf costs schemathesis a filter per value (8x the desk's run time)."""
    rest = _NUL_FREE_CLASS.sub("", pattern)
    if any(nul in rest for nul in ("\x00", "\\x00", "\\u0000", "\\0")):
        return True
    for match in _PATTERN_TOKEN.finditer(rest):
        token = match.group()
        if token in (".", "\\D", "\\S", "\\W") or token.startswith("[^"):
            return True
        if token.startswith("[") and any(escape in token for escape in ("\\D", "\\S", "\\W")):
            return True
    return False


def _view_of(app: Flask, rules: Mapping[Any, Any], path: str, method: str) -> Any:
    for rule in rules.values():
        if _openapi_path(rule.rule) == path and method.upper() in (rule.methods or ()):
            return app.view_functions.get(rule.endpoint)
    return None


def _openapi_path(rule: str) -> str:
    out, depth, name = "", 0, ""
    for char in rule:
        if char == "<":
            depth, name = 1, ""
        elif char == ">" and depth:
            depth = 0
            out += "{" + name.split(":")[-1] + "}"
        elif depth:
            name += char
        else:
            out += char
    return out


def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
