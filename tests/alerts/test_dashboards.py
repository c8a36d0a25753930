"""Generated dashboards: fresh, lint-clean, on Grafana's conventions, querying metrics that exist; and a
dashboard breaking each rule of grafana/lint.py is reported."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from grafana.__main__ import OUTPUT, main, rendered
from grafana.builder import ALERTMANAGER_NAME, ALERTMANAGER_UID, LINK_DEFAULTS, PROMETHEUS_NAME, PROMETHEUS_UID
from grafana.definitions import DASHBOARDS
from grafana.lint import (
    annotation_expressions,
    dashboard_expressions,
    dashboard_links,
    lint_dashboard,
    lint_dashboards,
    selectors,
)
from service_kit.urls import load_urls
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


def test_links_across_the_dashboards_point_at_dashboards_and_variables_that_exist() -> None:
    assert lint_dashboards(COMMITTED) == []


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_queries_only_metrics_of_the_contract_or_our_recording_rules(name: str) -> None:
    expressions = [*dashboard_expressions(COMMITTED[name]), *annotation_expressions(COMMITTED[name])]
    names = {metric for _, expr in expressions for metric, _ in selectors(expr)}
    assert unknown_metrics(names) == set()


def test_rendering_with_public_addresses_fills_the_link_variables_and_stays_lint_clean(tmp_path: Path) -> None:
    """What compose's grafana-dashboards run does: every dashboard opens the desk and flags where told."""
    assert (
        main(
            [
                "--out",
                str(tmp_path),
                "--link",
                "desk_url=https://desk.example.com/",
                "--link",
                "flags_url=https://flags.example.com",
            ]
        )
        == 0
    )
    out = {path.stem: json.loads(path.read_text()) for path in tmp_path.glob("*.json")}
    assert out.keys() == COMMITTED.keys()
    for dashboard in out.values():
        constants = {v["name"]: v["query"] for v in dashboard["templating"]["list"] if v["type"] == "constant"}
        assert constants == {"desk_url": "https://desk.example.com", "flags_url": "https://flags.example.com"}
    assert lint_dashboards(out) == []
    assert main(["--check"]) == 0  # the committed files keep make up's addresses
    assert {v["query"] for d in COMMITTED.values() for v in d["templating"]["list"] if v["type"] == "constant"} == set(
        LINK_DEFAULTS.values()
    )


def test_committed_link_addresses_are_the_shipped_public_urls() -> None:
    """The committed dashboards carry `make up`'s addresses: those of config/urls.yml, as the alerts' links do."""
    urls = load_urls(REPO / "config" / "urls.yml", environ={})
    assert {"desk_url": urls.desk, "flags_url": urls.flags} == LINK_DEFAULTS


def test_dashboard_uids_and_titles_are_unique() -> None:
    assert len({d["uid"] for d in COMMITTED.values()}) == len(COMMITTED)
    assert len({d["title"] for d in COMMITTED.values()}) == len(COMMITTED)


def test_overview_links_every_other_dashboard_and_the_desk_flags_and_alertmanager_without_a_host() -> None:
    (navigation,) = [p for p in COMMITTED["overview"]["panels"] if p["type"] == "text"]
    content = navigation["options"]["content"]
    for other in COMMITTED.values():
        if other["uid"] != "vibelux-overview":
            assert f"/d/{other['uid']}?${{__url_time_range}}&${{datasource:queryparam}})" in content
    assert "(${desk_url})" in content
    assert "(${flags_url}/openapi.json)" in content  # the flags service's one page; it has no UI
    assert f"(/alerting/groups?alertmanager={ALERTMANAGER_NAME})" in content
    assert "127.0.0.1" not in content and "http" not in content


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_dashboard_links_the_web_uis_and_marks_deploys_flag_changes_and_releases(name: str) -> None:
    dashboard = COMMITTED[name]
    assert [link["title"] for link in dashboard["links"]] == [
        "VibeLux dashboards",
        "Support desk",
        "Feature flags API",
        "Alertmanager",
    ]
    annotations = {a["name"]: a for a in dashboard["annotations"]["list"] if not a.get("builtIn")}
    assert sorted(annotations) == ["Deploys and restarts", "Flag changes", "Releases"]
    assert all(a["useValueForTime"] and a["target"]["expr"].endswith("* 1000") for a in annotations.values())
    assert "vibelux_start_time_seconds" in annotations["Deploys and restarts"]["target"]["expr"]
    assert "flags_last_change_timestamp_seconds" in annotations["Flag changes"]["target"]["expr"]
    assert "release_last_event_timestamp_seconds" in annotations["Releases"]["target"]["expr"]


@pytest.mark.parametrize(
    ("name", "scoped"),
    [
        ("overview", False),
        ("business", False),
        ("revenue", False),
        ("infrastructure", True),
        ("services", True),
        ("ratelimit", True),
        ("support", True),
        ("flags", True),
    ],
)
def test_job_and_instance_variables_where_the_series_come_from_scrape_targets(name: str, scoped: bool) -> None:
    variables = {v["name"]: v for v in COMMITTED[name]["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert ({"job", "instance"} <= variables.keys()) is scoped
    if scoped:
        assert variables["instance"]["query"]["query"].endswith('{job=~"$job"}, instance)')


def test_overview_health_grid_and_timeline_link_to_the_probes_of_that_dependency() -> None:
    panels = {p["title"]: p for p in COMMITTED["overview"]["panels"]}
    for title in (
        "Status",
        "Uptime (period)",
        "Response time (last probe)",
        "Probe error rate (5m)",
        "Up and down over the period",
    ):
        (link,) = panels[title]["fieldConfig"]["defaults"]["links"]
        assert link["url"] == (
            "/d/vibelux-services?${__url_time_range}&${datasource:queryparam}&var-probe=${__field.labels.service}"
        )
    timeline = panels["Up and down over the period"]
    assert timeline["type"] == "state-timeline"
    assert timeline["fieldConfig"]["defaults"]["mappings"][0]["options"]["0"]["text"] == "DOWN"
    assert panels["Alertmanager: alert groups"]["options"]["alertmanager"] == ALERTMANAGER_NAME
    services = {p["title"]: p for p in COMMITTED["services"]["panels"]}
    assert services["Up"]["type"] == "state-timeline"


def test_business_and_support_figures_on_the_overview_link_to_their_dashboards() -> None:
    targets = {
        p["title"]: [link["url"].split("?")[0] for link in p["fieldConfig"]["defaults"].get("links", [])]
        for p in COMMITTED["overview"]["panels"]
        if p["type"] == "stat"
    }
    assert targets["MRR"] == ["/d/vibelux-business"]
    assert targets["Open tickets"] == ["/d/vibelux-support"]


def test_overview_service_health_grid_covers_status_uptime_response_time_and_error_rate() -> None:
    titles = [p["title"] for p in COMMITTED["overview"]["panels"]]
    for title in ("Status", "Uptime (period)", "Response time (last probe)", "Probe error rate (5m)"):
        assert title in titles


def test_provisioned_datasources_have_the_uids_and_names_the_dashboards_use() -> None:
    provisioning = REPO / "grafana" / "provisioning"
    (prometheus,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert (prometheus["type"], prometheus["uid"], prometheus["name"]) == (
        "prometheus",
        PROMETHEUS_UID,
        PROMETHEUS_NAME,
    )
    assert prometheus["jsonData"]["alertmanagerUid"] == ALERTMANAGER_UID
    (alertmanager,) = yaml.safe_load((provisioning / "datasources" / "alertmanager.yaml").read_text())["datasources"]
    assert (alertmanager["type"], alertmanager["uid"], alertmanager["name"]) == (
        "alertmanager",
        ALERTMANAGER_UID,
        ALERTMANAGER_NAME,
    )
    assert alertmanager["jsonData"]["implementation"] == "prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "vibelux.yaml").read_text())["providers"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"grafana-dashboards:{provider['options']['path']}:ro" in mounts
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


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def drop_variable(name: str) -> Callable[[dict[str, Any]], None]:
    def mutate(dashboard: dict[str, Any]) -> None:
        dashboard["templating"]["list"] = [v for v in dashboard["templating"]["list"] if v["name"] != name]

    return mutate


def set_variable(name: str, **fields: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(dashboard: dict[str, Any]) -> None:
        variables(dashboard)[name].update(fields)

    return mutate


def add_unused_variable(dashboard: dict[str, Any]) -> None:
    unused = {**variables(dashboard)["job"], "name": "region", "label": "Region"}
    dashboard["templating"]["list"].append(unused)


def panel_titled(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in dashboard["panels"] if p["title"] == title)


def drop_health_links(dashboard: dict[str, Any]) -> None:
    del panel_titled(dashboard, "Status")["fieldConfig"]["defaults"]["links"]


def set_data_link(url: str) -> Callable[[dict[str, Any]], None]:
    def mutate(dashboard: dict[str, Any]) -> None:
        panel_titled(dashboard, "Status")["fieldConfig"]["defaults"]["links"] = [{"title": "go", "url": url}]

    return mutate


def set_header_link(url: str) -> Callable[[dict[str, Any]], None]:
    def mutate(dashboard: dict[str, Any]) -> None:
        next(link for link in dashboard["links"] if link["title"] == "Support desk")["url"] = url

    return mutate


def set_markdown(content: str) -> Callable[[dict[str, Any]], None]:
    def mutate(dashboard: dict[str, Any]) -> None:
        panel_titled(dashboard, "Go to")["options"]["content"] = content

    return mutate


def alert_groups_on(name: str) -> Callable[[dict[str, Any]], None]:
    def mutate(dashboard: dict[str, Any]) -> None:
        panel_titled(dashboard, "Alertmanager: alert groups")["options"]["alertmanager"] = name

    return mutate


def annotation_on_fixed_datasource(dashboard: dict[str, Any]) -> None:
    dashboard["annotations"]["list"][-1]["datasource"] = {"type": "prometheus", "uid": PROMETHEUS_UID}


KEEP = "${__url_time_range}&${datasource:queryparam}"


@pytest.mark.parametrize(
    ("name", "mutate", "message"),
    [
        pytest.param("services", drop_unit, "no unit", id="no-unit"),
        pytest.param("services", named_datasource, "datasource is not", id="datasource-not-the-variable"),
        pytest.param(
            "services",
            set_expr('sum(http_requests_total{job=~"$job", instance=~"$instance"})'),
            "counter http_requests_total used outside",
            id="bare-counter",
        ),
        pytest.param("services", set_expr("sum(rate(http_requests_total[5m]))"), "window [5m]", id="fixed-window"),
        pytest.param(
            "services", set_expr("sum(rate(http_requests_total[$__rate_interval])"), "does not parse", id="unparsable"
        ),
        pytest.param("services", overlap, "overlaps", id="overlap"),
        pytest.param("services", untitled, "no title", id="untitled"),
        # the datasource convention
        pytest.param("support", drop_variable("datasource"), "no $datasource variable", id="no-datasource-variable"),
        pytest.param(
            "support",
            set_variable("datasource", current={"text": "Other", "value": "other"}),
            "should default to the provisioned uid",
            id="datasource-default-not-provisioned",
        ),
        pytest.param(
            "overview",
            annotation_on_fixed_datasource,
            "annotation 'Releases': datasource is not",
            id="annotation-datasource",
        ),
        pytest.param("overview", alert_groups_on("other"), "provisioned Alertmanager", id="alert-groups-elsewhere"),
        # job and instance
        pytest.param("ratelimit", drop_variable("job"), "uses $job, which is not a variable", id="job-used-undeclared"),
        pytest.param("ratelimit", drop_variable("instance"), "declares $job without $instance", id="job-alone"),
        pytest.param(
            "ratelimit",
            set_expr("sum(rate(ratelimit_requests_total[$__rate_interval]))"),
            'does not follow job=~"$job", instance=~"$instance"',
            id="series-ignores-job-and-instance",
        ),
        pytest.param(
            "ratelimit",
            set_expr('sum(rate(ratelimit_requests_total{job=~"$job"}[$__rate_interval]))'),
            'does not follow instance=~"$instance"',
            id="series-ignores-instance",
        ),
        pytest.param("ratelimit", set_variable("instance", allValue=".*"), "allValue should be", id="all-value"),
        pytest.param("ratelimit", set_variable("job", multi=False), "multi should be", id="single-select"),
        pytest.param(
            "ratelimit", set_variable("job", query={"query": "up", "refId": "v"}), "not label_values", id="raw-query"
        ),
        pytest.param("ratelimit", add_unused_variable, "$region: declared but never used", id="unused-variable"),
        # data links on the health panels
        pytest.param("overview", drop_health_links, "shows service health but has no data link", id="health-no-link"),
        pytest.param(
            "overview", set_data_link("/d/vibelux-services?var-probe=x"), "does not keep", id="link-drops-time-range"
        ),
        # no hosts in links
        pytest.param(
            "overview",
            set_data_link(f"http://127.0.0.1:3000/d/vibelux-services?{KEEP}"),
            "names a host",
            id="data-link-host",
        ),
        pytest.param("overview", set_header_link("http://127.0.0.1:8081"), "names a host", id="header-link-host"),
        pytest.param(
            "overview", set_markdown("[Alertmanager](//am.example.com:9093)"), "names a host", id="markdown-host"
        ),
        pytest.param(
            "overview", set_header_link("desk.example.com"), "should be a path on Grafana", id="link-not-a-path"
        ),
        pytest.param(
            "overview", set_header_link("${grafana_url}/x"), "uses $grafana_url, which is not", id="unknown-constant"
        ),
    ],
)
def test_linter_reports_each_kind_of_problem(name: str, mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    dashboard = copy.deepcopy(COMMITTED[name])
    mutate(dashboard)
    problems = lint_dashboard(dashboard)
    assert any(message in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param(
            f"/d/vibelux-nowhere?{KEEP}", "links to dashboard vibelux-nowhere, which does not exist", id="uid"
        ),
        pytest.param(f"/d/vibelux-services?{KEEP}&var-region=eu", "sets var-region, which", id="variable"),
    ],
)
def test_linter_reports_links_to_dashboards_or_variables_that_do_not_exist(url: str, message: str) -> None:
    dashboards = copy.deepcopy(COMMITTED)
    set_data_link(url)(dashboards["overview"])
    assert lint_dashboard(dashboards["overview"]) == []  # only the set knows what exists
    problems = lint_dashboards(dashboards)
    assert any(message in problem for problem in problems), problems


def test_every_link_of_every_dashboard_is_a_grafana_path_or_a_filled_constant() -> None:
    for dashboard in COMMITTED.values():
        for where, url in dashboard_links(dashboard):
            assert url.startswith(("/d/", "/alerting/", "${desk_url}", "${flags_url}")), where


def test_counter_inside_rate_inside_an_aggregation_is_accepted() -> None:
    assert dict(selectors("sum by (le) (rate(x_total[$__rate_interval])) / sum(y_total)")) == {
        "x_total": True,
        "y_total": False,
    }


def test_revenue_grids_show_missing_cells_empty_and_mark_the_current_period_in_progress() -> None:
    """Absent samples (cells too young, months before the history) must not turn into 0 or "" on the way:
    every pivot fills gaps with null, and null is drawn as an empty, uncoloured cell."""
    panels = {p["title"]: p for p in COMMITTED["revenue"]["panels"]}
    grid = panels["Retention by signup week (cohort x week N)"]
    assert grid["type"] == "table" and [t["format"] for t in grid["targets"]] == ["table"]
    pivots = [t for p in panels.values() for t in p.get("transformations", []) if t["id"] == "groupingToMatrix"]
    assert len(pivots) == 2 and all(t["options"]["emptyValue"] == "null" for t in pivots)
    for title in (
        "Retention by signup week (cohort x week N)",
        "Revenue by month",
        "Trial-to-paid conversion by month",
    ):
        defaults = panels[title]["fieldConfig"]["defaults"]
        (empty,) = [m for m in defaults["mappings"] if m["type"] == "special"]
        assert empty["options"] == {"match": "null", "result": {"text": "", "color": "transparent", "index": 0}}
        assert "noValue" not in defaults
    row_labels = grid["fieldConfig"]["overrides"][0]["properties"]
    assert any(p["id"] == "mappings" and "in progress" in p["value"][0]["options"]["0"]["text"] for p in row_labels)
    for title in ("Revenue by month", "Trial-to-paid conversion by month"):
        status = next(o for o in panels[title]["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Status")
        assert status["properties"][0]["value"][0]["options"]["true"]["text"] == "in progress"
