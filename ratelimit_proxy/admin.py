"""Admin API and metrics (port 9180), apart from proxied paths: keys, usage, bans, tier reload, and the
usage analytics read from the rollups in the platform database (ratelimit_proxy/usage_queries.py).

Each operation is declared once with pydantic models (``api.validate``): they validate the request and are
the OpenAPI document at ``/openapi.json``. The CLI checks its arguments with the same models.

Callers need a kit API token with the admin role (``vibelux-proxy tokens create --role admin``) or the
bootstrap token from ``RATELIMIT_PROXY_ADMIN__TOKEN`` (audited as actor ``admin-token``); every change is
written to the kit's audit log (``GET /api/v1/audit``) in the same transaction as its record.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import sqlalchemy
from flask import Blueprint, Flask, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from exporters.business.schema import api_usage_rollups
from exporters.database import read_only_engine, statement_deadline
from ratelimit_proxy import admin_cache, release_admin
from ratelimit_proxy.admin_common import STORAGE_DOWN, Body, _value_only, api, audit, current_runtime
from ratelimit_proxy.key_ban_storage import KeyRecord
from ratelimit_proxy.metrics import ActiveBansCollector
from ratelimit_proxy.policy import PolicyError
from ratelimit_proxy.runtime import Runtime
from ratelimit_proxy.settings import ProxySettings
from ratelimit_proxy.usage import RouteTemplates
from ratelimit_proxy.usage_queries import Period, tier_answer, tier_usage, top_customers, upgrade_candidates
from service_kit.app import ServiceKit
from service_kit.auth import Auth, Principal, require_role
from service_kit.config import ConfigError
from service_kit.db import Database
from service_kit.errors import NotFoundError, ServiceUnavailableError, ValidationError
from service_kit.index import ServiceDocs
from service_kit.openapi import DateTime
from service_kit.requests import bearer_credential, hash_token
from service_kit.tiers import Tier

MAX_BAN_SECONDS = 365 * 86400
BOOTSTRAP_DIGEST = "ratelimit_proxy_bootstrap_digest"
USAGE_ERRORS = {
    404: "usage analytics are off (usage.database_url is empty)",
    503: "the platform database is unavailable (Retry-After)",
}
USAGE_DATABASE = "ratelimit_proxy_usage_database"
MAX_USAGE_HOURS = 31 * 24
USAGE_QUERY_SECONDS = 10.0  # the database abandons a usage query running longer

# Text with something besides spaces, tabs and line breaks, and without NUL (the kit refuses NUL anyway).
NOT_BLANK = "^[^\\u0000]*[^\\u0000\\t\\n\\r ][^\\u0000]*$"
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = f"{_OCTET}(\\.{_OCTET}){{3}}"
_H = "[0-9a-fA-F]{1,4}"
_IPV6 = (
    f"(({_H}:){{7}}{_H}|({_H}:){{1,7}}:|({_H}:){{1,6}}:{_H}|({_H}:){{1,5}}(:{_H}){{1,2}}"
    f"|({_H}:){{1,4}}(:{_H}){{1,3}}|({_H}:){{1,3}}(:{_H}){{1,4}}|({_H}:){{1,2}}(:{_H}){{1,5}}"
    f"|{_H}:(:{_H}){{1,6}}|:((:{_H}){{1,7}}|:))"
)
# An address or a CIDR in the plain notations (no zone, no netmask form, no embedded IPv4 in IPv6): what
# the document states is exactly what is accepted.
NETWORK = f"^({_IPV4}(/(3[0-2]|[12]?[0-9]))?|{_IPV6}(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$"
DOCS = ServiceDocs(
    "Rate-limiting proxy: admin",
    "API keys of proxied clients, their usage, IP bans and tier reloads. Proxied traffic is on the proxy's own "
    "port, where `/` is the upstream's.",
    "Rate-limiting proxy (ratelimit_proxy/)",
    "ratelimit.md",
)

bp = Blueprint("ratelimit_admin", __name__, url_prefix="/api/v1")


def create_admin_app(
    settings: ProxySettings, runtime: Runtime | None = None, reload: Callable[[], ProxySettings] | None = None
) -> Flask:
    """``runtime``: share the proxy's (single-process memory mode); else one is built on the same Redis.
    ``reload``: how to read the config file again (tier reload)."""
    app = Flask("ratelimit_proxy.admin")
    kit = ServiceKit(
        "ratelimit-proxy-admin",
        sentry=settings.sentry,
        logging_settings=settings.logging,
        database=settings.database,
        docs=DOCS,
    )
    kit.init_app(app)
    runtime = runtime or Runtime(settings, kit.metrics.registry, reload=reload)
    kit.metrics.add_scrape_collector(ActiveBansCollector(lambda: len(runtime.bans.active())))
    if runtime.redis is not None:
        kit.health.add_check("redis", runtime.limiter_readiness)
    db = Database()
    db.init_app(app, settings.database.url)
    Auth(db).init_app(app)
    if settings.admin.token:
        app.extensions[BOOTSTRAP_DIGEST] = hash_token(settings.admin.token)
        app.before_request(accept_bootstrap_token)
    if settings.usage.database_url:  # read only: the proxy's workers write the rollups
        app.extensions[USAGE_DATABASE] = read_only_engine(settings.usage.database_url, USAGE_QUERY_SECONDS)
        kit.statements.instrument(app.extensions[USAGE_DATABASE], "usage")
    api.init_app(app)
    app.register_blueprint(bp)
    app.register_blueprint(admin_cache.bp)
    app.register_blueprint(release_admin.bp)
    if runtime.redis is not None:
        kit.metrics.add_scrape_collector(release_admin.release_collector(runtime))
    app.extensions["ratelimit_proxy"] = runtime
    return app


def accept_bootstrap_token() -> None:
    """Make a caller presenting the configured bootstrap token an admin (digests compared in constant time)."""
    presented = bearer_credential(request.headers.get("Authorization", ""))
    if presented and hmac.compare_digest(hash_token(presented), current_app.extensions[BOOTSTRAP_DIGEST]):
        g.principal = Principal(id="admin-token", role="admin", kind="token")


class NewKey(Body):
    tier: Tier
    owner: str = Field(min_length=1, max_length=200, pattern=NOT_BLANK, description="who the key is for")


class KeyChange(Body):
    """At least one of ``tier`` and ``status``; null is not a value of either."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    tier: Tier | None = Field(None, json_schema_extra=_value_only)
    status: Literal["active", "revoked"] | None = Field(None, json_schema_extra=_value_only)

    @field_validator("tier", "status", mode="before")
    @classmethod
    def not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must be given as a value, not null")
        return value

    @model_validator(mode="after")
    def something_to_change(self) -> KeyChange:
        if not self.model_fields_set:
            raise ValueError("give tier, status or both")
        return self


class NewBan(Body):
    network: str = Field(max_length=64, pattern=NETWORK, description="an IP address or a CIDR")
    seconds: int = Field(3600, ge=1, le=MAX_BAN_SECONDS, strict=False)  # 60.0 is the JSON integer 60
    reason: str = Field("manual", min_length=1, max_length=200, pattern=NOT_BLANK)

    @field_validator("seconds", mode="before")
    @classmethod
    def a_number(cls, value: Any) -> Any:
        """Lax only for numbers: ``true`` and ``"60"`` are not an integer, ``60.0`` is."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be an integer")
        return value

    @field_validator("network")
    @classmethod
    def normalised(cls, value: str) -> str:
        """``203.0.113.7/24`` is stored as the network it names, ``203.0.113.0/24``."""
        return str(ipaddress.ip_network(value, strict=False))


class UsageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field("/", max_length=2048, description="the path whose limits to show (AI and route limits)")


class Key(BaseModel):
    key_id: str = Field(description="SHA-256 of the key: the key itself is never stored")
    tier: str = Field(description="as stored; a key whose tier is no longer the platform's is served as anonymous")
    owner: str
    status: Literal["active", "revoked"]
    created_at: float = Field(description="epoch seconds")
    source: Literal["store", "config"]


class CreatedKey(Key):
    key: str = Field(description="the API key, shown this once")


class Keys(BaseModel):
    data: list[Key]


class WindowUsage(BaseModel):
    window: str
    quota: int
    window_seconds: int
    used: int
    remaining: int
    reset_seconds: int


class KeyUsage(BaseModel):
    key_id: str
    tier: str
    windows: list[WindowUsage]


class Ban(BaseModel):
    network: str
    reason: str
    source: Literal["auto", "manual"]
    created_at: float = Field(description="epoch seconds")
    expires_at: float = Field(description="epoch seconds")


class Bans(BaseModel):
    data: list[Ban]


class BanRemoved(BaseModel):
    removed: str


class TierLimit(BaseModel):
    name: str
    quota: int
    window_seconds: int
    buckets: int


class Tiers(BaseModel):
    tiers: dict[Tier, list[TierLimit]]


class UsagePeriodQuery(BaseModel):
    """The period of a usage question: ``hours`` hours up to ``until``."""

    model_config = ConfigDict(extra="forbid")

    until: DateTime | None = Field(
        None, description="end of the period (RFC 3339, excluded); default: now", json_schema_extra=_value_only
    )
    hours: int = Field(24, ge=1, le=MAX_USAGE_HOURS, description="length of the period in hours (up to 31 days)")


class TopCustomersQuery(UsagePeriodQuery):
    by: Literal["calls", "errors"] = Field("calls", description="errors: calls answered 4xx or 5xx, 429s included")
    limit: int = Field(20, ge=1, le=100)


class UpgradeCandidatesQuery(UsagePeriodQuery):
    near_percent: int = Field(80, ge=1, le=100, description="a peak at this share of a quota or above is near")
    limit: int = Field(20, ge=1, le=100)


class TierUsageQuery(UsagePeriodQuery):
    near_percent: int = Field(80, ge=1, le=100, description="a peak at this share of a quota or above is near")


class CustomerUsage(BaseModel):
    key_id: str
    owner: str
    tier: str = Field(description="the key's tier on its latest rollup in the period")
    calls: int
    errors: int = Field(description="calls answered 4xx or 5xx")
    client_errors: int
    server_errors: int
    refused: int = Field(description="calls a rate limit or quota refused (429)")
    latency_mean_ms: float | None
    latency_max_ms: float
    latency_p95_le_ms: int | None = Field(description="the latency bucket holding 95% of calls; null: above 1000 ms")


class TopCustomers(BaseModel):
    since: datetime
    until: datetime
    by: Literal["calls", "errors"]
    data: list[CustomerUsage]


class WindowPeak(BaseModel):
    window: Literal["minute", "hour", "ai-day"]
    quota: int
    peak: int = Field(description="calls in the key's busiest clock minute, clock hour or UTC day (AI calls)")
    ratio: float = Field(description="peak / quota; above 1: the limit refused some")


class UpgradeCandidate(BaseModel):
    key_id: str
    owner: str
    tier: str
    next_tier: str | None = Field(description="the platform's next tier up; null for the top tier")
    calls: int
    refused: int
    peak_ratio: float = Field(description="the largest ratio of the windows")
    windows: list[WindowPeak]


class UpgradeCandidates(BaseModel):
    since: datetime
    until: datetime
    data: list[UpgradeCandidate]


class TierWindowUsage(BaseModel):
    window: Literal["minute", "hour", "ai-day"]
    quota: int
    peak: int = Field(description="the highest peak of any key of the tier")
    mean_peak_ratio: float | None = Field(description="the mean over the tier's keys of peak / quota")
    keys_near_limit: int


class TierUsage(BaseModel):
    tier: Tier
    keys: int = Field(description="keys of the tier with calls in the period")
    calls: int
    refused: int
    keys_refused: int
    windows: list[TierWindowUsage]


class TierUsages(BaseModel):
    since: datetime
    until: datetime
    data: list[TierUsage]


def public(record: KeyRecord) -> dict[str, Any]:
    return asdict(record)


@bp.get("/keys")
@require_role("admin")
@api.validate(responses={200: Keys}, tags=("keys",), security="bearer", extra={503: STORAGE_DOWN})
def list_keys() -> ResponseReturnValue:
    """Every key: static ones from config first, then the stored ones in creation order."""
    return jsonify({"data": [public(r) for r in current_runtime().keys.all()]})


@bp.post("/keys")
@require_role("admin")
@api.validate(json=NewKey, responses={201: CreatedKey}, tags=("keys",), security="bearer", extra={503: STORAGE_DOWN})
def create_key() -> ResponseReturnValue:
    """A new key; the key itself is in this answer only."""
    body: NewKey = request.context.json  # type: ignore[attr-defined]
    api_key, record = current_runtime().keys.create(body.tier, body.owner)
    audit("key.create", "api_key", record.key_id, after=public(record))
    return jsonify({"key": api_key, **public(record)}), 201


@bp.patch("/keys/<key_id>")
@require_role("admin")
@api.validate(json=KeyChange, responses={200: Key}, tags=("keys",), security="bearer", extra={503: STORAGE_DOWN})
def update_key(key_id: str) -> ResponseReturnValue:
    """Change a stored key's tier or status (keys from config cannot change: 404)."""
    body: KeyChange = request.context.json  # type: ignore[attr-defined]
    before, after = current_runtime().keys.update(key_id, tier=body.tier, status=body.status)
    audit("key.update", "api_key", key_id, public(before), public(after))
    return jsonify(public(after))


@bp.delete("/keys/<key_id>")
@require_role("admin")
@api.validate(responses={204: None}, tags=("keys",), security="bearer", extra={503: STORAGE_DOWN})
def delete_key(key_id: str) -> ResponseReturnValue:
    """Delete a stored key: its client gets 401 from then on. To revoke reversibly, PATCH its status."""
    before = current_runtime().keys.delete(key_id)
    audit("key.delete", "api_key", key_id, before=public(before))
    return "", 204


@bp.get("/keys/<key_id>/usage")
@require_role("admin")
@api.validate(query=UsageQuery, responses={200: KeyUsage}, tags=("keys",), security="bearer", extra={503: STORAGE_DOWN})
def key_usage(key_id: str) -> ResponseReturnValue:
    """What the key has used of each window for a request to ``path``, without charging it."""
    query: UsageQuery = request.context.query  # type: ignore[attr-defined]
    runtime = current_runtime()
    record = next((r for r in runtime.keys.all() if r.key_id == key_id), None)
    if record is None:
        raise NotFoundError(f"No key with id {key_id}.")
    tier = record.tier if record.tier in runtime.policy.tiers else runtime.settings.limits.anonymous_tier
    limits = runtime.policy.plan(tier, "GET", query.path).limits
    decision = runtime.limiter.peek(f"key:{key_id[:32]}", limits)
    windows = [
        {
            "window": w.limit.name,
            "quota": w.limit.quota,
            "window_seconds": w.limit.window_seconds,
            "used": w.limit.quota - w.remaining,
            "remaining": w.remaining,
            "reset_seconds": w.reset_seconds,
        }
        for w in decision.windows
    ]
    return jsonify({"key_id": key_id, "tier": record.tier, "windows": windows})


@bp.get("/bans")
@require_role("admin")
@api.validate(responses={200: Bans}, tags=("bans",), security="bearer", extra={503: STORAGE_DOWN})
def list_bans() -> ResponseReturnValue:
    return jsonify({"data": [b.as_dict() for b in current_runtime().bans.active()]})


@bp.post("/bans")
@require_role("admin")
@api.validate(json=NewBan, responses={201: Ban}, tags=("bans",), security="bearer", extra={503: STORAGE_DOWN})
def add_ban() -> ResponseReturnValue:
    """Ban a network for ``seconds`` on every replica (manual bans ignore the allow-list)."""
    body: NewBan = request.context.json  # type: ignore[attr-defined]
    ban = current_runtime().bans.ban(body.network, body.reason, "manual", body.seconds)
    assert ban is not None  # manual bans are never skipped
    audit("ban.create", "ban", ban.network, after=ban.as_dict())
    return jsonify(ban.as_dict()), 201


@bp.delete("/bans/<path:network>")
@require_role("admin")
@api.validate(responses={200: BanRemoved}, tags=("bans",), security="bearer", extra={503: STORAGE_DOWN})
def remove_ban(network: str) -> ResponseReturnValue:
    """Lift a ban; text that is no network names no ban either (404)."""
    try:
        network = str(ipaddress.ip_network(network, strict=False))
    except ValueError:
        raise NotFoundError(f"No ban on {network!r}: not an IP address or CIDR.") from None
    runtime = current_runtime()
    before = next((b.as_dict() for b in runtime.bans.active() if b.network == network), None)
    if not runtime.bans.unban(network):
        raise NotFoundError(f"No ban on {network}.")
    audit("ban.delete", "ban", network, before=before)
    return jsonify({"removed": network})


@bp.post("/reload")
@require_role("admin")
@api.validate(
    responses={200: Tiers},
    tags=("tiers",),
    security="bearer",
    extra={422: "the config file is invalid (details.config), or this process has no file to read", 503: STORAGE_DOWN},
)
def reload_tiers() -> ResponseReturnValue:
    """Read the tier file again here, and announce it so every process on this Redis does too."""
    runtime = current_runtime()
    before = sorted(runtime.policy.tiers)
    try:
        reloaded = runtime.reload_limits()
    except (ConfigError, PolicyError) as exc:
        raise ValidationError({"config": str(exc)}) from None
    if not reloaded:
        raise ValidationError({"reload": "this process was started without a config file"})
    runtime.announce_reload()
    audit("tiers.reload", "tiers", "config", before={"tiers": before}, after={"tiers": sorted(runtime.policy.tiers)})
    return jsonify({"tiers": {t: [asdict(lim) for lim in lims] for t, lims in runtime.policy.tiers.items()}})


def usage_period(query: UsagePeriodQuery) -> Period:
    """``hours`` up to ``until`` (default now), as the naive UTC the rollups store."""
    until = (query.until or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    try:
        since = until - timedelta(hours=query.hours)
    except OverflowError:  # an ``until`` in the first days of year 1
        since = datetime.min
    return Period(since, until)


def rfc3339(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def ask_usage(
    question: Callable[[sqlalchemy.Connection], list[dict[str, Any]]], nothing: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Run ``question`` on the platform database; no table yet (no rollup written) answers ``nothing``."""
    engine: sqlalchemy.Engine | None = current_app.extensions.get(USAGE_DATABASE)
    if engine is None:
        raise NotFoundError("Usage analytics are off: usage.database_url is empty.")
    if not_created_yet(current_runtime().settings.usage.database_url):
        return nothing or []
    try:
        with engine.connect() as connection, connection.begin(), statement_deadline(connection, USAGE_QUERY_SECONDS):
            if not sqlalchemy.inspect(connection).has_table(api_usage_rollups.name):
                return nothing or []
            return question(connection)
    except sqlalchemy.exc.OperationalError as exc:
        raise ServiceUnavailableError(f"The platform database is unavailable: {exc.orig}") from None


def not_created_yet(url: str) -> bool:
    """A SQLite file no proxy worker has written yet (the read-only engine cannot open it)."""
    parsed = sqlalchemy.make_url(url)
    database = parsed.database or ""
    return parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not Path(database).exists()


def ai_templates(runtime: Runtime) -> list[str]:
    """The route templates whose calls count against the AI quota."""
    limits = runtime.settings.limits
    return RouteTemplates.from_settings(limits, runtime.settings.usage).under(limits.ai_paths)


@bp.get("/usage/top-customers")
@require_role("admin")
@api.validate(
    query=TopCustomersQuery, responses={200: TopCustomers}, tags=("usage",), security="bearer", extra=USAGE_ERRORS
)
def usage_top_customers() -> ResponseReturnValue:
    """The keys with the most calls, or the most errors, over the period (calls without a key left out)."""
    query: TopCustomersQuery = request.context.query  # type: ignore[attr-defined]
    period = usage_period(query)
    data = ask_usage(lambda connection: top_customers(connection, period, query.by, query.limit))
    return jsonify({"since": rfc3339(period.since), "until": rfc3339(period.until), "by": query.by, "data": data})


@bp.get("/usage/upgrade-candidates")
@require_role("admin")
@api.validate(
    query=UpgradeCandidatesQuery,
    responses={200: UpgradeCandidates},
    tags=("usage",),
    security="bearer",
    extra=USAGE_ERRORS,
)
def usage_upgrade_candidates() -> ResponseReturnValue:
    """Keys near or over a limit of their tier (per minute, per hour, AI per day), the closest first."""
    query: UpgradeCandidatesQuery = request.context.query  # type: ignore[attr-defined]
    period, runtime = usage_period(query), current_runtime()
    tiers, ai = runtime.settings.limits.tiers, ai_templates(runtime)
    data = ask_usage(
        lambda connection: upgrade_candidates(connection, period, tiers, ai, query.near_percent, query.limit)
    )
    return jsonify({"since": rfc3339(period.since), "until": rfc3339(period.until), "data": data})


@bp.get("/usage/tiers")
@require_role("admin")
@api.validate(query=TierUsageQuery, responses={200: TierUsages}, tags=("usage",), security="bearer", extra=USAGE_ERRORS)
def usage_by_tier() -> ResponseReturnValue:
    """Per tier, its keys' usage against each of its quotas."""
    query: TierUsageQuery = request.context.query  # type: ignore[attr-defined]
    period, runtime = usage_period(query), current_runtime()
    tiers, ai = runtime.settings.limits.tiers, ai_templates(runtime)
    data = ask_usage(
        lambda connection: tier_usage(connection, period, tiers, ai, query.near_percent), tier_answer(tiers, {})
    )
    return jsonify({"since": rfc3339(period.since), "until": rfc3339(period.until), "data": data})
