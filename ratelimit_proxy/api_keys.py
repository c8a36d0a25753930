"""Who is calling: API keys of proxied clients, looked up by their SHA-256 (the kit's ``hash_token``).

Lookups on the request path are served from a small in-process cache (``key_cache_seconds``), so a proxied
request costs Redis one call, the limiter script; a revoked key reaches every replica at once through the
change announcements, or within those few seconds when one was missed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import replace

from ratelimit_proxy.key_ban_storage import KeyRecord, Store
from ratelimit_proxy.settings import StaticKey
from service_kit.errors import NotFoundError
from service_kit.requests import hash_token

KEY_PREFIX = "vbx_"


class UnknownKey(NotFoundError):
    """No stored key has this id (keys from config cannot be changed at run time): a 404 on the admin API."""


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyDirectory:
    """API keys by SHA-256: static development keys from config, the rest from the store, cached."""

    def __init__(
        self, store: Store, static: list[StaticKey], cache_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self._static = {k.sha256: KeyRecord(k.sha256, k.tier, k.owner, source="config") for k in static}
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._ttl = cache_seconds
        self._clock = clock
        self._generation = 0  # bumped by every forget(): a lookup that raced one does not cache

    def is_static(self, api_key: str) -> bool:
        return hash_token(api_key) in self._static

    def lookup(self, api_key: str) -> KeyRecord | None:
        """The key's record, or None when unknown (revoked keys come back with status revoked)."""
        digest = hash_token(api_key)
        if digest in self._static:
            return self._static[digest]
        now = self._clock()
        cached = self._cache.get(digest)
        if cached and cached[0] > now:
            return cached[1]
        generation = self._generation
        record = self.store.get_key(digest)
        if len(self._cache) > 100_000:
            self._cache.clear()
        if generation == self._generation:  # no change was announced while we read: safe to keep
            self._cache[digest] = (now + self._ttl, record)
        return record

    def forget(self, digest: str | None = None) -> None:
        """Drop one cached key (or all): the next request reads it from the store."""
        self._generation += 1
        if digest is None:
            self._cache.clear()
        else:
            self._cache.pop(digest, None)

    def create(self, tier: str, owner: str) -> tuple[str, KeyRecord]:
        api_key = new_api_key()
        record = KeyRecord(hash_token(api_key), tier, owner, "active", time.time())
        self.store.put_key(record)
        return api_key, record

    def update(self, digest: str, tier: str | None = None, status: str | None = None) -> tuple[KeyRecord, KeyRecord]:
        """Change tier or status; returns (before, after). UnknownKey for an unknown key or one from config."""
        before = self.store.get_key(digest)
        if before is None:
            raise UnknownKey(f"No stored key with id {digest}.")
        after = replace(before, tier=tier or before.tier, status=status or before.status)
        self.store.put_key(after)
        self.forget(digest)
        return before, after

    def delete(self, digest: str) -> KeyRecord:
        """Remove a stored key for good (its client gets 401 as for any unknown key); returns its record.
        UnknownKey for an unknown key or one from config."""
        before = self.store.get_key(digest)
        if before is None or not self.store.delete_key(digest):
            raise UnknownKey(f"No stored key with id {digest}.")
        self.forget(digest)
        return before

    def all(self) -> list[KeyRecord]:
        return list(self._static.values()) + self.store.list_keys()
