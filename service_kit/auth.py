"""Who is calling: hashed API tokens with roles, optional identity-provider JWTs, and the audit log.

Tokens look like ``vbx_<43 url-safe chars>``; only their SHA-256 is stored (they carry 256 bits of
randomness, so a fast hash is enough and lets a lookup be one indexed query). A JWT from an identity
provider (Clerk, Auth0, …) is verified against its JWKS URL and its claims mapped to id, role and tier.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import secrets
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar, get_args

import jwt
from flask import Blueprint, Flask, current_app, g, has_request_context, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field
from sqlalchemy import JSON, DateTime, Integer, String, event, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from service_kit.db import Database, KitBase
from service_kit.errors import AuthenticationError, AuthorizationError, ConflictError, NotFoundError, ValidationError
from service_kit.openapi import ApiDocument, Strict
from service_kit.requests import bearer_credential, hash_token
from service_kit.sentry import set_user
from service_kit.settings import JWTSettings
from service_kit.tiers import DESK_TIERS, DeskTier, unknown_tier_message

Role = Literal["admin", "agent", "viewer", "service", "customer"]
ROLES: tuple[str, ...] = get_args(Role)
ASCII_SPACE = " \t\n\r\f\v"  # not str.strip()'s default: Python's idea of space is wider than JSON Schema's \s
TOKEN_PREFIX = "vbx_"  # noqa: S105 - a public prefix, not a secret
P = ParamSpec("P")
R = TypeVar("R")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ApiToken(KitBase):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tier: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "role": self.role,
            "subject": self.subject,
            "tier": self.tier,
            "created_at": _iso(self.created_at),
            "revoked_at": _iso(self.revoked_at),
            "last_used_at": _iso(self.last_used_at),
        }


class AuditRecord(KitBase):
    """One admin action; rows are never updated or deleted (the ORM and a database trigger refuse)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    actor_role: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(100), index=True)
    target_type: Mapped[str] = mapped_column(String(60))
    target_id: Mapped[str] = mapped_column(String(200))
    before: Mapped[Any] = mapped_column(JSON, nullable=True)
    after: Mapped[Any] = mapped_column(JSON, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": _iso(self.at),
            "actor": self.actor,
            "actor_role": self.actor_role,
            "action": self.action,
            "target": {"type": self.target_type, "id": self.target_id},
            "before": self.before,
            "after": self.after,
            "request_id": self.request_id,
            "ip": self.ip,
        }


@event.listens_for(Session, "before_flush")
def _audit_is_append_only(session: Session, _context: Any, _instances: Any) -> None:
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, AuditRecord):
            raise RuntimeError("audit_log is append-only")


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; the kit only stores UTC.
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat().replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``kind`` is ``token``, ``jwt`` or ``cli``."""

    id: str
    role: str
    kind: str
    tier: str | None = None
    email: str | None = None
    token_id: int | None = None


def create_token(
    session: Session, name: str, role: str, subject: str | None = None, tier: str | None = None
) -> tuple[str, ApiToken]:
    """Create a token; the plain value is returned once and never stored."""
    errors = {}
    if role not in ROLES:
        errors["role"] = f"must be one of {', '.join(ROLES)}"
    name = name.strip(ASCII_SPACE)
    if not name:
        errors["name"] = "must not be empty"
    if tier is not None and tier not in DESK_TIERS:
        errors["tier"] = unknown_tier_message(DESK_TIERS)
    if errors:
        raise ValidationError(errors)
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(
        name=name,
        token_hash=hash_token(plain),
        prefix=plain[:10],
        role=role,
        subject=subject,
        tier=tier,
    )
    session.add(record)
    session.flush()
    return plain, record


def revoke_token(session: Session, token_id: int) -> ApiToken:
    record = session.get(ApiToken, token_id)
    if record is None:
        raise NotFoundError(f"No token with id {token_id}.")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
    return record


def _claim(claims: dict[str, Any], path: str) -> Any:
    """Claims may be nested (Clerk puts custom ones under ``metadata``): ``metadata.role``."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class Auth:
    """Flask resource: authenticates requests, enforces roles, writes and serves the audit log."""

    def __init__(self, db: Database, jwt_settings: JWTSettings | None = None) -> None:
        self.db = db
        self.jwt_settings = jwt_settings or JWTSettings()
        self._jwks: jwt.PyJWKClient | None = None
        if self.jwt_settings.jwks_url:
            self._jwks = jwt.PyJWKClient(self.jwt_settings.jwks_url, cache_keys=True, lifespan=300, timeout=5)

    def init_app(self, app: Flask) -> None:
        app.extensions["auth"] = self
        app.register_blueprint(audit_bp)
        app.register_blueprint(tokens_bp)
        kit_api.init_app(app)

    # -- authentication -------------------------------------------------------------------------
    def credential_from_request(self) -> str | None:
        return bearer_credential(request.headers.get("Authorization", "")) or request.headers.get("X-API-Key") or None

    def authenticate(self, credential: str) -> Principal:
        if credential.startswith(TOKEN_PREFIX):
            return self._principal_from_token(credential)
        if self._jwks is not None and credential.count(".") == 2:
            return self._principal_from_jwt(credential)
        raise AuthenticationError("The token is not valid.")

    def _principal_from_token(self, credential: str) -> Principal:
        session = self.db.session
        record = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(credential)))
        if record is None or record.revoked_at is not None:
            raise AuthenticationError("The token is unknown or revoked.")
        now = utcnow()
        last_used = record.last_used_at
        if last_used is None or (now - last_used.replace(tzinfo=dt.UTC)).total_seconds() > 60:
            record.last_used_at = now  # at most one write a minute per token
            session.commit()
        return Principal(
            id=record.subject or f"token:{record.id}",
            role=record.role,
            kind="token",
            tier=record.tier,
            token_id=record.id,
        )

    def _principal_from_jwt(self, credential: str) -> Principal:
        settings = self.jwt_settings
        assert self._jwks is not None
        try:
            key = self._jwks.get_signing_key_from_jwt(credential).key
            claims = jwt.decode(
                credential,
                key,
                algorithms=settings.algorithms,
                audience=settings.audience or None,
                issuer=settings.issuer or None,
                leeway=30,
                options={"verify_aud": bool(settings.audience), "require": ["exp", "sub"]},
            )
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            raise AuthenticationError(f"The token is not valid: {type(exc).__name__}.") from None
        role = _claim(claims, settings.role_claim) or settings.default_role
        if role not in ROLES:
            raise AuthorizationError(f"The token's role {role!r} is not one of {', '.join(ROLES)}.")
        user_id = _claim(claims, settings.user_id_claim)
        tier = _claim(claims, settings.tier_claim)
        email = claims.get("email")
        return Principal(id=str(user_id), role=role, kind="jwt", tier=str(tier) if tier else None, email=email)

    def current_principal(self) -> Principal | None:
        """The caller of this request, or None when no credential was sent; cached on ``g``."""
        if "principal" not in g:
            credential = self.credential_from_request()
            g.principal = self.authenticate(credential) if credential else None
            if g.principal is not None:
                set_user(g.principal.id, g.principal.tier, g.principal.email)
        principal: Principal | None = g.principal
        return principal

    # -- audit ----------------------------------------------------------------------------------
    def record(
        self,
        action: str,
        target_type: str,
        target_id: object,
        before: Any = None,
        after: Any = None,
        session: Session | None = None,
        actor: Principal | None = None,
    ) -> AuditRecord:
        """Add an audit record to ``session`` (the request's by default): it commits with the change."""
        principal = actor or g.get("principal") or Principal(id="anonymous", role="none", kind="none")
        record = AuditRecord(
            actor=principal.id,
            actor_role=principal.role,
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            before=before,
            after=after,
            request_id=g.get("request_id") if has_request_context() else None,
            ip=request.remote_addr if has_request_context() else None,
        )
        (session or self.db.session).add(record)
        return record


def current_auth() -> Auth:
    auth: Auth = current_app.extensions["auth"]
    return auth


def require_role(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Allow callers with one of ``roles``; admins always pass. 401 without credentials, 403 otherwise."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)}")

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            principal = current_auth().current_principal()
            if principal is None:
                raise AuthenticationError()
            if principal.role != "admin" and principal.role not in roles:
                raise AuthorizationError(f"This needs the role {' or '.join(roles)}.")
            return view(*args, **kwargs)

        return wrapper

    return decorator


# -- the kit's own routes ----------------------------------------------------------------------------
kit_api = ApiDocument(
    "VibeLux service kit",
    security={
        "bearer": {"type": "http", "scheme": "bearer", "description": "vbx_… API token or an identity-provider JWT"}
    },
)
audit_bp = Blueprint("service_kit_audit", __name__)


class AuditQuery(Strict):
    limit: int = Field(50, ge=1, le=200, description="records per page")
    cursor: int | None = Field(None, ge=1, description="next_cursor of the previous page")
    actor: str | None = Field(None, max_length=200)
    action: str | None = Field(None, max_length=100)
    target_type: str | None = Field(None, max_length=60)
    target_id: str | None = Field(None, max_length=200)


class AuditTarget(BaseModel):
    type: str
    id: str


class AuditEntry(BaseModel):
    id: int
    at: str
    actor: str
    actor_role: str
    action: str
    target: AuditTarget
    before: Any
    after: Any
    request_id: str | None
    ip: str | None


class PageMeta(BaseModel):
    has_more: bool
    next_cursor: str | None


class AuditPage(BaseModel):
    data: list[AuditEntry]
    meta: PageMeta


@audit_bp.get("/api/v1/audit")
@require_role("admin")
@kit_api.validate(query=AuditQuery, responses={200: AuditPage}, tags=("audit",), security="bearer")
def list_audit() -> ResponseReturnValue:
    """Admin actions, newest first, filtered by actor, action or target; paged by cursor."""
    args: AuditQuery = request.context.query  # type: ignore[attr-defined]
    query = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(args.limit + 1)
    for name in ("actor", "action", "target_type", "target_id"):
        value = getattr(args, name)
        if value is not None:
            query = query.where(getattr(AuditRecord, name) == value)
    if args.cursor is not None:
        query = query.where(AuditRecord.id < args.cursor)
    rows = list(current_auth().db.session.scalars(query))
    has_more = len(rows) > args.limit
    rows = rows[: args.limit]
    return jsonify(
        {
            "data": [row.as_dict() for row in rows],
            "meta": {"has_more": has_more, "next_cursor": str(rows[-1].id) if has_more else None},
        }
    )


class NewToken(Strict):
    name: str = Field(min_length=1, max_length=200, pattern=f"[^{ASCII_SPACE}]")
    role: Role
    subject: str | None = Field(None, min_length=1, max_length=200, description="the user or customer id it acts as")
    tier: DeskTier | None = None


class TokenInfo(BaseModel):
    id: int
    name: str
    prefix: str
    role: str
    subject: str | None
    tier: str | None
    created_at: str | None
    revoked_at: str | None
    last_used_at: str | None


class CreatedToken(TokenInfo):
    token: str = Field(description="the token itself, shown this once: only its SHA-256 is stored")


class TokenList(BaseModel):
    data: list[TokenInfo]


tokens_bp = Blueprint("service_kit_tokens", __name__, url_prefix="/api/v1/tokens")


@tokens_bp.get("")
@require_role("admin")
@kit_api.validate(responses={200: TokenList}, tags=("tokens",), security="bearer")
def list_tokens() -> ResponseReturnValue:
    """Every API token, revoked ones included, without its value."""
    tokens = current_auth().db.session.scalars(select(ApiToken).order_by(ApiToken.id))
    return jsonify({"data": [token.as_dict() for token in tokens]})


@tokens_bp.post("")
@require_role("admin")
@kit_api.validate(json=NewToken, responses={201: CreatedToken}, tags=("tokens",), security="bearer")
def create_token_route() -> ResponseReturnValue:
    """A new token; its value is in this response only. Audited as ``token.create``."""
    body: NewToken = request.context.json  # type: ignore[attr-defined]
    auth = current_auth()
    plain, token = create_token(auth.db.session(), body.name, body.role, body.subject, body.tier)
    auth.record("token.create", "api_token", token.id, after=token.as_dict())
    auth.db.session.commit()
    return jsonify({**token.as_dict(), "token": plain}), 201


@tokens_bp.delete("/<int:token_id>")
@require_role("admin")
@kit_api.validate(
    responses={200: TokenInfo}, tags=("tokens",), security="bearer", extra={409: "the caller's own token"}
)
def revoke_token_route(token_id: int) -> ResponseReturnValue:
    """Revoke a token (idempotent); it stays listed with ``revoked_at``. Audited as ``token.revoke``.
    Not the token of this very request: an admin must not lock themselves out by mistake (409)."""
    auth = current_auth()
    principal = auth.current_principal()
    if principal is not None and principal.token_id == token_id:
        raise ConflictError("This is the token making the request; revoke it with another admin token.")
    token = revoke_token(auth.db.session(), token_id)
    auth.record("token.revoke", "api_token", token.id, after=token.as_dict())
    auth.db.session.commit()
    return jsonify(token.as_dict())
