"""The proxy app (port 8080): every path and method goes through ``proxy_view``.

Order of checks, cheapest refusal first: malformed target (400), header size (431), body size (413),
ban or deny-list (403), known attack path (403, bans), API key (401), limiter (429, or 503 when Redis
is down in fail-closed mode), then the upstream (502/504 when it fails). Nothing refused reaches the
upstream. The limiter's verdict is one Lua call; keys and bans come from short-lived local caches.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry

from ratelimit_proxy.backends import LimiterBackend, StorageUnavailable
from ratelimit_proxy.clientip import client_ip
from ratelimit_proxy.forward import (
    BodyTooLarge,
    Upstream,
    UpstreamError,
    header_bytes,
    limited_chunks,
    request_headers,
    response_headers,
    small_body,
    stream_body,
    target_of,
)
from ratelimit_proxy.guard import key_id, request_fingerprint
from ratelimit_proxy.limiter import Decision
from ratelimit_proxy.metrics import status_class
from ratelimit_proxy.policy import RoutePlan
from ratelimit_proxy.runtime import Runtime
from ratelimit_proxy.settings import ProxySettings
from ratelimit_proxy.store import Store
from service_kit.app import ServiceKit

log = logging.getLogger("ratelimit_proxy")
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
PROBLEM_TYPES = "https://iana.org/assignments/http-problem-types#"
NEAR_LIMIT_PERCENT = 80  # integers: 5 * (1 - 0.8) is 0.999... in floating point


class ProxiedResponse(Response):
    """Upstream headers pass as they are: no default Content-Type, no computed Content-Length."""

    default_mimetype = None
    automatically_set_content_length = False


def problem(
    status: int,
    kind: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> Response:
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
    return Response(json.dumps(body), status, headers=headers or [], content_type="application/problem+json")


PROBLEM_KINDS = {"quota-exceeded", "abnormal-usage-detected", "temporary-reduced-capacity"}
PROBLEM_TITLES = {
    "quota-exceeded": "Request cannot be satisfied as assigned quota has been exceeded",
    "abnormal-usage-detected": "Request not satisfied due to detection of abnormal request pattern",
    "temporary-reduced-capacity": "Request cannot be satisfied due to temporary reduced capacity",
}


def limit_headers(plan: RoutePlan, decision: Decision) -> list[tuple[str, str]]:
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
    value = environ.get("CONTENT_LENGTH", "")
    return int(value) if value.isdigit() else None


def credential(environ: dict[str, Any]) -> str | None:
    header = environ.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return environ.get("HTTP_X_API_KEY") or None


def create_app(
    settings: ProxySettings,
    *,
    registry: CollectorRegistry | None = None,
    limiter: LimiterBackend | None = None,
    store: Store | None = None,
    reload: Callable[[], ProxySettings] | None = None,
) -> Flask:
    """The proxy. ``reload`` reads the config file again (tier reloads announced by the admin API)."""
    app = Flask("ratelimit_proxy", static_folder=None)  # every path belongs to the upstream
    app.url_map.merge_slashes = False
    kit = ServiceKit(
        "ratelimit-proxy",
        sentry=settings.sentry,
        logging_settings=settings.logging,
        log_requests=settings.log_proxied_requests,
        endpoints=False,
    )
    kit.init_app(app)
    runtime = Runtime(settings, registry or kit.metrics.registry, limiter, store, reload)
    upstream = Upstream(settings.upstream)
    app.extensions["ratelimit_proxy"] = runtime
    clients = settings.clients

    def refuse(tier: str, decision: str, response: Response, reason: str | None = None) -> Response:
        if reason:
            runtime.metrics.blocked.labels(reason).inc()
        runtime.metrics.requests.labels(tier, decision, status_class(response.status_code)).inc()
        return response

    def proxy_view(path: str) -> Response:
        environ = request.environ
        if not origin_form(environ):
            return refuse(
                "none", "blocked", problem(400, "bad-request-target", "Only origin-form targets."), "bad_request"
            )
        if header_bytes(environ) > clients.max_header_bytes:
            return refuse(
                "none", "blocked", problem(431, "headers-too-large", "Request headers too large."), "too_large"
            )
        length = content_length(environ)
        if length is not None and length > clients.max_body_bytes:
            return refuse("none", "blocked", problem(413, "body-too-large", "Request body too large."), "too_large")

        peer = environ.get("REMOTE_ADDR", "")
        ip = client_ip(peer, environ.get("HTTP_X_FORWARDED_FOR"), runtime.trusted_proxies, clients.trusted_hops)
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")

        def fingerprint() -> str:
            names = (k[5:] for k in environ if k.startswith("HTTP_"))
            return request_fingerprint(ip, environ.get("HTTP_USER_AGENT", ""), names)

        g.client_ip = ip
        runtime.tick()
        reason = runtime.bans.check(ip)
        if reason:
            detail = "This client is blocked."
            return refuse("none", "blocked", problem(403, "abnormal-usage-detected", detail), reason)
        target = target_of(environ)
        if runtime.detector.attack_path(ip, target, fingerprint):
            detail = "This client is blocked."
            return refuse("none", "blocked", problem(403, "abnormal-usage-detected", detail), "attack_path")

        api_key = credential(environ)
        anonymous_tier = runtime.settings.limits.anonymous_tier
        tier, bucket = anonymous_tier, f"ip:{ip}"
        if api_key:
            try:
                record = runtime.lookup_key(api_key)
            except StorageUnavailable:
                # The key cannot be checked: fail-closed refuses; fail-open serves it as anonymous traffic.
                if runtime.failure_mode == "closed":
                    return unavailable()
            else:
                runtime.detector.key_seen(ip, key_id(api_key), fingerprint)
                if record is None or record.status != "active":
                    runtime.detector.response(ip, 401, path, fingerprint)
                    response = problem(401, "unauthorized", "The API key is unknown or revoked.")
                    response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
                    return refuse("none", "unauthorized", response, "unknown_key")
                tier, bucket = record.tier, f"key:{record.key_id[:32]}"
        if tier not in runtime.policy.tiers:
            log.error("key of tier %r not in the tier file; using %r", tier, anonymous_tier)
            tier = anonymous_tier

        plan = runtime.policy.plan(tier, method, path)
        decision = runtime.decide(bucket, plan.limits, plan.cost)
        extra_headers: list[tuple[str, str]] = []
        if decision is None:
            if runtime.failure_mode == "closed":
                return unavailable(tier)
            verdict = "error"
        elif not decision.allowed:
            runtime.detector.response(ip, 429, path, fingerprint)
            headers = [*limit_headers(plan, decision), ("Retry-After", str(decision.retry_after_seconds))]
            violated = decision.violated
            detail = f"Quota exceeded: {', '.join(violated)}."
            body = problem(429, "quota-exceeded", detail, {"violated-policies": violated}, headers)
            return refuse(tier, "limited", body)
        else:
            verdict = "allowed"
            extra_headers = limit_headers(plan, decision)
            for window in decision.windows:
                if (window.limit.quota - window.remaining) * 100 >= window.limit.quota * NEAR_LIMIT_PERCENT:
                    runtime.metrics.near_limit.labels(tier, window.limit.name).inc()
        response = forward(environ, ip, peer, length, target, extra_headers)
        if response.status_code in (401, 403, 404):
            runtime.detector.response(ip, response.status_code, path, fingerprint)
        runtime.metrics.requests.labels(tier, verdict, status_class(response.status_code)).inc()
        return response

    def unavailable(tier: str = "none") -> Response:
        retry = str(runtime.retry_after_outage)
        body = problem(503, "temporary-reduced-capacity", "Rate limiting is unavailable.", {}, [("Retry-After", retry)])
        return refuse(tier, "error", body)

    def forward(
        environ: dict[str, Any],
        ip: str,
        peer: str,
        length: int | None,
        target: str,
        extra_headers: list[tuple[str, str]],
    ) -> Response:
        """Send the request upstream; the response carries ``extra_headers`` (the limit headers)."""
        incoming = environ.get("HTTP_X_FORWARDED_FOR")
        chain = f"{incoming}, {peer}" if incoming and ip != peer else peer
        host = environ.get("HTTP_HOST", "")
        headers = [(k, v) for k, v in request_headers(environ) if k not in FORWARD_HEADERS]
        headers += [
            ("X-Forwarded-For", chain),
            ("X-Forwarded-Proto", environ.get("wsgi.url_scheme", "http")),
            ("X-Forwarded-Host", host),
            ("X-Request-Id", g.request_id),
            ("Host", host if upstream.preserve_host else upstream.netloc),
        ]
        body: Any = None
        if length:
            body = request.stream
        elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body = limited_chunks(environ["wsgi.input"], clients.max_body_bytes)
        started = time.perf_counter()
        try:
            answer = upstream.send(environ["REQUEST_METHOD"], target, headers, body)
            small = small_body(answer)
        except BodyTooLarge:
            runtime.metrics.blocked.labels("too_large").inc()
            return problem(413, "body-too-large", "Request body too large.")
        except UpstreamError as exc:
            log.warning("upstream error: %s", exc)
            status = 504 if exc.timeout else 502
            kind = "upstream-timeout" if exc.timeout else "bad-gateway"
            return problem(status, kind, str(exc), headers=extra_headers)  # the request was still counted
        runtime.metrics.upstream_seconds.observe(time.perf_counter() - started)
        content = stream_body(answer) if small is None else small
        return ProxiedResponse(content, answer.status, response_headers(answer) + extra_headers)

    app.add_url_rule("/", "proxy", proxy_view, defaults={"path": ""}, methods=METHODS)
    app.add_url_rule("/<path:path>", "proxy", proxy_view, methods=METHODS)
    return app


# Set by the proxy from what it knows; a client's own values would be believed by the upstream.
FORWARD_HEADERS = frozenset({"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id", "Host"})
