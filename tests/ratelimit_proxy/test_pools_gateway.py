"""Colours on the data path: per-colour metrics, the weights a request sees, and a retry that stays on its
colour (scripted upstreams standing for blue and green, the real gateway and Redis)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from ratelimit_proxy.app import create_app
from ratelimit_proxy.cache import LocalLayer, partition_of
from ratelimit_proxy.cache_store import Entry
from ratelimit_proxy.settings import CacheRouteSettings, CacheSettings, PoolSettings, ProxySettings, UpstreamSettings
from ratelimit_proxy.upstreams import sticky_colour
from tests.ratelimit_proxy.conftest import Script, ScriptedServer, ok

# The test client's address is 127.0.0.1: sticky point 3889 of 10 000, so blue at 50/50 (tests/vectors/pools).


def colours(blue: ScriptedServer, green: ScriptedServer, blue_weight: int, green_weight: int) -> UpstreamSettings:
    return UpstreamSettings(
        read_timeout_seconds=2.0,
        pools=[PoolSettings("blue", blue.url, blue_weight), PoolSettings("green", green.url, green_weight)],
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_gateway_counts_requests_errors_and_latency_per_colour(
    serve: Callable[[Script], ScriptedServer], settings_for: Callable[..., ProxySettings]
) -> None:
    blue = serve(lambda n, head: (ok(), False))
    green = serve(lambda n, head: (b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", False))
    registry = CollectorRegistry()
    app = create_app(settings_for(upstream=colours(blue, green, 0, 100)), registry=registry)
    pools = app.extensions["ratelimit_proxy"].pools
    try:
        client = app.test_client()
        assert client.get("/a").status_code == 503
        pools.write({"blue": 100, "green": 0})  # this replica's own write; others hear it on rl:pools:changes
        assert client.get("/b").status_code == 200
    finally:
        app.extensions["ratelimit_proxy"].close()
    assert sample(registry, "ratelimit_pool_requests_total", colour="green", status_class="5xx") == 1
    assert sample(registry, "ratelimit_pool_errors_total", colour="green") == 1
    assert sample(registry, "ratelimit_pool_requests_total", colour="blue", status_class="2xx") == 1
    assert sample(registry, "ratelimit_pool_errors_total", colour="blue") == 0
    assert sample(registry, "ratelimit_pool_duration_seconds_count", colour="blue") == 1
    assert len(blue.requests) == 1 and len(green.requests) == 1


def test_gateway_retry_of_an_idempotent_request_stays_on_its_colour(
    serve: Callable[[Script], ScriptedServer], settings_for: Callable[..., ProxySettings]
) -> None:
    """Blue closes its reused connection as the second request arrives: the one retry goes to blue again,
    never to green, although green is configured and weighted."""

    def flaky(n: int, head: bytes) -> tuple[bytes, bool]:
        return (b"", True) if n == 2 else (ok(b"blue %d" % n), False)

    blue, green = serve(flaky), serve(lambda n, head: (ok(b"green"), False))
    app = create_app(settings_for(upstream=colours(blue, green, 50, 50)), registry=CollectorRegistry())
    try:
        client = app.test_client()
        assert client.get("/one").data == b"blue 1"
        assert client.get("/two").data == b"blue 3"  # request 2 died unanswered on blue; its retry is blue's 3rd
    finally:
        app.extensions["ratelimit_proxy"].close()
    assert green.requests == []


def test_gateway_without_pools_has_one_default_colour_as_before(
    upstream: Any, settings_for: Callable[..., ProxySettings]
) -> None:
    registry = CollectorRegistry()
    app = create_app(settings_for(), registry=registry)
    try:
        assert app.test_client().get("/api/v1/users").status_code == 200
    finally:
        app.extensions["ratelimit_proxy"].close()
    assert sample(registry, "ratelimit_pool_requests_total", colour="default", status_class="2xx") == 1


def caller_of(colour: str, weights: list[tuple[str, int]]) -> dict[str, str]:
    """A client address the sticky choice puts on ``colour`` at ``weights`` (the proxy's bucket is ``ip:<ip>``)."""
    ip = next(f"10.0.0.{i}" for i in range(1, 255) if sticky_colour(weights, f"ip:10.0.0.{i}") == colour)
    return {"REMOTE_ADDR": ip}


def test_cached_answer_of_one_colour_never_serves_a_caller_of_the_other_during_a_canary_or_after_it(
    serve: Callable[[Script], ScriptedServer], settings_for: Callable[..., ProxySettings]
) -> None:
    """Regression: entries were keyed by URL alone, so at 50/50 a caller sticky to green got blue's cached
    body (and after the switch to green, blue's entries still answered)."""
    public = b"Cache-Control: public, max-age=300\r\n"
    blue = serve(lambda n, head: (ok(b"blue answer", public), False))
    green = serve(lambda n, head: (ok(b"green answer", public), False))
    cache = CacheSettings(routes=[CacheRouteSettings(name="all", path="/*")])
    registry = CollectorRegistry()
    app = create_app(settings_for(upstream=colours(blue, green, 50, 50), cache=cache), registry=registry)
    pools = app.extensions["ratelimit_proxy"].pools
    half = [("blue", 50), ("green", 50)]
    on_blue, on_green = caller_of("blue", half), caller_of("green", half)
    try:
        client = app.test_client()
        first = client.get("/catalog", environ_base=on_blue)
        assert (first.data, first.headers["X-Cache"]) == (b"blue answer", "MISS")
        assert client.get("/catalog", environ_base=on_blue).headers["X-Cache"] == "HIT"
        green_first = client.get("/catalog", environ_base=on_green)
        assert (green_first.data, green_first.headers["X-Cache"]) == (b"green answer", "MISS")
        green_again = client.get("/catalog", environ_base=on_green)
        assert (green_again.data, green_again.headers["X-Cache"]) == (b"green answer", "HIT")
        pools.write({"blue": 0, "green": 100})  # the full switch: blue's entry must answer nobody
        after = [client.get("/catalog", environ_base=caller).data for caller in (on_blue, on_green)]
    finally:
        app.extensions["ratelimit_proxy"].close()
    assert after == [b"green answer", b"green answer"]
    assert len(blue.requests) == 1 and len(green.requests) == 1
    # hits are counted under the colour whose answer they served, apart from the forwarded requests
    assert sample(registry, "ratelimit_pool_cached_answers_total", colour="blue", status_class="2xx") == 1
    assert sample(registry, "ratelimit_pool_cached_answers_total", colour="green", status_class="2xx") == 3
    assert sample(registry, "ratelimit_pool_requests_total", colour="green", status_class="2xx") == 1


def test_url_purge_drops_the_local_copies_of_every_colour() -> None:
    local = LocalLayer(1 << 20)
    entry = Entry(200, "OK", (), b"body", 0.0, 0.0, 60.0)
    for colour in ("blue", "green"):
        for authenticated in (False, True):
            local.put("k", partition_of(authenticated, colour), [], {}, entry)
    local.put("other", partition_of(False, "blue"), [], {}, entry)
    local.drop("k")
    left = [local.get("k", partition_of(a, c), {}) for c in ("blue", "green") for a in (False, True)]
    assert left == [None] * 4
    assert local.get("other", partition_of(False, "blue"), {}) == entry
    assert local.bytes == entry.size
