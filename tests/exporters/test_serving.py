"""The exporters' HTTP surface: /metrics from the registry, /healthz, /readyz from first results, 404."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from exporters.serving import Exporter, exporter_app


def call(app: Any, path: str) -> tuple[str, bytes]:
    status: list[str] = []
    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""},
                        lambda code, headers: status.append(code)))  # fmt: skip
    return status[0], body


@pytest.mark.parametrize(("ready", "expected"), [(True, "200 OK"), (False, "503 Service Unavailable")])
def test_readyz_follows_the_exporters_first_results_while_healthz_always_answers(ready: bool, expected: str) -> None:
    app = exporter_app(Exporter(CollectorRegistry(), ready=lambda: ready), "health")
    assert call(app, "/readyz") == (
        expected,
        b'{"status": "%s", "service": "exporter-health"}' % (b"ok" if ready else b"fail"),
    )
    assert call(app, "/healthz") == ("200 OK", b'{"status": "ok", "service": "exporter-health"}')


def test_metrics_come_from_the_registry_and_other_paths_are_404() -> None:
    registry = CollectorRegistry()
    Counter("probe_test", "A test counter.", registry=registry).inc(3)
    app = exporter_app(Exporter(registry), "infra")
    status, body = call(app, "/metrics")
    assert status == "200 OK"
    assert b"probe_test_total 3.0" in body
    assert call(app, "/")[0] == "404 Not Found"
