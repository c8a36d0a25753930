"""Demo data for `make up`, and customers signing in with an identity-provider JWT."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service_kit.settings import JWTSettings
from service_kit.tiers import TIERS
from tests.service_kit.test_jwt import ISSUER, jwks_url, signing_key  # noqa: F401 - shared fixtures
from tests.tickets.conftest import T0
from tickets_app.app import create_app
from tickets_app.demo import seed
from tickets_app.desk import Desk
from tickets_app.models import StaffUser, Ticket
from tickets_app.passwords import check_login
from tickets_app.settings import TicketsSettings


def test_demo_fills_every_state_once_and_resets_login(desk: Desk, session: Session) -> None:
    password = seed(session, desk, tickets=80, now=T0)
    statuses = dict(session.execute(select(Ticket.status, func.count()).group_by(Ticket.status)).all())
    assert set(statuses) == {"open", "in_progress", "waiting", "resolved", "closed"}
    tiers = set(session.scalars(select(Ticket.customer_tier)))
    assert tiers == set(TIERS)
    again = seed(session, desk, tickets=80, now=T0)
    assert session.scalar(select(func.count()).select_from(Ticket)) == 80
    ann = session.get(StaffUser, "ann")
    assert ann is not None
    assert check_login(ann, again)
    assert not check_login(ann, password)


def test_customer_with_jwt_sees_own_tier(
    settings: TicketsSettings,
    jwks_url: str,  # noqa: F811 - the fixture imported above
    signing_key: rsa.RSAPrivateKey,  # noqa: F811
) -> None:
    configured = dataclasses.replace(settings, jwt=JWTSettings(jwks_url=jwks_url, issuer=ISSUER, audience="desk"))
    app: Flask = create_app(configured, start_sweeper=False)
    claims: dict[str, Any] = {
        "sub": "user_77",
        "iss": ISSUER,
        "aud": "desk",
        "exp": int(time.time()) + 300,
        "tier": "professional",
        "email": "u77@example.com",
    }
    token = jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": "key-1"})
    client = app.test_client()
    created = client.post(
        "/api/v1/tickets", json={"subject": "s", "body": "b"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert created.status_code == 201
    assert created.json["customer"] == {
        "id": "user_77",
        "name": "u77@example.com",
        "email": "u77@example.com",
        "tier": "professional",
    }
    forged = jwt.encode(
        {**claims, "sub": "someone-else"},
        rsa.generate_private_key(65537, 2048),
        algorithm="RS256",
        headers={"kid": "key-1"},
    )
    assert client.get("/api/v1/tickets", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
