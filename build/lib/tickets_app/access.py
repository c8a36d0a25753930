"""Who the caller is, as the desk sees it: principals from the kit mapped to desk actors.

Customers come with a JWT from the identity provider (or a kit token with role customer), or through a
service token acting for a customer named in `X-On-Behalf-Of` (the integration vouches for the customer's
name, email and tier in `X-Customer-Name`, `X-Customer-Email`, `X-Customer-Tier`). Agents and admins use
tokens or the web UI's session.
"""

from __future__ import annotations

from flask import g, request

from service_kit.auth import current_auth
from service_kit.errors import AuthenticationError, AuthorizationError, ValidationError
from tickets_app.desk import Actor
from tickets_app.models import StaffUser
from tickets_app.workflow import TIERS

ON_BEHALF_HEADER = "X-On-Behalf-Of"


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
            tier=principal.tier if principal.tier in TIERS else "free",
        )
    elif principal.role == "service" and request.headers.get(ON_BEHALF_HEADER):
        actor = _acting_customer()
    else:
        raise AuthorizationError("This needs a customer, agent or admin identity.")
    g.actor = actor
    return actor


def _acting_customer() -> Actor:
    customer_id = request.headers[ON_BEHALF_HEADER].strip()
    tier = request.headers.get("X-Customer-Tier", "free")
    errors = {}
    if not customer_id or len(customer_id) > 120:
        errors[ON_BEHALF_HEADER] = "a customer id of 1 to 120 characters"
    if tier not in TIERS:
        errors["X-Customer-Tier"] = f"expected one of {', '.join(TIERS)}"
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
