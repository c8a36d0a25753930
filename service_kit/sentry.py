"""Sentry set-up: off without a DSN; scrubbed events; expected 4xx dropped; stable fingerprints.

Sentry gets no customer data: request bodies are never attached (``max_request_body_size="never"``), stack
frames carry no local variables (a view's locals hold the body it parsed), and any email left in free text
(an exception message, a query string) is masked. The user is the id and tier, the email only with
``send_user_email: true``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.integrations.logging import LoggingIntegration

from service_kit.errors import APIError
from service_kit.scrub import DEFAULT_SCRUBBER, FILTERED
from service_kit.settings import SentrySettings

log = logging.getLogger("service_kit.sentry")
_send_user_email = False
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+")


def _mask_emails(value: Any) -> Any:
    if isinstance(value, str):
        return _EMAIL.sub(FILTERED, value) if "@" in value else value
    if isinstance(value, dict):
        return {key: _mask_emails(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_emails(item) for item in value]
    return value


def _before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    exc_info = hint.get("exc_info")
    exc = exc_info[1] if exc_info else None
    if isinstance(exc, APIError):
        if exc.expected:
            return None  # a 4xx the client caused is not an error of ours
        event["fingerprint"] = [type(exc).__name__, exc.code]
    user = event.pop("user", None)
    if isinstance(event.get("request"), dict):
        event["request"].pop("data", None)  # a body the SDK attached anyway (form data, a size limit change)
    scrubbed: dict[str, Any] = _mask_emails(DEFAULT_SCRUBBER.scrub(event))
    if isinstance(user, dict):
        if not _send_user_email:
            user.pop("email", None)
        scrubbed["user"] = user
    return scrubbed


def _before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    scrubbed: dict[str, Any] = DEFAULT_SCRUBBER.scrub(crumb)
    return scrubbed


def init_sentry(settings: SentrySettings, service: str, release: str) -> bool:
    """Initialise the SDK when a DSN is configured; returns whether Sentry is on."""
    global _send_user_email
    _send_user_email = settings.send_user_email
    if not settings.dsn:
        return False
    sentry_sdk.init(
        dsn=settings.dsn,
        environment=settings.environment,
        release=f"{service}@{release}",
        traces_sample_rate=settings.traces_sample_rate,
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        integrations=[
            FlaskIntegration(transaction_style="url"),
            # Errors reach Sentry through capture_exception; log records only become breadcrumbs.
            LoggingIntegration(level=logging.INFO, event_level=None),
        ],
        before_send=_before_send,  # type: ignore[arg-type]
        before_send_transaction=_before_send,  # type: ignore[arg-type]
        before_breadcrumb=_before_breadcrumb,
    )
    sentry_sdk.set_tag("service", service)
    log.info("sentry enabled", extra={"environment": settings.environment})
    return True


def set_user(user_id: str, tier: str | None = None, email: str | None = None) -> None:
    """Attach who made the request; the email only when the deployment allows it."""
    user: dict[str, Any] = {"id": user_id}
    if tier:
        user["tier"] = tier
    if email and _send_user_email:
        user["email"] = email
    sentry_sdk.set_user(user)


def breadcrumb(category: str, message: str, level: str = "info", **data: Any) -> None:
    sentry_sdk.add_breadcrumb(category=category, message=message, level=level, data=data)
