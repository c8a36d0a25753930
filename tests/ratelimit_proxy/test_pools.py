"""Upstream pools: the sticky weighted choice (JSON vectors), its one-way movement when weights shift,
weights shared between replicas through a real Redis, and the config checks of upstream.pools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from ratelimit_proxy.config import validate
from ratelimit_proxy.settings import PoolSettings, ProxySettings, UpstreamSettings
from ratelimit_proxy.upstreams import DEFAULT_POOL, Pools, sticky_colour, sticky_point
from service_kit.config import ConfigError, load_settings
from service_kit.redis_connect import connect
from tests.servers import wait_until

VECTORS = sorted((Path(__file__).parents[1] / "vectors" / "pools").glob("*.json"))
COLOURS = UpstreamSettings(
    pools=[PoolSettings("blue", "http://127.0.0.1:1", 100), PoolSettings("green", "http://127.0.0.1:2", 0)]
)


@pytest.mark.parametrize("vector", [pytest.param(p, id=p.stem) for p in VECTORS])
def test_sticky_colour_follows_vector(vector: Path) -> None:
    spec = json.loads(vector.read_text())
    weights = [(name, weight) for name, weight in spec["weights"]]
    for case in spec["cases"]:
        assert sticky_point(case["sticky"]) == case["point"], case["sticky"]
        assert sticky_colour(weights, case["sticky"]) == case["colour"], case["sticky"]


def test_vectors_are_found() -> None:
    assert len(VECTORS) >= 6


def test_sticky_colour_raising_the_canary_moves_callers_only_from_old_to_new() -> None:
    callers = [f"key:{i}" for i in range(5000)]
    before = {c: sticky_colour([("blue", 95), ("green", 5)], c) for c in callers}
    after = {c: sticky_colour([("blue", 75), ("green", 25)], c) for c in callers}
    assert not [c for c in callers if before[c] == "green" and after[c] == "blue"]
    moved = sum(1 for c in callers if before[c] == "blue" and after[c] == "green")
    assert 800 < moved < 1200  # about 20% of 5000
    back = {c: sticky_colour([("blue", 95), ("green", 5)], c) for c in callers}
    assert back == before  # the same weights give the same colours: sticky while the weights hold


def test_pools_without_config_is_one_default_pool_at_upstream_url() -> None:
    pools = Pools(UpstreamSettings(url="http://127.0.0.1:8000"), None, CollectorRegistry())
    assert pools.names == [DEFAULT_POOL]
    assert pools.pick("key:any").url == "http://127.0.0.1:8000"


def test_pools_weight_change_reaches_another_replica_through_redis(redis_url: str) -> None:
    """Two Pools on one Redis stand for two replicas: a write on one is picked up by the other's listener."""
    settings = ProxySettings().redis.__class__(url=redis_url)
    one = Pools(COLOURS, connect(settings, timeout_seconds=1.0, decode_responses=True), CollectorRegistry())
    other = Pools(COLOURS, connect(settings, timeout_seconds=1.0, decode_responses=True), CollectorRegistry(), 3600)
    other.listen(connect(settings, timeout_seconds=2.0, decode_responses=True))
    try:
        assert other.listener is not None
        other.listener.connected.wait(5)
        other.refresh()
        assert other.pick("key:alice").name == "blue"
        one.write({"blue": 0, "green": 100})
        wait_until(lambda: other.table.weights == {"blue": 0, "green": 100}, timeout=5)
        assert other.pick("key:alice").name == "green"
    finally:
        other.close()


@pytest.mark.parametrize(
    ("pools", "key"),
    [
        ([{"name": "Blue", "url": "http://a:1", "weight": 1}], "upstream.pools[0].name"),
        ([{"name": "blue", "url": "ftp://a", "weight": 1}], "upstream.pools[0].url"),
        ([{"name": "blue", "url": "http://a:1", "weight": -1}], "upstream.pools[0].weight"),
        ([{"name": "blue", "url": "http://a:1", "weight": 0}], "upstream.pools"),
        (
            [{"name": "blue", "url": "http://a:1", "weight": 1}, {"name": "blue", "url": "http://b:1", "weight": 1}],
            "upstream.pools[1].name",
        ),
        ([{"name": "blue", "url": "http://a:1", "weight": 1, "ready_path": "readyz"}], "upstream.pools[0].ready_path"),
    ],
)
def test_config_bad_pools_name_the_key_and_the_file(tmp_path: Path, pools: list[dict], key: str) -> None:
    path = tmp_path / "proxy.yml"
    path.write_text(yaml.safe_dump({"upstream": {"pools": pools}}))
    with pytest.raises(ConfigError) as caught:
        validate(load_settings(ProxySettings, path, "RATELIMIT_PROXY", {}), str(path))
    assert caught.value.key == key
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("release", "key"),
    [
        ({"steps": [50, 25, 100]}, "release.steps"),
        ({"steps": [5, 25]}, "release.steps"),
        ({"gate": {"smoke": [{"path": "api"}]}}, "release.gate.smoke[0].path"),
        ({"gate": {"smoke": [{"path": "/x", "method": "FETCH"}]}}, "release.gate.smoke[0].method"),
        ({"analysis": {"prometheus_url": "prometheus:9090"}}, "release.analysis.prometheus_url"),
        ({"analysis": {"interval_seconds": 60, "window_seconds": 30}}, "release.analysis.window_seconds"),
        ({"analysis": {"max_error_ratio": 5}}, "release.analysis.max_error_ratio"),
    ],
)
def test_config_bad_release_section_names_the_key_and_the_file(tmp_path: Path, release: dict, key: str) -> None:
    path = tmp_path / "proxy.yml"
    path.write_text(yaml.safe_dump({"release": release}))
    with pytest.raises(ConfigError) as caught:
        validate(load_settings(ProxySettings, path, "RATELIMIT_PROXY", {}), str(path))
    assert caught.value.key == key
    assert str(path) in str(caught.value)
