from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]


def samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[frozenset(sample.labels.items())] = sample.value
    return found


def test_requests_are_labelled_by_route_template_not_raw_path(client: FlaskClient) -> None:
    for item_id in (1, 2, 77):
        client.get(f"/items/{item_id}")
    text = client.get("/metrics").get_data(as_text=True)
    counts = samples(text, "http_requests_total")
    routes = {dict(labels)["route"] for labels in counts}
    assert "/items/<int:item_id>" in routes
    assert not any(route.startswith("/items/1") or "77" in route for route in routes)
    ok = frozenset({("service", "example"), ("method", "GET"), ("route", "/items/<int:item_id>"), ("status", "200")})
    missing = ok - {("status", "200")} | {("status", "404")}
    assert counts[ok] == 2
    assert counts[frozenset(missing)] == 1


def test_unmatched_paths_share_one_label(client: FlaskClient) -> None:
    for path in ("/a", "/b/c", "/wp-admin"):
        client.get(path)
    routes = {
        dict(labels)["route"]
        for labels in samples(client.get("/metrics").get_data(as_text=True), "http_requests_total")
    }
    assert "<unmatched>" in routes
    assert not routes & {"/a", "/b/c", "/wp-admin"}


def test_build_info_start_time_and_latency_histogram_are_exposed(client: FlaskClient) -> None:
    client.get("/items/1")
    text = client.get("/metrics").get_data(as_text=True)
    (info_labels,) = samples(text, "vibelux_build_info")
    assert dict(info_labels)["service"] == "example"
    ((start_labels, started),) = samples(text, "vibelux_start_time_seconds").items()
    assert dict(start_labels) == {"service": "example"}
    assert time.time() - 600 < started <= time.time()
    buckets = samples(text, "http_request_duration_seconds_count")
    assert any(dict(labels)["route"] == "/items/<int:item_id>" for labels in buckets)


def test_healthz_and_readyz_name_each_check(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok", "service": "example"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"]["database"]["status"] == "ok"


def test_readyz_fails_when_a_dependency_fails(app: Flask, client: FlaskClient) -> None:
    def broken_redis() -> None:
        raise ConnectionError("redis://:hunter2@10.0.0.1:6379 refused")

    app.extensions["service_kit"].health.add_check("redis", broken_redis)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "fail"
    assert body["checks"]["redis"]["status"] == "fail"
    assert body["checks"]["database"]["status"] == "ok"


def test_readyz_answers_within_timeout_when_a_check_hangs(app: Flask, client: FlaskClient) -> None:
    health = app.extensions["service_kit"].health
    health.timeout_seconds = 0.3
    health.add_check("hung", lambda: time.sleep(5))
    started = time.perf_counter()
    response = client.get("/readyz")
    assert time.perf_counter() - started < 1.5
    assert response.get_json()["checks"]["hung"]["error"].startswith("timed out")


@pytest.mark.integration
def test_metrics_count_exactly_under_two_granian_workers(tmp_path: Path) -> None:
    """Every request is counted once however granian spreads them over its worker processes, and both
    workers report the one start of `serve` (a deploy annotation marks it once, not per worker)."""
    port = free_port()
    launched = time.time()
    env = {
        **os.environ,
        "EXAMPLE_SERVER__PORT": str(port),
        "EXAMPLE_SERVER__WORKERS": "2",
        "EXAMPLE_DATABASE__URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "VIBELUX_RUN_DIR": str(tmp_path / "run"),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.service_kit.example_service", "serve"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{base}/healthz", timeout=1).ok, timeout=60)
        # Fresh connections from several threads, until the kernel has given both workers some of them.
        files_dir = tmp_path / "run" / "prometheus-multiproc" / "example"
        sent = 0
        with ThreadPoolExecutor(max_workers=8) as pool:
            while sent < 3000 and len({f.name.rsplit("_", 1)[-1] for f in files_dir.glob("counter_*.db")}) < 2:
                batch = list(pool.map(lambda _: requests.get(f"{base}/items/1", timeout=5).status_code, range(100)))
                assert batch == [200] * 100
                sent += 100
        assert len({f.name.rsplit("_", 1)[-1] for f in files_dir.glob("counter_*.db")}) == 2, "both workers served"
        starts: set[float] = set()
        for _ in range(5):  # whichever worker answers the scrape, the total is the same
            text = requests.get(f"{base}/metrics", timeout=5).text
            counts = samples(text, "http_requests_total")
            key = frozenset(
                {
                    ("service", "example"),
                    ("method", "GET"),
                    ("route", "/items/<int:item_id>"),
                    ("status", "200"),
                }
            )
            assert counts[key] == sent
            assert len(samples(text, "vibelux_build_info")) == 1
            (started,) = samples(text, "vibelux_start_time_seconds").values()
            starts.add(started)
        (started,) = starts
        assert launched <= started <= time.time()
    finally:
        server.terminate()
        server.wait(15)
