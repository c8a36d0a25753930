"""SDK keys: one environment each, ``server`` (full snapshots) or ``client`` (OFREP, client-visible flags);
only the token's SHA-256 is stored."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, scoped_session

from flags_service.model import InvalidDocument
from flags_service.storage.errors import FlagNotFound
from flags_service.storage.tables import sdk_keys_table, utc_now
from service_kit.requests import hash_token

SdkKeyKind = Literal["server", "client"]
MAX_KEY_ID = 2**31 - 1  # the id column is INTEGER: a larger id names no key (PostgreSQL would refuse it)


@dataclass(frozen=True)
class SdkKey:
    id: int
    environment: str
    kind: str
    name: str


class SdkKeyStore:
    def __init__(self, session: Session | scoped_session[Session], environments: Iterable[str]) -> None:
        self.session = session
        self.environments = list(environments)

    def create_sdk_key(self, environment: str, kind: SdkKeyKind, name: str) -> tuple[SdkKey, str]:
        """A new key (the API's model checks kind and name); the token is returned once."""
        if environment not in self.environments:
            raise InvalidDocument({"environment": f"must be one of {', '.join(self.environments)}"})
        token = f"fsk_{kind[:3]}_{environment[:4]}_{secrets.token_urlsafe(24)}"
        key_id = self.session.execute(  # type: ignore[attr-defined]
            insert(sdk_keys_table).values(
                environment=environment, kind=kind, name=name, token_sha256=hash_token(token), created_at=utc_now()
            )
        ).inserted_primary_key[0]
        return SdkKey(int(key_id), environment, kind, name), token

    def find_sdk_key(self, token: str) -> SdkKey | None:
        row = self.session.execute(
            select(sdk_keys_table).where(
                sdk_keys_table.c.token_sha256 == hash_token(token), sdk_keys_table.c.revoked_at.is_(None)
            )
        ).first()
        return None if row is None else SdkKey(row.id, row.environment, row.kind, row.name)

    def list_sdk_keys(self) -> list[dict[str, Any]]:
        rows = self.session.execute(select(sdk_keys_table).order_by(sdk_keys_table.c.id))
        return [
            {
                "id": row.id,
                "environment": row.environment,
                "kind": row.kind,
                "name": row.name,
                "createdAt": row.created_at.isoformat(),
                "revoked": row.revoked_at is not None,
            }
            for row in rows
        ]

    def revoke_sdk_key(self, key_id: int) -> None:
        if key_id > MAX_KEY_ID:
            raise FlagNotFound(f"sdk key {key_id}")
        result = self.session.execute(
            update(sdk_keys_table).where(sdk_keys_table.c.id == key_id).values(revoked_at=utc_now())
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise FlagNotFound(f"sdk key {key_id}")
