"""One behaviour suite for the shared state (keys, bans, abuse events) on both stores."""

from __future__ import annotations

import time

import pytest

from ratelimit_proxy.key_ban_storage import Ban, KeyRecord, MemoryStore, RedisStore, Store
from tests.conftest import TOPOLOGIES, redis_under_test


@pytest.fixture(params=["memory", *[pytest.param(t, marks=pytest.mark.integration) for t in TOPOLOGIES]])
def store(request: pytest.FixtureRequest) -> Store:
    """Memory, and Redis in every topology (on a cluster no write may span slots)."""
    if request.param == "memory":
        return MemoryStore()
    return RedisStore(redis_under_test(request, request.param).client(decode_responses=True))


def test_keys_round_trip_and_list_in_creation_order(store: Store) -> None:
    first = KeyRecord("a" * 64, "free", "acme", "active", 1.0)
    second = KeyRecord("b" * 64, "startup", "globex", "active", 2.0)
    store.put_key(second)
    store.put_key(first)
    assert store.get_key("a" * 64) == first
    assert store.get_key("c" * 64) is None
    assert store.list_keys() == [first, second]
    store.put_key(KeyRecord("a" * 64, "free", "acme", "revoked", 1.0))
    assert store.get_key("a" * 64).status == "revoked"  # type: ignore[union-attr]


def test_a_deleted_key_is_gone_from_lookup_and_list(store: Store) -> None:
    store.put_key(KeyRecord("a" * 64, "free", "acme", "active", 1.0))
    assert store.delete_key("a" * 64) is True
    assert store.get_key("a" * 64) is None and store.list_keys() == []
    assert store.delete_key("a" * 64) is False


def test_bans_expire_and_can_be_removed(store: Store) -> None:
    now = time.time()
    store.add_ban(Ban("203.0.113.0/24", "manual", "manual", now, now + 60))
    store.add_ban(Ban("198.51.100.7/32", "scanning", "auto", now - 10, now - 1))
    assert [b.network for b in store.bans(now)] == ["203.0.113.0/24"]
    assert store.remove_ban("203.0.113.0/24")
    assert not store.remove_ban("203.0.113.0/24")
    assert store.bans(now) == []


def test_offenses_count_up_per_address(store: Store) -> None:
    assert [store.count_offense("192.0.2.1") for _ in range(3)] == [1, 2, 3]
    assert store.count_offense("192.0.2.2") == 1


def test_events_count_distinct_members_within_the_period(store: Store) -> None:
    assert store.record_event("scanning", "192.0.2.1", "/a", 100.0, 60) == 1
    assert store.record_event("scanning", "192.0.2.1", "/a", 101.0, 60) == 1  # same path again
    assert store.record_event("scanning", "192.0.2.1", "/b", 102.0, 60) == 2
    assert store.record_event("scanning", "192.0.2.9", "/a", 102.0, 60) == 1  # another address
    assert store.record_event("scanning", "192.0.2.1", "/c", 161.5, 60) == 2  # /a (101) has left the period
