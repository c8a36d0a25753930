"""One scrubber for everything that leaves a process: Sentry events, breadcrumbs and log lines.

Data (which keys and patterns are secret, and where each comes from) is kept apart from the logic (one
class walking dicts, lists and strings). Values are replaced by a marker, never deleted, so a reader can
see that something was there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

FILTERED = "[Filtered]"

# Keys whose values are secret wherever they appear: request headers (Authorization, Cookie, Set-Cookie,
# X-API-Key), form and JSON fields (password, token, secret, card data), and Sentry's own defaults.
SECRET_KEY_PARTS: tuple[str, ...] = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "session",
    "csrf",
    "xsrf",
    "credential",
    "private_key",
    "dsn",
    "card_number",
    "cardnumber",
    "cvv",
    "cvc",
    "ssn",
)
# Exact keys that would be too broad as substrings.
SECRET_KEYS: frozenset[str] = frozenset({"auth", "x_api_key", "signature", "sig"})

# Secrets inside free text: "Bearer xyz", "token=xyz" in query strings or messages, our own token format,
# JWTs, and card numbers (13-19 digits, optionally grouped, checked with Luhn to spare order ids).
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_ASSIGNMENT = re.compile(
    r"(?i)\b([a-z0-9_-]*(?:password|passwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|signature|session)[a-z0-9_-]*)"
    r"(\s*[=:]\s*|\"\s*:\s*\")([^\s&\"',;]+)"
)
_API_TOKEN = re.compile(r"\b(vbx|vlx|sk|pk|rk)_[A-Za-z0-9_-]{8,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return FILTERED if 13 <= len(digits) <= 19 and _luhn_valid(digits) else match.group(0)


def normalise_key(key: str) -> str:
    return key.strip().lower().replace("-", "_").replace(" ", "_")


class Scrubber:
    """Walks nested data and replaces secrets with a marker."""

    def __init__(self, extra_key_parts: Iterable[str] = (), max_depth: int = 12) -> None:
        self.key_parts = SECRET_KEY_PARTS + tuple(normalise_key(part) for part in extra_key_parts)
        self.max_depth = max_depth

    def is_secret_key(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        normalised = normalise_key(key)
        return normalised in SECRET_KEYS or any(part in normalised for part in self.key_parts)

    def scrub_text(self, text: str) -> str:
        text = _BEARER.sub(lambda m: f"{m.group(1)} {FILTERED}", text)
        text = _JWT.sub(FILTERED, text)
        text = _API_TOKEN.sub(FILTERED, text)
        text = _ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{FILTERED}", text)
        return _CARD.sub(_mask_card, text)

    def scrub(self, value: Any, depth: int = 0) -> Any:
        if depth > self.max_depth:
            return FILTERED
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, dict):
            return {
                key: (FILTERED if self.is_secret_key(key) and item not in (None, "") else self.scrub(item, depth + 1))
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            # Sentry sends headers as [name, value] pairs; treat a secret name like a secret key.
            if len(value) == 2 and isinstance(value[0], str) and self.is_secret_key(value[0]):
                return [value[0], FILTERED]
            return [self.scrub(item, depth + 1) for item in value]
        return value


DEFAULT_SCRUBBER = Scrubber()
