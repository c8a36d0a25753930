"""Flask helpers: a per-request accessor, ``@feature_required``, and a plain WSGI middleware.

The request's evaluation context comes from the kit's authenticated principal (``g.principal``: id and
tier) unless the app passes its own ``context_getter``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from flask import Flask, abort, current_app, g

from flags_service.sdk.client import Details, FlagsClient

P = ParamSpec("P")
R = TypeVar("R")
ContextGetter = Callable[[], Mapping[str, Any]]
EXTENSION = "vibelux_flags"


class RequestFlags:
    """Flags for one request: the context is built once, evaluation is local. The methods are
    ``FlagsClient``'s, in its order ``(key, default)``, with the request's context filled in."""

    def __init__(self, client: FlagsClient, context: Mapping[str, Any]) -> None:
        self.client = client
        self.context = dict(context)

    def evaluate(self, key: str, default: Any = None) -> Details:
        return self.client.evaluate(key, default, context=self.context)

    def is_enabled(self, key: str, default: bool = False) -> bool:
        return self.client.is_enabled(key, default, context=self.context)

    def value(self, key: str, default: Any) -> Any:
        return self.client.value(key, default, context=self.context)


def principal_context() -> dict[str, Any]:
    """targetingKey and tier of the kit's authenticated caller (anonymous requests have neither)."""
    principal = g.get("principal")
    if principal is None:
        return {}
    context: dict[str, Any] = {"targetingKey": principal.id, "role": principal.role}
    if principal.tier:
        context["tier"] = principal.tier
    return context


class FlagsFlask:
    """``FlagsFlask(client).init_app(app)``; then ``flags()`` inside a request."""

    def __init__(self, client: FlagsClient, context_getter: ContextGetter = principal_context) -> None:
        self.client = client
        self.context_getter = context_getter

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION] = self


def flags() -> RequestFlags:
    """The current request's flags (cached on ``g``)."""
    if "vibelux_flags" not in g:
        extension: FlagsFlask = current_app.extensions[EXTENSION]
        g.vibelux_flags = RequestFlags(extension.client, extension.context_getter())
    request_flags: RequestFlags = g.vibelux_flags
    return request_flags


def feature_required(key: str, *, status: int = 404) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Answer ``status`` (404: the feature does not exist for this caller) unless ``key`` is on."""

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if not flags().is_enabled(key):
                abort(status)
            return view(*args, **kwargs)

        return wrapper

    return decorator


def header_context(environ: Mapping[str, Any]) -> dict[str, Any]:
    """Default WSGI context: ``X-User-Id`` / ``X-User-Tier`` as set by the platform's trusted proxy."""
    context: dict[str, Any] = {}
    if environ.get("HTTP_X_USER_ID"):
        context["targetingKey"] = environ["HTTP_X_USER_ID"]
    if environ.get("HTTP_X_USER_TIER"):
        context["tier"] = environ["HTTP_X_USER_TIER"]
    return context


class FlagsMiddleware:
    """WSGI middleware for any framework: ``environ["vibelux.flags"]`` is the request's ``RequestFlags``."""

    def __init__(
        self,
        app: Callable[..., Any],
        client: FlagsClient,
        context_from_environ: Callable[[Mapping[str, Any]], Mapping[str, Any]] = header_context,
    ) -> None:
        self.app = app
        self.client = client
        self.context_from_environ = context_from_environ

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ["vibelux.flags"] = RequestFlags(self.client, self.context_from_environ(environ))
        return self.app(environ, start_response)
