"""The exporters' HTTP surface: /metrics from the registry, /healthz, /readyz from first results, the index at /,
404 elsewhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from exporters.infra.cli import DOCS
from exporters.serving import Exporter, exporter_app


def call(app: Any, path: str, accept: str = "") -> tuple[str, bytes]:
    status: list[str] = []
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": "", "HTTP_ACCEPT": accept}
    body = b"".join(app(environ, lambda code, headers: status.append(code)))
    return status[0], body


@pytest.mark.parametrize(("ready", "expected"), [(True, "200 OK"), (False, "503 Service Unavailable")])
def test_readyz_follows_the_exporters_first_results_while_healthz_always_answers(ready: bool, expected: str) -> None:
    app = exporter_app(Exporter(CollectorRegistry(), ready=lambda: ready), "health", DOCS)
    assert call(app, "/readyz") == (
        expected,
        b'{"status": "%s", "service": "exporter-health"}' % (b"ok" if ready else b"fail"),
    )
    assert call(app, "/healthz") == ("200 OK", b'{"status": "ok", "service": "exporter-health"}')


def test_metrics_come_from_the_registry_and_other_paths_are_404() -> None:
    registry = CollectorRegistry()
    Counter("probe_test", "A test counter.", registry=registry).inc(3)
    app = exporter_app(Exporter(registry), "infra", DOCS)
    status, body = call(app, "/metrics")
    assert status == "200 OK"
    assert b"probe_test_total 3.0" in body
    assert call(app, "/metrics/")[0] == "404 Not Found"
    assert call(app, "/index.html")[0] == "404 Not Found"


def test_index_links_metrics_and_health_as_json_or_as_a_page_for_a_browser() -> None:
    """Like node_exporter's landing page: `/` says what this is and links /metrics."""
    app = exporter_app(Exporter(CollectorRegistry()), "infra", DOCS)
    status, body = call(app, "/", "*/*")  # curl's
    document = json.loads(body)
    assert status == "200 OK"
    assert document["service"] == "exporter-infra"
    assert [link["href"] for link in document["links"]] == ["/metrics", "/healthz", "/readyz"]
    assert document["docs"]["runbook"] == "http://127.0.0.1:8081/runbooks/infrastructure.md"
    status, page = call(app, "/", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
    assert status == "200 OK"
    assert page.startswith(b"<!doctype html>") and b'<a href="/metrics">/metrics</a>' in page
