"""One behaviour suite for the response cache's stores: memory, and Redis in every topology (one server,
Sentinel, a 3-master Cluster: the scripts' keys share a hash tag, the tag sets and index live elsewhere)."""

from __future__ import annotations

import time

import pytest

from ratelimit_proxy.cache_store import CacheStore, Entry, MemoryCacheStore, RedisCacheStore
from tests.conftest import TOPOLOGIES, redis_under_test


@pytest.fixture(params=["memory", *[pytest.param(t, marks=pytest.mark.integration) for t in TOPOLOGIES]])
def store(request: pytest.FixtureRequest) -> CacheStore:
    if request.param == "memory":
        return MemoryCacheStore(max_entries=3, max_variants=2)
    return RedisCacheStore(redis_under_test(request, request.param).client(), max_entries=3, max_variants=2)


def entry(body: bytes = b"{}", tags: tuple[str, ...] = (), vary: str = "") -> Entry:
    headers = [("Content-Type", "application/json"), ("Cache-Control", "max-age=60")]
    if vary:
        headers.append(("Vary", vary))
    return Entry(200, "OK", tuple(headers), body, time.time(), 0.0, 60.0, tags)


def test_store_then_lookup_finds_the_same_entry(store: CacheStore) -> None:
    stored = entry(b"\x00binary\xff body")
    store.store("k1", "anon", [], {}, stored, "/a", 60)
    assert store.lookup("k1", "anon", {}).entry == stored
    assert store.lookup("k1", "auth", {}).entry is None  # the other partition is another cache


def test_variants_follow_the_varied_fields_normalised(store: CacheStore) -> None:
    json_entry, html_entry = entry(b"json", vary="Accept"), entry(b"html", vary="Accept")
    store.store("k1", "anon", ["accept"], {"accept": "application/json"}, json_entry, "/a", 60)
    store.store("k1", "anon", ["accept"], {"accept": "text/html"}, html_entry, "/a", 60)
    assert store.lookup("k1", "anon", {"accept": " application/json "}).entry == json_entry
    assert store.lookup("k1", "anon", {"accept": "text/html", "x-other": "1"}).entry == html_entry
    assert store.lookup("k1", "anon", {"accept": "image/png"}).entry is None


def test_a_full_partition_starts_again(store: CacheStore) -> None:
    for value in ("a", "b", "c"):  # max_variants=2
        store.store("k1", "anon", ["accept"], {"accept": value}, entry(value.encode()), "/a", 60)
    assert store.lookup("k1", "anon", {"accept": "c"}).entry is not None
    assert store.lookup("k1", "anon", {"accept": "a"}).entry is None


def test_fill_lock_goes_to_one_owner_until_released(store: CacheStore) -> None:
    first = store.lookup("k1", "anon", {}, owner="one", lease_ms=5000)
    second = store.lookup("k1", "anon", {}, owner="two", lease_ms=5000)
    assert (first.locked_by_us, second.locked_by_us, second.locked) == (True, False, True)
    store.unlock("k1", "two")  # not the holder: nothing happens
    assert store.lookup("k1", "anon", {}).locked
    store.unlock("k1", "one")
    assert not store.lookup("k1", "anon", {}).locked


def test_fill_lock_lease_runs_out(store: CacheStore) -> None:
    assert store.lookup("k1", "anon", {}, owner="one", lease_ms=50).locked_by_us
    time.sleep(0.2)
    assert store.lookup("k1", "anon", {}, owner="two", lease_ms=50).locked_by_us


def test_purge_url_drops_every_variant_and_bumps_the_generation(store: CacheStore) -> None:
    store.store("k1", "anon", [], {}, entry(), "/a", 60)
    store.store("k1", "auth", [], {}, entry(), "/a", 60)
    before = store.generation()
    assert store.purge_url("k1")
    assert store.lookup("k1", "anon", {}).entry is None and store.lookup("k1", "auth", {}).entry is None
    assert store.generation() > before
    assert not store.purge_url("k1")


def test_purge_tag_drops_the_tagged_urls_and_names_them(store: CacheStore) -> None:
    store.store("k1", "anon", [], {}, entry(tags=("users", "all")), "/users", 60)
    store.store("k2", "anon", [], {}, entry(tags=("all",)), "/plans", 60)
    assert store.purge_tag("users") == ["/users"]
    assert store.lookup("k1", "anon", {}).entry is None
    assert store.lookup("k2", "anon", {}).entry is not None
    assert sorted(store.purge_tag("all")) == ["/plans"]  # k1 is gone already
    assert store.purge_tag("nothing") == []


def test_entries_expire_after_their_keep_time(store: CacheStore) -> None:
    store.store("k1", "anon", [], {}, entry(), "/a", 0.1)
    time.sleep(0.3)
    assert store.lookup("k1", "anon", {}).entry is None


def test_total_bound_evicts_the_entries_closest_to_expiry(store: CacheStore) -> None:
    for i, keep in enumerate([50, 10, 60, 70]):  # max_entries=3: k1 (10 s) goes
        store.store(f"k{i}", "anon", [], {}, entry(), f"/{i}", keep)
    assert store.lookup("k1", "anon", {}).entry is None
    assert all(store.lookup(f"k{i}", "anon", {}).entry is not None for i in (0, 2, 3))


def test_storing_with_the_fill_locks_owner_releases_the_lock(store: CacheStore) -> None:
    assert store.lookup("k1", "anon", {}, owner="one", lease_ms=5000).locked_by_us
    store.store("k1", "anon", [], {}, entry(), "/a", 60, owner="other")
    assert store.lookup("k1", "auth", {}).locked  # another owner's store leaves the lock alone
    store.store("k1", "anon", [], {}, entry(), "/a", 60, owner="one")
    assert not store.lookup("k1", "auth", {}).locked


def test_a_store_overlapping_a_purge_keeps_nothing(store: CacheStore) -> None:
    """A fill reads the generation before it asks the origin; a purge before its store lands (here a tag
    purge that found the URL not yet in the tag set) leaves nothing stored, the tag set included."""
    before = store.generation()
    assert store.purge_tag("users") == []
    assert store.store("k1", "anon", [], {}, entry(tags=("users",)), "/users", 60, generation=before) is False
    assert store.lookup("k1", "anon", {}).entry is None
    assert store.purge_tag("users") == []
    assert store.store("k1", "anon", [], {}, entry(tags=("users",)), "/users", 60, generation=store.generation())
    assert store.lookup("k1", "anon", {}).entry is not None


def test_lock_on_a_stored_url_goes_to_one_owner_until_released(store: CacheStore) -> None:
    """A revalidation's lock: the entry is there, so lookup does not lock; lock() does."""
    store.store("k1", "anon", [], {}, entry(), "/a", 60)
    assert store.lock("k1", "one", 5000)
    assert not store.lock("k1", "two", 5000)
    store.unlock("k1", "two")  # not its lock: nothing happens
    assert not store.lock("k1", "two", 5000)
    store.unlock("k1", "one")
    assert store.lock("k1", "two", 50)
    time.sleep(0.2)
    assert store.lock("k1", "three", 50)  # the lease ran out
