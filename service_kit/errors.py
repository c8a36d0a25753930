"""The platform's error types and the one JSON error shape every service answers with.

Every 4xx/5xx body is ``{"error": {"code", "message", "details"}}``: raised ``APIError`` subclasses, Flask's
own 404/405/413, and unhandled exceptions (a 500 that shows no internals, only the request id).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import sentry_sdk
from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger("service_kit.errors")


class APIError(Exception):
    """An error the client can act on; ``expected`` errors are not reported to Sentry."""

    status = 500
    code = "internal_error"
    expected = True

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def headers(self) -> dict[str, str]:
        return {}


class ValidationError(APIError):
    """422 with ``details`` mapping each offending field to what is wrong with it."""

    status, code = 422, "validation_error"

    def __init__(self, details: dict[str, str], message: str = "The request has invalid fields.") -> None:
        super().__init__(message, details)


class BadRequestError(APIError):
    status, code = 400, "bad_request"


class AuthenticationError(APIError):
    status, code = 401, "authentication_required"

    def __init__(self, message: str = "Valid credentials are required.") -> None:
        super().__init__(message)

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class AuthorizationError(APIError):
    status, code = 403, "forbidden"

    def __init__(self, message: str = "You are not allowed to do this.") -> None:
        super().__init__(message)


class NotFoundError(APIError):
    status, code = 404, "not_found"


class ConflictError(APIError):
    status, code = 409, "conflict"


class UnsupportedMediaTypeError(APIError):
    status, code = 415, "unsupported_media_type"


class PreconditionFailedError(APIError):
    status, code = 412, "precondition_failed"


class RateLimitError(APIError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after: float, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.retry_after = max(1, math.ceil(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ServiceUnavailableError(APIError):
    """503: a dependency this service needs is down for now; retry after a second. Reported."""

    status, code, expected = 503, "service_unavailable", False

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class ExternalAPIError(APIError):
    """A dependency failed: 502, or 504 when it timed out. Unexpected, so reported."""

    status, code, expected = 502, "bad_gateway", False

    def __init__(self, message: str, *, timeout: bool = False, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        if timeout:
            self.status, self.code = 504, "gateway_timeout"


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    return response


def _http_code(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


def register_error_handlers(app: Flask) -> None:
    """Answer every error in the shared JSON shape."""

    @app.errorhandler(APIError)
    def handle_api_error(exc: APIError) -> Response:
        if not exc.expected:
            sentry_sdk.capture_exception(exc)
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        response.headers.update(exc.headers())
        return response

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException) -> Response:
        status = exc.code or 500
        response = error_response(status, _http_code(exc), exc.description or exc.name)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        # A handler for Exception means Flask never signals got_request_exception, so report here.
        sentry_sdk.capture_exception(exc)
        log.exception("unhandled exception")
        request_id = getattr(g, "request_id", None)
        return error_response(
            500, "internal_error", "The server failed to handle this request.", {"request_id": request_id}
        )
