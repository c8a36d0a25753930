"""Generated dashboards: fresh, lint-clean, on the provisioned datasource, querying metrics that exist."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from grafana.__main__ import OUTPUT, main, rendered
from grafana.builder import DATASOURCE
from grafana.definitions import DASHBOARDS
from grafana.lint import dashboard_expressions, lint_dashboard, selectors
from tests.alerts.helpers import REPO, unknown_metrics

COMMITTED = {path.stem: json.loads(path.read_text()) for path in sorted(OUTPUT.glob("*.json"))}


def test_regenerating_the_dashboards_changes_nothing() -> None:
    assert {path.name for path in rendered()} == {path.name for path in OUTPUT.glob("*.json")}
    for path, text in rendered().items():
        assert path.read_text() == text, f"{path.name} is stale: run python -m grafana"
    assert main(["--check"]) == 0


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_is_lint_clean(name: str) -> None:
    assert lint_dashboard(COMMITTED[name]) == []


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_queries_only_metrics_of_the_contract_or_our_recording_rules(name: str) -> None:
    names = {metric for _, expr in dashboard_expressions(COMMITTED[name]) for metric, _ in selectors(expr)}
    assert unknown_metrics(names) == set()


def test_dashboard_uids_and_titles_are_unique() -> None:
    assert len({d["uid"] for d in COMMITTED.values()}) == len(COMMITTED)
    assert len({d["title"] for d in COMMITTED.values()}) == len(COMMITTED)


def test_overview_links_every_other_dashboard_and_the_desk_and_flags_uis() -> None:
    (navigation,) = [p for p in COMMITTED["overview"]["panels"] if p["type"] == "text"]
    content = navigation["options"]["content"]
    for other in COMMITTED.values():
        if other["uid"] != "vibelux-overview":
            assert f"/d/{other['uid']})" in content
    assert "http://127.0.0.1:8081" in content
    assert "http://127.0.0.1:8082" in content


def test_overview_service_health_grid_covers_status_uptime_response_time_and_error_rate() -> None:
    titles = [p["title"] for p in COMMITTED["overview"]["panels"]]
    for title in ("Status", "Uptime (period)", "Response time (last probe)", "Probe error rate (5m)"):
        assert title in titles


def test_provisioned_datasource_has_the_uid_the_dashboards_use() -> None:
    provisioning = REPO / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert {"type": datasource["type"], "uid": datasource["uid"]} == DATASOURCE
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "vibelux.yaml").read_text())["providers"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def first_query_panel(dashboard: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in dashboard["panels"] if p.get("targets"))


def set_expr(expr: str) -> Callable[[dict[str, Any]], None]:
    def mutate(dashboard: dict[str, Any]) -> None:
        first_query_panel(dashboard)["targets"][0]["expr"] = expr

    return mutate


def drop_unit(dashboard: dict[str, Any]) -> None:
    del first_query_panel(dashboard)["fieldConfig"]["defaults"]["unit"]


def named_datasource(dashboard: dict[str, Any]) -> None:
    first_query_panel(dashboard)["targets"][0]["datasource"] = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def overlap(dashboard: dict[str, Any]) -> None:
    first, second = [p for p in dashboard["panels"] if p.get("targets")][:2]
    second["gridPos"] = dict(first["gridPos"])


def untitled(dashboard: dict[str, Any]) -> None:
    first_query_panel(dashboard)["title"] = ""


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(drop_unit, "no unit", id="no-unit"),
        pytest.param(named_datasource, "datasource is not", id="datasource-variable"),
        pytest.param(
            set_expr("sum(http_requests_total)"), "counter http_requests_total used outside", id="bare-counter"
        ),
        pytest.param(set_expr("sum(rate(http_requests_total[5m]))"), "window [5m]", id="fixed-window"),
        pytest.param(set_expr("sum(rate(http_requests_total[$__rate_interval])"), "does not parse", id="unparsable"),
        pytest.param(overlap, "overlaps", id="overlap"),
        pytest.param(untitled, "no title", id="untitled"),
    ],
)
def test_linter_reports_each_kind_of_problem(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    dashboard = copy.deepcopy(COMMITTED["services"])
    mutate(dashboard)
    problems = lint_dashboard(dashboard)
    assert any(message in problem for problem in problems), problems


def test_counter_inside_rate_inside_an_aggregation_is_accepted() -> None:
    assert dict(selectors("sum by (le) (rate(x_total[$__rate_interval])) / sum(y_total)")) == {
        "x_total": True,
        "y_total": False,
    }
