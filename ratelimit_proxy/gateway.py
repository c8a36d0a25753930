"""The proxy's data path (port 8080): a plain WSGI callable that every path and method goes through.

Order of checks, cheapest refusal first: malformed target (400), header size (431), both framings at
once (400: Content-Length and Transfer-Encoding), body size (413),
ban or deny-list (403), known attack path (403, bans), API key (401), limiter (429, or 503 when Redis
is down in fail-closed mode), the response cache on the routes it serves (ratelimit_proxy/cache.py),
then the upstream (502/504 when it fails). Nothing refused reaches the
upstream. The limiter's verdict is one Lua call; keys and bans come from short-lived local caches. Once
the response head is ready, the call is counted into the usage rollups (ratelimit_proxy/usage.py): a dict
update in memory, written to the platform database by a background thread.

Why not a Flask view: Flask's request objects, routing and hooks cost about 120 µs per request, more
than the limiter call and the forwarding together (bench/RESULTS.md). The Flask app that ``create_app``
returns hosts this callable as its ``wsgi_app``; the kit's request ids, RED metrics, request log and
Sentry reporting are applied here by hand.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any

import sentry_sdk

from ratelimit_proxy.abuse import request_fingerprint
from ratelimit_proxy.cache import FROM_CACHE, request_fields
from ratelimit_proxy.clientip import client_ip
from ratelimit_proxy.forward import (
    BadHeader,
    BodyIncomplete,
    BodyTooLarge,
    UpstreamError,
    exact_chunks,
    limited_chunks,
    request_headers,
    target_of,
)
from ratelimit_proxy.limiter import Decision
from ratelimit_proxy.limiter_storage import StorageUnavailable
from ratelimit_proxy.metrics import status_class
from ratelimit_proxy.policy import RoutePlan
from ratelimit_proxy.runtime import Runtime
from ratelimit_proxy.upstreams import Pool, Pools
from ratelimit_proxy.usage import ANONYMOUS
from service_kit.app import ServiceKit, request_id
from service_kit.requests import bearer_credential, hash_token

log = logging.getLogger("ratelimit_proxy")
StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]
Caller = tuple[str, str, str]  # key id, tier, owner
ROUTE = "/<path:path>"  # the one route template of the kit's RED metrics: raw paths are unbounded
PROBLEM_TYPES = "https://iana.org/assignments/http-problem-types#"
PROBLEM_KINDS = {"quota-exceeded", "abnormal-usage-detected", "temporary-reduced-capacity"}
PROBLEM_TITLES = {
    "quota-exceeded": "Request cannot be satisfied as assigned quota has been exceeded",
    "abnormal-usage-detected": "Request not satisfied due to detection of abnormal request pattern",
    "temporary-reduced-capacity": "Request cannot be satisfied due to temporary reduced capacity",
}
NEAR_LIMIT_PERCENT = 80  # integers: 5 * (1 - 0.8) is 0.999... in floating point


class Reply:
    """One response of the data path, before it is handed to the server. ``caller`` (key id, tier, owner)
    once the key is known, and ``refused`` for a limiter's 429, are what the usage rollups count it as."""

    __slots__ = ("body", "caller", "headers", "reason", "refused", "status")

    def __init__(self, status: int, headers: Headers, body: bytes | Iterator[bytes], reason: str = "") -> None:
        self.status = status
        self.reason = reason or _phrase(status)
        self.headers = headers
        self.body = body
        self.caller: Caller | None = None
        self.refused = False


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def problem(
    status: int, kind: str, detail: str, extra: dict[str, Any] | None = None, headers: Headers | None = None
) -> Reply:
    """An RFC 9457 problem document that also carries the platform's ``error`` object."""
    extra = extra or {}
    body = {
        "type": PROBLEM_TYPES + kind if kind in PROBLEM_KINDS else "about:blank",
        "title": PROBLEM_TITLES.get(kind, kind.replace("-", " ")),
        "status": status,
        "detail": detail,
        **extra,
        "error": {"code": kind.replace("-", "_"), "message": detail, "details": extra},
    }
    content = json.dumps(body).encode()
    fields = [("Content-Type", "application/problem+json"), ("Content-Length", str(len(content)))]
    return Reply(status, fields + (headers or []), content)


def limit_headers(plan: RoutePlan, decision: Decision) -> Headers:
    """RateLimit-Policy and RateLimit (draft -10 structured fields) plus X-RateLimit-* of the tightest."""
    state = ", ".join(f'"{w.limit.name}";r={w.remaining};t={w.reset_seconds}' for w in decision.windows)
    headers = [("RateLimit-Policy", plan.policy_header), ("RateLimit", state)]
    tightest = decision.tightest
    if tightest is not None:
        headers += [
            ("X-RateLimit-Limit", str(tightest.limit.quota)),
            ("X-RateLimit-Remaining", str(tightest.remaining)),
            ("X-RateLimit-Reset", str(tightest.reset_seconds)),
        ]
    return headers


def origin_form(environ: dict[str, Any]) -> bool:
    """False for ``*`` and absolute-form targets (where the server still shows them: RAW_URI)."""
    raw = environ.get("RAW_URI", environ.get("REQUEST_URI", "/"))
    return raw.startswith("/") and environ.get("PATH_INFO", "/").startswith("/")


def content_length(environ: dict[str, Any]) -> int | None:
    """None without one; ValueError unless it is ASCII digits (str.isdigit() also takes "\u00b2" and "\u0663")."""
    value = environ.get("CONTENT_LENGTH", "")
    if not value:
        return None
    if not (value.isascii() and value.isdigit()):
        raise ValueError(value)
    return int(value)


def credential(environ: dict[str, Any]) -> str | None:
    return bearer_credential(environ.get("HTTP_AUTHORIZATION", "")) or environ.get("HTTP_X_API_KEY") or None


class Gateway:
    """Checks, limits and forwards one request; see the module docstring for the order."""

    def __init__(self, runtime: Runtime, pools: Pools, kit: ServiceKit) -> None:
        self.runtime = runtime
        self.pools = pools  # the upstream colours (ratelimit_proxy/upstreams.py); one, "default", without pools
        self.kit = kit

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        rid = request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        try:
            reply = self.handle(environ, rid)
        except Exception as exc:  # the kit's contract: a JSON 500 with the request id, reported to Sentry
            with sentry_sdk.new_scope() as scope:
                scope.set_tag("request_id", rid)
                sentry_sdk.capture_exception(exc)
            log.exception("unhandled exception")
            reply = problem(500, "internal-error", "The server failed to handle this request.", {"request_id": rid})
        reply.headers.append(("X-Request-ID", rid))
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        seconds = time.perf_counter() - started
        self.kit.record_request(method, ROUTE, path, reply.status, seconds, rid)
        usage = self.runtime.usage
        if usage is not None:
            key_id, tier, owner = reply.caller or (ANONYMOUS, self.runtime.settings.limits.anonymous_tier, "")
            usage.record(key_id, tier, owner, path, reply.status, seconds * 1000, reply.refused, started)
        start_response(f"{reply.status} {reply.reason}", reply.headers)
        return [reply.body] if isinstance(reply.body, bytes) else reply.body

    def refuse(self, tier: str, decision: str, reply: Reply, reason: str | None = None) -> Reply:
        metrics = self.runtime.metrics
        if reason:
            metrics.blocked.labels(reason).inc()
        metrics.requests.labels(tier, decision, status_class(reply.status)).inc()
        return reply

    def unavailable(self, tier: str = "none") -> Reply:
        retry = str(self.runtime.retry_after_outage)
        detail = "Rate limiting is unavailable."
        reply = problem(503, "temporary-reduced-capacity", detail, {}, [("Retry-After", retry)])
        return self.refuse(tier, "error", reply)

    def handle(self, environ: dict[str, Any], rid: str) -> Reply:
        runtime, clients = self.runtime, self.runtime.settings.clients
        if not origin_form(environ):
            reply = problem(400, "bad-request-target", "Only origin-form targets.")
            return self.refuse("none", "blocked", reply, "bad_request")
        headers, size = request_headers(environ)
        if size > clients.max_header_bytes:
            reply = problem(431, "headers-too-large", "Request headers too large.")
            return self.refuse("none", "blocked", reply, "too_large")
        try:
            length = content_length(environ)
        except ValueError:  # RFC 9112 6.3: an invalid length cannot be recovered from, only refused
            reply = problem(400, "bad-content-length", "Content-Length must be a decimal number of bytes.")
            return self.refuse("none", "blocked", reply, "bad_request")
        if length is not None and "HTTP_TRANSFER_ENCODING" in environ:
            # Both framings at once (RFC 9112 6.3): never guess which one the upstream would believe.
            reply = problem(400, "ambiguous-framing", "Content-Length and Transfer-Encoding together.")
            return self.refuse("none", "blocked", reply, "bad_request")
        if length is not None and length > clients.max_body_bytes:
            reply = problem(413, "body-too-large", "Request body too large.")
            return self.refuse("none", "blocked", reply, "too_large")

        peer = environ.get("REMOTE_ADDR", "")
        ip = client_ip(peer, environ.get("HTTP_X_FORWARDED_FOR"), runtime.trusted_proxies, clients.trusted_hops)
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")

        def fingerprint() -> str:
            names = (k[5:] for k in environ if k.startswith("HTTP_"))
            return request_fingerprint(ip, environ.get("HTTP_USER_AGENT", ""), names)

        runtime.tick()
        reason = runtime.bans.check(ip)
        if reason:
            reply = problem(403, "abnormal-usage-detected", "This client is blocked.")
            return self.refuse("none", "blocked", reply, reason)
        target = target_of(environ)
        if runtime.detector.attack_path(ip, target, fingerprint):
            reply = problem(403, "abnormal-usage-detected", "This client is blocked.")
            return self.refuse("none", "blocked", reply, "attack_path")

        api_key = credential(environ)
        anonymous_tier: str = runtime.settings.limits.anonymous_tier
        tier, bucket = anonymous_tier, f"ip:{ip}"
        key_id, owner = ANONYMOUS, ""
        if api_key:
            try:
                record = runtime.lookup_key(api_key)
            except StorageUnavailable:
                # The key cannot be checked: fail-closed refuses; fail-open serves it as anonymous traffic.
                if runtime.failure_mode == "closed":
                    return self.unavailable()
            else:
                runtime.detector.key_seen(ip, hash_token(api_key), fingerprint)
                if record is None or record.status != "active":
                    runtime.detector.response(ip, 401, path, fingerprint)
                    reply = problem(401, "unauthorized", "The API key is unknown or revoked.")
                    reply.headers.append(("WWW-Authenticate", 'Bearer realm="api"'))
                    return self.refuse("none", "unauthorized", reply, "unknown_key")
                tier, bucket = record.tier, f"key:{record.key_id[:32]}"
                key_id, owner = record.key_id, record.owner
        if tier not in runtime.policy.tiers:
            log.error("key of tier %r not in the tier file; using %r", tier, anonymous_tier)
            tier = anonymous_tier
        caller = (key_id, tier, owner)

        plan = runtime.policy.plan(tier, method, path)
        decision = runtime.decide(bucket, plan.limits, plan.cost)
        limit_fields: Headers = []
        if decision is None:
            if runtime.failure_mode == "closed":
                reply = self.unavailable(tier)
                reply.caller = caller
                return reply
            verdict = "error"
        elif not decision.allowed:
            if decision.cached:  # the refusal cost no Redis call; the abuse rule counts it in process
                runtime.detector.local_breach(ip, fingerprint)
            else:
                runtime.detector.response(ip, 429, path, fingerprint)
            fields = [*limit_headers(plan, decision), ("Retry-After", str(decision.retry_after_seconds))]
            violated = decision.violated
            detail = f"Quota exceeded: {', '.join(violated)}."
            reply = problem(429, "quota-exceeded", detail, {"violated-policies": violated}, fields)
            reply.caller, reply.refused = caller, True
            return self.refuse(tier, "limited", reply)
        else:
            verdict = "allowed"
            limit_fields = limit_headers(plan, decision)
            for window in decision.windows:
                if (window.limit.quota - window.remaining) * 100 >= window.limit.quota * NEAR_LIMIT_PERCENT:
                    runtime.metrics.near_limit.labels(tier, window.limit.name).inc()
        cache = runtime.cache
        route = cache.route(path) if cache is not None else None
        pool = self.pools.pick(bucket)  # once: the cache lookup, its fill and the forward use this colour
        if cache is None or route is None:
            reply = self.forward(environ, headers, ip, peer, length, target, rid, limit_fields, pool)
        else:  # the response cache (ratelimit_proxy/cache.py): after the limiter, so a hit counts too
            authenticated = bool(api_key) or "HTTP_AUTHORIZATION" in environ

            def fetch(method: str, fields: Headers) -> Reply:
                return self.forward(environ, fields, ip, peer, length, target, rid, [], pool, method)

            colour = "" if self.pools.single else pool.name
            served = cache.respond(
                method, target, request_fields(environ), authenticated, route, headers, fetch, colour
            )
            if served.result in FROM_CACHE:
                pool.observe_cached(served.status)
            reply = Reply(served.status, served.headers + limit_fields, served.body, served.reason)
        if reply.status in (401, 403, 404):
            runtime.detector.response(ip, reply.status, path, fingerprint)
        runtime.metrics.requests.labels(tier, verdict, status_class(reply.status)).inc()
        reply.caller = caller
        return reply

    def forward(
        self,
        environ: dict[str, Any],
        headers: Headers,
        ip: str,
        peer: str,
        length: int | None,
        target: str,
        rid: str,
        limit_fields: Headers,
        pool: Pool,
        method: str | None = None,
    ) -> Reply:
        """Send the request upstream with the client's ``headers`` and the proxy's own; the reply carries
        ``limit_fields`` (the limit headers) too. ``method``: another than the client's (the cache turns a
        HEAD miss into a GET). ``pool``: the colour the caller picked (``Pools.pick`` of its bucket, key
        or IP); the request, and its one retry, stay on that colour's client."""
        upstream, clients = pool.client, self.runtime.settings.clients
        incoming = environ.get("HTTP_X_FORWARDED_FOR")
        chain = f"{incoming}, {peer}" if incoming and ip != peer else peer
        host = environ.get("HTTP_HOST", "")
        headers = [
            *headers,
            ("X-Forwarded-For", chain),
            ("X-Forwarded-Proto", environ.get("wsgi.url_scheme", "http")),
            ("X-Forwarded-Host", host),
            ("X-Request-Id", rid),
            ("Host", host if upstream.preserve_host else upstream.netloc),
        ]
        body: Iterable[bytes] | None = None
        if length:
            body = exact_chunks(environ["wsgi.input"], length)
        elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body, length = limited_chunks(environ["wsgi.input"], clients.max_body_bytes), None
        started = time.perf_counter()
        try:
            answer = upstream.send(method or environ["REQUEST_METHOD"], target, headers, body, length)
        except BadHeader as exc:
            return problem(400, "bad-header", str(exc))
        except BodyIncomplete as exc:
            return problem(400, "body-incomplete", str(exc))
        except BodyTooLarge:
            self.runtime.metrics.blocked.labels("too_large").inc()
            return problem(413, "body-too-large", "Request body too large.")
        except UpstreamError as exc:
            log.warning("upstream error: %s", exc)
            status = 504 if exc.timeout else 502
            pool.observe(status, time.perf_counter() - started)
            kind = "upstream-timeout" if exc.timeout else "bad-gateway"
            return problem(status, kind, str(exc), headers=limit_fields)  # the request was still counted
        seconds = time.perf_counter() - started
        self.runtime.metrics.upstream_seconds.observe(seconds)
        pool.observe(answer.status, seconds)
        fields = [(k, v) for k, v in answer.headers if k.lower() != "x-request-id"]  # ours is added last
        return Reply(answer.status, fields + limit_fields, answer.body, answer.reason)
