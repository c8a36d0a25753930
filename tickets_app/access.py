"""Who the caller is, as the desk sees it: principals from the kit mapped to desk actors.

Customers come with a JWT from the identity provider (or a kit token with role customer), or through a
service token acting for a customer named in `X-On-Behalf-Of` (the integration vouches for the customer's
name, email and tier in `X-Customer-Name`, `X-Customer-Email`, `X-Customer-Tier`). Agents and admins use
tokens or the web UI's session.

A customer's tier is one of the platform's plans (``service_kit.tiers.TIERS``) or none, never another
one. A service sends it in a header, so an unknown one is its mistake to hear about: a 422. A token's or
JWT's tier claim comes from whoever issued it, perhaps naming a plan before the desk knows it: the
customer is served with no tier (no tier-specific SLA policy applies) and a warning is logged.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import g, request

from service_kit.auth import Principal, current_auth
from service_kit.errors import AuthenticationError, AuthorizationError, ValidationError
from service_kit.tiers import TIERS, unknown_tier_message
from tickets_app.desk import Actor
from tickets_app.models import StaffUser

ON_BEHALF_HEADER = "X-On-Behalf-Of"
TIER_HEADER = "X-Customer-Tier"
P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger(__name__)


def current_actor() -> Actor:
    """The acting desk user of this request; 401 without credentials, 403 for roles with no desk access."""
    if "actor" in g:
        actor: Actor = g.actor
        return actor
    principal = current_auth().current_principal()
    if principal is None:
        raise AuthenticationError()
    if principal.role in ("agent", "admin"):
        staff = current_auth().db.session.get(StaffUser, principal.id)
        actor = Actor(id=principal.id, role=principal.role, name=staff.name if staff else principal.id)
    elif principal.role == "customer":
        actor = Actor(
            id=principal.id,
            role="customer",
            email=principal.email or "",
            name=principal.email or principal.id,
            tier=_claimed_tier(principal),
        )
    elif principal.role == "service" and request.headers.get(ON_BEHALF_HEADER):
        actor = _acting_customer()
    else:
        raise AuthorizationError("This needs a customer, agent or admin identity.")
    g.actor = actor
    return actor


def _claimed_tier(principal: Principal) -> str | None:
    if principal.tier is None or principal.tier in TIERS:
        return principal.tier
    log.warning(
        "customer %s: tier %r is not one of %s; treated as no tier", principal.id, principal.tier, ", ".join(TIERS)
    )
    return None


def _acting_customer() -> Actor:
    customer_id = request.headers[ON_BEHALF_HEADER].strip()
    tier = request.headers.get(TIER_HEADER)
    errors = {}
    if not customer_id or len(customer_id) > 120:
        errors[ON_BEHALF_HEADER] = "a customer id of 1 to 120 characters"
    if tier is not None and tier not in TIERS:
        errors[TIER_HEADER] = unknown_tier_message()
    if errors:
        raise ValidationError(errors)
    return Actor(
        id=customer_id,
        role="customer",
        name=request.headers.get("X-Customer-Name", customer_id)[:200],
        email=request.headers.get("X-Customer-Email", "")[:254],
        tier=tier,
    )


def require_staff() -> Actor:
    actor = current_actor()
    if not actor.is_staff:
        raise AuthorizationError("This needs the role agent or admin.")
    return actor


def require_admin() -> Actor:
    actor = current_actor()
    if actor.role != "admin":
        raise AuthorizationError("This needs the role admin.")
    return actor


def _checked_first(check: Callable[[], Actor]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A view decorator running `check` before the view, and so before its body is validated: a caller
    without the right is told so (401/403) without learning what a valid body looks like."""

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R:
            check()
            return view(*args, **kwargs)

        return checked

    return decorator


signed_in = _checked_first(current_actor)
staff_only = _checked_first(require_staff)
admin_only = _checked_first(require_admin)
