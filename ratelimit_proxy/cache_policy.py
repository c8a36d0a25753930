"""RFC 9111 decisions of the proxy's shared response cache, as pure functions: headers and numbers in,
a verdict out; no I/O and no wall clock (``now`` is an argument). Pinned by the JSON vectors in
tests/vectors/ratelimit_proxy_cache/, which the tests run through these functions.

The steps, in the order the cache (ratelimit_proxy/cache.py) asks them:

1. ``storable``: may a response be stored at all (RFC 9111 section 3, shared-cache rules)? GET only; a
   final status; no ``no-store`` on either side; no ``private``; a response to a request with a credential
   only when it says ``public``, ``s-maxage`` or ``must-revalidate`` (section 3.5; the proxy's API keys
   count as credentials, ``X-API-Key`` as much as ``Authorization``); ``Vary: *`` never; ``Set-Cookie``
   never (a cookie is one client's; nginx also refuses to cache such responses by default). Freshness
   must be explicit (``s-maxage``, ``max-age`` or ``Expires``), or the response must carry a validator to be
   stored as always-stale (``no-cache``). No heuristic freshness (section 4.2.2 allows it, but an API's
   JSON without a lifetime is rarely meant to be reused, and an origin that wants caching can say so).
2. ``freshness_lifetime`` and ``initial_age`` (sections 4.2.1 and 4.2.3) when it is stored.
3. ``serve_verdict`` on a later request: fresh, stale but allowed (the client's ``max-stale``), stale to
   serve while a background refresh runs (RFC 5861 ``stale-while-revalidate``), or revalidate first.
   ``must-revalidate``, ``proxy-revalidate``, ``s-maxage`` and ``no-cache`` forbid serving stale (section
   4.2.4): there ``stale-while-revalidate`` and ``stale-if-error`` do not apply.
4. ``conditional_headers`` for the revalidation; on 304, ``updated_headers`` (section 3.2 and 4.3.4).
5. ``stale_if_error``: may a stale entry answer when the origin fails (5xx or no answer)?
6. ``client_not_modified``: a client's own If-None-Match / If-Modified-Since against the stored
   validators, so a hit can be a 304 to the client (RFC 9110 13.1).

``variant_key`` is the secondary key of section 4.1 (Vary): the varied request headers, normalised and
hashed, so a ``Vary: Authorization`` never puts a credential into a Redis key; cache_lookup.lua computes
the same hash.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from enum import StrEnum

Headers = Sequence[tuple[str, str]]
_BLANKS = re.compile("[ \t]+")
NO_VARY = hashlib.sha1(b"", usedforsecurity=False).hexdigest()  # the variant of a response without Vary
# Final statuses a cache may store when the response gives a lifetime (RFC 9110 15.1: heuristically
# cacheable ones, 206 left out: ranges are not assembled here).
STORABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# Directives that forbid serving a stale response without revalidation (RFC 9111 4.2.4).
NO_STALE = ("must-revalidate", "proxy-revalidate", "s-maxage", "no-cache")
# Fields a 304 does not replace in the stored response (RFC 9111 3.2).
KEPT_ON_UPDATE = frozenset({"content-length", "content-encoding", "content-range", "transfer-encoding"})
# Fields a 304 to the client carries (RFC 9110 15.4.5).
NOT_MODIFIED_FIELDS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
)


class Verdict(StrEnum):
    FRESH = "fresh"
    STALE = "stale"  # stale, and the client's max-stale accepts it
    STALE_WHILE_REVALIDATE = "stale_while_revalidate"  # serve it, refresh in the background
    REVALIDATE = "revalidate"  # ask the origin first (conditionally when there is a validator)


def directives(value: str) -> dict[str, str]:
    """``Cache-Control`` as a dict of lower-case names to values ("" without one; quotes removed). A
    directive given twice keeps its first value."""
    result: dict[str, str] = {}
    for part in _split_commas(value):
        name, _, argument = part.partition("=")
        name = name.strip().lower()
        if name and name not in result:
            argument = argument.strip()
            if len(argument) >= 2 and argument[0] == argument[-1] == '"':
                argument = argument[1:-1]
            result[name] = argument
    return result


def _split_commas(value: str) -> Iterable[str]:
    """Commas outside quoted strings (``no-cache="a, b"`` is one directive)."""
    start, quoted = 0, False
    for i, char in enumerate(value):
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            yield value[start:i]
            start = i + 1
    yield value[start:]


def delta_seconds(value: str | None) -> int | None:
    """A delta-seconds argument (RFC 9111 1.2.2), or None when missing or malformed."""
    if value is None or not (value.isascii() and value.isdigit()):  # "²".isdigit(), but int("²") fails
        return None
    return int(value)


def header(headers: Headers, name: str) -> str | None:
    """The field's value, repeated lines joined with ", " (RFC 9110 5.3); None when absent."""
    values = [v for k, v in headers if k.lower() == name]
    return ", ".join(values) if values else None


def http_date(value: str | None) -> float | None:
    """Epoch seconds of an HTTP-date; None when missing or invalid (an invalid Expires means already
    expired, which the caller handles)."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def storable(
    method: str, status: int, request: Mapping[str, str], response: Headers, authenticated: bool
) -> tuple[bool, str]:
    """May this response be stored (step 1 of the module docstring)? ``request`` maps lower-case header
    names to values. Returns (True, "ok") or (False, reason); the reasons are a fixed set."""
    if method != "GET":
        return False, "method"
    if status not in STORABLE_STATUSES:
        return False, "status"
    if "no-store" in directives(request.get("cache-control", "")):
        return False, "request_no_store"
    cc = directives(header(response, "cache-control") or "")
    if "no-store" in cc:
        return False, "no_store"
    if "private" in cc:
        return False, "private"
    if authenticated and not ({"public", "s-maxage", "must-revalidate"} & cc.keys()):
        return False, "authenticated"
    vary = header(response, "vary")
    if vary is not None and "*" in (v.strip() for v in vary.split(",")):
        return False, "vary_star"
    if header(response, "set-cookie") is not None:
        return False, "set_cookie"
    lifetime = freshness_lifetime(response)
    if lifetime is None or (lifetime <= 0 and "no-cache" not in cc):
        return False, "no_lifetime"
    if (lifetime <= 0 or "no-cache" in cc) and not has_validator(response):
        return False, "no_validator"
    return True, "ok"


def has_validator(response: Headers) -> bool:
    return header(response, "etag") is not None or header(response, "last-modified") is not None


def freshness_lifetime(response: Headers) -> float | None:
    """Seconds the response is fresh for a shared cache (RFC 9111 4.2.1): s-maxage, else max-age, else
    Expires minus Date; ``no-cache`` makes it 0 (stored, revalidated every time). None: no explicit
    lifetime."""
    cc = directives(header(response, "cache-control") or "")
    for name in ("s-maxage", "max-age"):
        if name in cc:
            seconds = delta_seconds(cc[name])
            if seconds is None:
                return 0.0  # a malformed lifetime is treated as stale (RFC 9111 4.2.1)
            return 0.0 if "no-cache" in cc else float(seconds)
    expires = header(response, "expires")
    if expires is not None:
        expires_at, date = http_date(expires), http_date(header(response, "date"))
        if expires_at is None or date is None:
            return 0.0
        return 0.0 if "no-cache" in cc else max(0.0, expires_at - date)
    return 0.0 if "no-cache" in cc else None


def initial_age(response: Headers, request_time: float, response_time: float) -> float:
    """The response's age when received (RFC 9111 4.2.3): its Age header plus the request's round trip,
    or the apparent age from Date if larger."""
    age_value = delta_seconds((header(response, "age") or "").strip()) or 0
    date = http_date(header(response, "date"))
    apparent = max(0.0, response_time - date) if date is not None else 0.0
    corrected = age_value + (response_time - request_time)
    return max(apparent, corrected)


def current_age(initial: float, stored_at: float, now: float) -> float:
    return initial + max(0.0, now - stored_at)


def serve_verdict(
    response: Headers, lifetime: float, initial: float, stored_at: float, request: Mapping[str, str], now: float
) -> Verdict:
    """What a stored response can do for this request (step 3 of the module docstring)."""
    cc = directives(header(response, "cache-control") or "")
    asked = directives(request.get("cache-control", ""))
    if "no-cache" in asked or ("cache-control" not in request and "no-cache" in request.get("pragma", "").lower()):
        return Verdict.REVALIDATE
    age = current_age(initial, stored_at, now)
    max_age = delta_seconds(asked.get("max-age"))
    min_fresh = delta_seconds(asked.get("min-fresh")) or 0
    staleness = age - lifetime
    if age < lifetime and age + min_fresh <= lifetime and (max_age is None or age <= max_age):
        return Verdict.FRESH
    if any(name in cc for name in NO_STALE):
        return Verdict.REVALIDATE
    if "max-stale" in asked:  # without a value: any staleness (RFC 9111 5.2.1.2)
        limit = delta_seconds(asked["max-stale"])
        if (limit is None and asked["max-stale"] == "") or (limit is not None and staleness <= limit):
            return Verdict.STALE
    if max_age is not None and age > max_age:
        return Verdict.REVALIDATE  # the client asked for something younger: no stale answer
    swr = delta_seconds(cc.get("stale-while-revalidate"))
    if swr is not None and staleness < swr:
        return Verdict.STALE_WHILE_REVALIDATE
    return Verdict.REVALIDATE


def stale_if_error(
    response: Headers, lifetime: float, initial: float, stored_at: float, request: Mapping[str, str], now: float
) -> bool:
    """May the stale response answer because the origin failed (RFC 5861 4; either side's directive)?"""
    cc = directives(header(response, "cache-control") or "")
    if any(name in cc for name in NO_STALE):
        return False
    staleness = current_age(initial, stored_at, now) - lifetime
    allowed = [
        s
        for s in (
            delta_seconds(cc.get("stale-if-error")),
            delta_seconds(directives(request.get("cache-control", "")).get("stale-if-error")),
        )
        if s is not None
    ]
    return bool(allowed) and staleness < max(allowed)


def keep_seconds(response: Headers, lifetime: float) -> float:
    """How long a stored response can still be of use: its lifetime plus the longer stale window. An
    entry stored for revalidation only (a validator, no lifetime) is kept as long as configured by the
    caller."""
    cc = directives(header(response, "cache-control") or "")
    if any(name in cc for name in NO_STALE):
        return lifetime
    windows = [delta_seconds(cc.get(n)) or 0 for n in ("stale-while-revalidate", "stale-if-error")]
    return lifetime + max(windows)


def conditional_headers(response: Headers) -> list[tuple[str, str]]:
    """The request fields that revalidate a stored response (RFC 9111 4.3.1)."""
    fields = []
    etag = header(response, "etag")
    if etag is not None:
        fields.append(("If-None-Match", etag))
    modified = header(response, "last-modified")
    if modified is not None:
        fields.append(("If-Modified-Since", modified))
    return fields


def updated_headers(stored: Headers, not_modified: Headers) -> list[tuple[str, str]]:
    """The stored response's fields updated from a 304 (RFC 9111 3.2): each field the 304 carries replaces
    the stored one, except the framing and encoding fields."""
    replaced = {k.lower() for k, _ in not_modified if k.lower() not in KEPT_ON_UPDATE}
    kept = [(k, v) for k, v in stored if k.lower() not in replaced]
    return kept + [(k, v) for k, v in not_modified if k.lower() in replaced]


def client_not_modified(request: Mapping[str, str], stored: Headers) -> bool:
    """Whether the client's own conditional request is satisfied by the stored response, so it gets a 304
    (RFC 9110 13.1.2 and 13.1.3: If-None-Match with the weak comparison; If-Modified-Since only without it)."""
    if "if-none-match" in request:
        etag = header(stored, "etag")
        if etag is None:
            return False
        wanted = {t.strip().removeprefix("W/") for t in request["if-none-match"].split(",")}
        return "*" in wanted or etag.strip().removeprefix("W/") in wanted
    since, modified = http_date(request.get("if-modified-since")), http_date(header(stored, "last-modified"))
    return since is not None and modified is not None and modified <= since


def not_modified_headers(stored: Headers) -> list[tuple[str, str]]:
    return [(k, v) for k, v in stored if k.lower() in NOT_MODIFIED_FIELDS]


def vary_names(response: Headers) -> list[str]:
    """The request fields the response varies on, lower-case, sorted, without duplicates."""
    vary = header(response, "vary") or ""
    return sorted({name.strip().lower() for name in vary.split(",") if name.strip()})


def variant_key(names: Sequence[str], request: Mapping[str, str]) -> str:
    """The secondary cache key (RFC 9111 4.1): for each varied field (sorted, lower-case) its request value
    with runs of spaces and tabs collapsed to one space and ends trimmed, "" when absent; SHA-1 of the lines, so no
    value (a credential under ``Vary: Authorization``) is ever written out. cache_lookup.lua mirrors it."""
    if not names:
        return NO_VARY
    lines = "".join(f"{name}:{_normalised(request.get(name, ''))}\n" for name in names)
    return hashlib.sha1(lines.encode(), usedforsecurity=False).hexdigest()  # UTF-8, as redis-py sends it


def _normalised(value: str) -> str:
    return _BLANKS.sub(" ", value).strip(" \t")
