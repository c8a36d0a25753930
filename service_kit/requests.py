"""The small request helpers every service needs, written once: the Bearer credential, the token hash and
the JSON-object body (NUL refused on every backend alike, because PostgreSQL text cannot hold it)."""

from __future__ import annotations

import hashlib
from typing import Any

from flask import request

from service_kit.errors import UnsupportedMediaTypeError, ValidationError


def bearer_credential(authorization: str) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header value (scheme case-insensitive,
    RFC 7235), or None for any other scheme or an empty credential."""
    if authorization[:7].lower() != "bearer ":
        return None
    return authorization[7:].strip() or None


def hash_token(token: str) -> str:
    """Hex SHA-256 of a random token: tokens carry 256 bits of randomness, so a fast hash is enough and a
    lookup stays one indexed query (passwords get argon2id instead)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def json_object() -> dict[str, Any]:
    """The request's body as a JSON object: 415 for another media type, 422 naming ``body`` when it is not
    an object, and 422 naming the first field whose text (or key) holds NUL."""
    if request.content_length != 0 and request.mimetype and not request.is_json:
        raise UnsupportedMediaTypeError(f"The body must be application/json, not {request.mimetype}.")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    refuse_nul(body)
    return body


def refuse_nul(value: Any, path: str = "") -> None:
    """Raise a 422 naming the first field whose text or key holds NUL (valid JSON as ``\\u0000``)."""
    if isinstance(value, str) and "\x00" in value:
        raise ValidationError({path or "body": "must not contain NUL characters"})
    if isinstance(value, dict):
        for key, item in value.items():
            refuse_nul(key, path or "body")
            refuse_nul(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            refuse_nul(item, f"{path}[{index}]")
