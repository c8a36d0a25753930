"""The desk's tiers are the platform's (service_kit.tiers): a tier is never shown as another one."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import jwt
import pytest
from alembic import command
from alembic.config import Config
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from service_kit.auth import create_token
from service_kit.db import make_engine
from service_kit.db import upgrade as upgrade_kit
from service_kit.settings import JWTSettings
from tests.service_kit.test_jwt import ISSUER, jwks_url, signing_key  # noqa: F401 - shared fixtures
from tests.tickets.conftest import Tokens, auth
from tickets_app.app import create_app
from tickets_app.cli import MIGRATIONS, migrate
from tickets_app.models import Base
from tickets_app.settings import TicketsSettings


def customer_token(app: Flask, tier: str | None) -> str:
    with app.extensions["database"].new_session() as session:
        plain, _ = create_token(session, "customer", "customer", subject="cust-t", tier=tier)
        session.commit()
    return plain


def created_tier(client: FlaskClient, token: str, **headers: str) -> object:
    response = client.post("/api/v1/tickets", json={"subject": "s", "body": "b"}, headers=auth(token, **headers))
    assert response.status_code == 201, response.json
    return response.json["customer"]["tier"]


@pytest.mark.parametrize("tier", ["free", "startup", "professional", "enterprise"])
def test_a_customer_token_shows_its_own_tier(app: Flask, client: FlaskClient, tier: str) -> None:
    """Issue 12: a token saying professional was shown as free."""
    assert created_tier(client, customer_token(app, tier)) == tier


@pytest.mark.parametrize("tier", ["pro", "platinum", "internal"])
def test_a_jwt_tier_outside_the_plans_is_no_tier_and_logged(
    settings: TicketsSettings,
    jwks_url: str,  # noqa: F811 - the fixture imported above
    signing_key: rsa.RSAPrivateKey,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    tier: str,
) -> None:
    """The identity provider may name a plan before the desk knows it: served, as no tier, and said."""
    configured = dataclasses.replace(settings, jwt=JWTSettings(jwks_url=jwks_url, issuer=ISSUER, audience="desk"))
    claims = {"sub": "cust-t", "iss": ISSUER, "aud": "desk", "exp": int(time.time()) + 300, "tier": tier}
    token = jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": "key-1"})
    client = create_app(configured, start_sweeper=False).test_client()
    with caplog.at_level(logging.WARNING, logger="tickets_app.access"):
        assert created_tier(client, token) is None
    assert [record.getMessage() for record in caplog.records if record.name == "tickets_app.access"] == [
        f"customer cust-t: tier {tier!r} is not one of free, startup, professional, enterprise; treated as no tier"
    ]


def test_a_token_without_a_tier_is_no_tier(app: Flask, client: FlaskClient) -> None:
    assert created_tier(client, customer_token(app, None)) is None


def test_a_service_token_vouches_for_a_plan_tier_and_an_old_name_is_a_422(client: FlaskClient, tokens: Tokens) -> None:
    acting = {"X-On-Behalf-Of": "cust-9", "X-Customer-Tier": "professional"}
    assert created_tier(client, tokens.service, **acting) == "professional"
    refused = client.get("/api/v1/tickets", headers=auth(tokens.service, **{**acting, "X-Customer-Tier": "pro"}))
    assert refused.status_code == 422
    assert set(refused.json["error"]["details"]) == {"X-Customer-Tier"}


def test_staff_naming_an_old_tier_name_get_a_422(client: FlaskClient, tokens: Tokens) -> None:
    body = {"subject": "s", "body": "b", "customer": {"id": "cust-3", "tier": "starter"}}
    response = client.post("/api/v1/tickets", json=body, headers=auth(tokens.agent))
    assert response.status_code == 422
    assert set(response.json["error"]["details"]) == {"customer.tier"}


def test_a_policy_condition_on_an_old_tier_name_is_a_422(client: FlaskClient, tokens: Tokens) -> None:
    body = {"name": "p", "conditions": {"tier": ["enterprise", "pro"]}, "targets": {"resolution": 60}}
    response = client.post("/api/v1/sla/policies", json=body, headers=auth(tokens.admin))
    assert response.status_code == 422
    assert set(response.json["error"]["details"]) == {"conditions.tier[1]"}


def test_migration_renames_starter_and_pro_in_tickets_policies_and_tokens(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    upgrade_kit(engine)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes.update(connection=connection, version_table="alembic_version", metadata=Base.metadata)
        command.upgrade(config, "tickets_0003")
    with engine.begin() as connection:
        for number, tier in enumerate(("starter", "pro", "free", "enterprise", "internal"), start=1):
            connection.execute(
                text(
                    "INSERT INTO tickets (id, subject, status, priority, customer_id, customer_name, customer_email,"
                    " customer_tier, created_at, updated_at, sla_breached) VALUES "
                    "(:id, 's', 'open', 'low', 'c', 'C', '', :tier, '2026-11-24', '2026-11-24', 0)"
                ),
                {"id": number, "tier": tier},
            )
        connection.execute(
            text(
                "INSERT INTO sla_policies (id, position, name, definition) VALUES "
                """(1, 0, 'paid', '{"conditions": {"tier": ["starter", "pro", "enterprise"]}, """
                """"targets": {"resolution": 60}}')"""
            )
        )
        connection.execute(
            text(
                "INSERT INTO api_tokens (name, token_hash, prefix, role, tier, created_at) VALUES "
                "('a', 'h1', 'vbx_a', 'customer', 'pro', '2026-11-24'), "
                "('b', 'h2', 'vbx_b', 'customer', 'starter', '2026-11-24')"
            )
        )
    migrate(str(engine.url))
    with engine.connect() as connection:
        tiers = connection.execute(text("SELECT customer_tier FROM tickets ORDER BY id")).scalars().all()
        definition = connection.execute(text("SELECT definition FROM sla_policies")).scalar_one()
        tokens = connection.execute(text("SELECT tier FROM api_tokens ORDER BY name")).scalars().all()
    assert tiers == ["startup", "professional", "free", "enterprise", "internal"]
    assert '"tier": ["startup", "professional", "enterprise"]' in definition
    assert tokens == ["professional", "startup"]
    engine.dispose()
