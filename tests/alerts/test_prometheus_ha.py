"""The Prometheus HA pair (config/prometheus.ha.yml) writing to VictoriaMetrics, which deduplicates it.

Two real replicas run the shipped file (only targets, ports and timers changed: 1 s scrapes and evaluations)
and scrape the same fixture targets (tests/alerts/fixture_targets.py: fixed values and fixed rates); both
write to one VictoriaMetrics with -dedup.minScrapeInterval equal to the scrape interval, and alert to one
Alertmanager. At one instant T every dashboard query (as a stat panel's instant query and as a graph's range
query) and every rule expression must give, from VictoriaMetrics, the series and values replica 1 gives:
nothing doubled, no series differing only by `replica`. VictoriaMetrics' series carry the external label
`environment="local"`, which a Prometheus does not show on its own queries; it is set aside before comparing.

Windows: the replicas load the rule files with every range window shortened to RULE_WINDOW, and Grafana's
$__rate_interval and $__range become what a 1 s scrape interval and a short period give, so the ~12 s of
data cover every window. Over a window longer than the data, PromQL's rate() and MetricsQL's disagree by
design; test_over_a_window_longer_than_the_data_... pins that, and the other differences found, one each.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import yaml

from grafana.__main__ import OUTPUT
from grafana.lint import dashboard_expressions
from tests.alerts.fixture_targets import JOBS, FixtureTargets
from tests.alerts.helpers import REPO
from tests.alerts.stack import AlertingPrometheus
from tests.conftest import MINIMAL_ALERTMANAGER
from tests.servers import AlertmanagerServer, VictoriaMetricsServer, free_port, wait_until

HA_CONFIG = REPO / "config" / "prometheus.ha.yml"
RULE_FILES = sorted((REPO / "alert_rules").glob("*.yml"))
SCRAPE_INTERVAL = "1s"
RULE_WINDOW = "6s"
GRAPH_SPAN = 3  # seconds before T that graphs (range queries) are compared over, one point a second
# What Grafana substitutes with the datasource's scrape interval of 1 s: $__rate_interval is
# max(4 x scrape interval, $__interval + scrape interval); $__range is the dashboard's period, here 6 s.
GRAFANA_WINDOWS = {"$__rate_interval": "4s", "$__range": RULE_WINDOW, "$__interval": SCRAPE_INTERVAL}
# Rule expressions that are empty on both sides by design; every other query must return data.
EMPTY_BY_DESIGN = {
    "BusinessActiveUsersDrop": "compares with a week ago; the targets have seconds of history",
    "ReportSchedulesOverdue": "the fixture's schedules are on time (a gauge of 0), as a healthy service's are",
}
# Rule expressions whose series VictoriaMetrics names where Prometheus does not, and why that is acceptable.
NAME_KEPT = {
    "service:service_up:avg1d": "MetricsQL's avg_over_time keeps the metric name, PromQL's drops it; a recording"
    " rule replaces the name either way, and the dashboards aggregate it away",
}
# PromQL's rate() extrapolates to the window's edges, MetricsQL's does not: over the fixture's steady counters
# they agree but for rounding. A doubled value is 100% off.
RELATIVE_TOLERANCE = 0.02
DROP_REPLICA = [{"action": "labeldrop", "regex": "replica"}]


@pytest.mark.parametrize(
    ("single", "ha", "replicas", "managers", "storage"),
    [
        ("prometheus.yml", "prometheus.ha.yml", ["127.0.0.1:9090", "127.0.0.1:9091"],
         ["127.0.0.1:9093", "127.0.0.1:9095"], "127.0.0.1:8428"),
        ("prometheus.compose.yml", "prometheus.compose.ha.yml", ["prometheus:9090", "prometheus-2:9090"],
         ["alertmanager:9093", "alertmanager-2:9093"], "victoriametrics:8428"),
    ],
)  # fmt: skip
def test_ha_config_is_the_single_config_plus_replica_label_remote_write_and_relabelling(
    single: str, ha: str, replicas: list[str], managers: list[str], storage: str
) -> None:
    """The pair scrapes, evaluates and alerts exactly as the one Prometheus does; what it adds is listed here."""
    config = yaml.safe_load((REPO / "config" / ha).read_text())
    assert config["global"]["external_labels"].pop("replica") == "${PROMETHEUS_REPLICA}"
    assert config["alerting"].pop("alert_relabel_configs") == DROP_REPLICA
    assert config.pop("remote_write") == [
        {"url": f"http://{storage}/api/v1/write", "write_relabel_configs": DROP_REPLICA}
    ]
    expected = yaml.safe_load((REPO / "config" / single).read_text())
    # Both replicas by their own addresses, and both Alertmanager peers, to send to and to scrape.
    for job_name, listed in (("prometheus", replicas), ("alertmanager", managers)):
        (job,) = [job for job in config["scrape_configs"] if job["job_name"] == job_name]
        assert job["static_configs"][0]["targets"] == listed
        (single_job,) = [job for job in expected["scrape_configs"] if job["job_name"] == job_name]
        job["static_configs"] = single_job["static_configs"]
    (sending,) = config["alerting"]["alertmanagers"]
    assert sending["static_configs"][0]["targets"] == managers
    config["alerting"]["alertmanagers"] = expected["alerting"]["alertmanagers"]
    assert config == expected


def test_procfile_ha_replicas_differ_only_by_replica_port_and_data_and_write_where_victoriametrics_listens() -> None:
    lines = (REPO / "Procfile.ha").read_text().splitlines()
    processes = dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))
    assert set(processes) == {"prometheus", "prometheus-2", "victoriametrics", "alertmanager", "alertmanager-2"}
    first, second = (processes[name].split() for name in ("prometheus", "prometheus-2"))
    changed = [(a, b) for a, b in zip(first, second, strict=True) if a != b]
    assert changed == [
        ("PROMETHEUS_REPLICA=1;", "PROMETHEUS_REPLICA=2;"),
        ("--storage.tsdb.path=.run/prometheus", "--storage.tsdb.path=.run/prometheus-2"),
        ("--web.listen-address=127.0.0.1:9090", "--web.listen-address=127.0.0.1:9091"),
    ]
    assert "--config.file=config/prometheus.ha.yml" in first
    assert "--enable-feature=expand-external-labels" in first
    config = yaml.safe_load(HA_CONFIG.read_text())
    storage = processes["victoriametrics"].split()
    assert f"-dedup.minScrapeInterval={config['global']['scrape_interval']}" in storage
    listen = next(arg.split("=")[1] for arg in storage if arg.startswith("-httpListenAddr="))
    assert config["remote_write"][0]["url"] == f"http://{listen}/api/v1/write"


def procfile_replica_flags() -> list[str]:
    """The flags Procfile.ha starts a replica with, but for those every test Prometheus sets (paths, address)."""
    line = next(line for line in (REPO / "Procfile.ha").read_text().splitlines() if line.startswith("prometheus:"))
    own = {"--config.file", "--storage.tsdb.path", "--web.listen-address", "--web.external-url",
           "--web.enable-lifecycle", "--log.level"}  # fmt: skip
    return [arg for arg in line.split() if arg.startswith("--") and arg.split("=")[0] not in own]


class Replica(AlertingPrometheus):
    """One replica as Procfile.ha starts it: PROMETHEUS_REPLICA, expanded into the `replica` external label."""

    def __init__(self, replica: str) -> None:
        self.replica = replica
        super().__init__({})

    def command(self) -> list[str]:
        return [*super().command(), *procfile_replica_flags()]

    def environment(self) -> dict[str, str]:
        return {"PROMETHEUS_REPLICA": self.replica}

    def metric(self, name: str) -> float:
        """Sum of one of this replica's own metrics, from its /metrics."""
        body = requests.get(f"{self.url}/metrics", timeout=5).text
        return sum(float(line.split()[-1]) for line in body.splitlines() if re.match(rf"{name}(\{{| )", line))


def shortened(rules_text: str) -> str:
    """A rule file with every range window set to RULE_WINDOW (`for` and `offset` unchanged)."""
    return re.sub(r"\[\d+[smhdwy]\]", f"[{RULE_WINDOW}]", rules_text)


def replica_config(
    targets: FixtureTargets, dead: str, replicas: list[Replica], alertmanager: str, victoriametrics: str
) -> dict[str, Any]:
    """config/prometheus.ha.yml pointed at the test's servers, with 1 s timers; nothing else changed."""
    config: dict[str, Any] = yaml.safe_load(HA_CONFIG.read_text())
    config["global"].update(scrape_interval=SCRAPE_INTERVAL, scrape_timeout=SCRAPE_INTERVAL)
    config["global"]["evaluation_interval"] = SCRAPE_INTERVAL
    config["rule_files"] = ["*.rules.yml"]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    (remote_write,) = config["remote_write"]
    remote_write["url"] = f"{victoriametrics}/api/v1/write"
    remote_write["queue_config"] = {"batch_send_deadline": "200ms"}  # 5 s by default: the test would wait
    shipped_addresses = {"127.0.0.1:9090": replicas[0], "127.0.0.1:9091": replicas[1]}
    for job in config["scrape_configs"]:
        job.pop("scrape_interval", None)
        name = job["job_name"]
        (static,) = job["static_configs"]
        if name in JOBS:  # and a target that is down, for ExporterDown, ServiceTargetDown, FlagsServiceDown
            static["targets"] = [targets.address(name), dead]
        elif name == "prometheus":
            static["targets"] = [shipped_addresses[t].url.removeprefix("http://") for t in static["targets"]]
        else:
            assert name == "alertmanager", f"job {name} of {HA_CONFIG.name} has no fixture target"
            static["targets"] = [alertmanager]
    scraped = {job["job_name"] for job in config["scrape_configs"]}
    for name in JOBS.keys() - scraped:  # scraped where they run (the query exporter: with compose's PostgreSQL)
        target = {"targets": [targets.address(name)]}
        config["scrape_configs"].append({"job_name": name, "static_configs": [target]})
    return config


class HaPair:
    """The running pair, VictoriaMetrics, Alertmanager and targets, and the instant T every query is asked at."""

    def __init__(self) -> None:
        self.targets = FixtureTargets()
        self.victoriametrics = VictoriaMetricsServer(dedup_interval=SCRAPE_INTERVAL)
        self.alertmanager = AlertmanagerServer(MINIMAL_ALERTMANAGER)
        self.replicas = [Replica("1"), Replica("2")]
        self.servers = [self.victoriametrics, self.alertmanager, *self.replicas]
        config = replica_config(
            self.targets,
            f"127.0.0.1:{free_port()}",
            self.replicas,
            self.alertmanager.url.removeprefix("http://"),
            self.victoriametrics.url,
        )
        for replica in self.replicas:
            for path in RULE_FILES:
                (replica.workdir / f"{path.stem}.rules.yml").write_text(shortened(path.read_text()))
            (replica.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        # What the replicas add to what they write (a series' own label of the same name wins: the flags
        # service's `environment` is kept).
        self.external_labels = {k: v for k, v in config["global"]["external_labels"].items() if k != "replica"}
        self.expected_targets = sum(len(job["static_configs"][0]["targets"]) for job in config["scrape_configs"])
        with ThreadPoolExecutor() as pool:
            list(pool.map(lambda server: server.start(), self.servers))
        self.at = self._settle()

    def _settle(self) -> float:
        """Wait until both replicas scrape every target, then until every window of every point compared is
        covered by their samples (and two evaluations more), then until VictoriaMetrics has what both replicas
        sent up to that instant: that instant is T."""
        wait_until(lambda: all(self._scraping_all(r) for r in self.replicas), timeout=30, interval=0.2)
        # A whole second, half a second off the targets' stamps: no sample sits on a window's edge, which PromQL
        # includes in the window ([T-w, T]) and MetricsQL does not ((T-w, T]).
        at = float(math.ceil(time.time() + int(RULE_WINDOW.rstrip("s")) + GRAPH_SPAN + 2))
        self.wait_written(at, self.replicas)
        return at

    def wait_written(self, at: float, replicas: list[Replica]) -> None:
        """Until `at` has passed and VictoriaMetrics shows what `replicas` sent up to a second later."""
        time.sleep(max(0.0, at - time.time()))
        sent = "prometheus_remote_storage_queue_highest_sent_timestamp_seconds"
        wait_until(lambda: all(r.metric(sent) >= at + 1 for r in replicas), timeout=15, interval=0.2)
        wait_until(lambda: bool(instant(self.victoriametrics.url, f"timestamp(up) > {at}", at + 1)), timeout=5)

    def _scraping_all(self, replica: Replica) -> bool:
        targets = requests.get(f"{replica.url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
        return len(targets) == self.expected_targets and all(t["lastScrape"][:4] != "0001" for t in targets)

    def close(self) -> None:
        """The replicas first, together: one stopping with VictoriaMetrics gone retries its writes for a second."""
        with ThreadPoolExecutor() as pool:
            list(pool.map(lambda server: server.close(), self.replicas))
        self.alertmanager.close()
        self.victoriametrics.close()
        self.targets.close()


@pytest.fixture(scope="module")
def pair() -> Iterator[HaPair]:
    running = HaPair()
    yield running
    running.close()


def instant(url: str, expr: str, at: float) -> list[dict[str, Any]]:
    """An instant query at `at` (epoch seconds), through the Prometheus query API that both servers answer."""
    response = requests.get(f"{url}/api/v1/query", params={"query": expr, "time": f"{at:.3f}"}, timeout=10)
    body = response.json()
    assert body.get("status") == "success", f"{url}: {expr}: {body}"
    data = body["data"]
    if data["resultType"] == "scalar":  # e.g. time(): one unlabelled value
        return [{"metric": {}, "value": data["result"]}]
    result: list[dict[str, Any]] = data["result"]
    return result


Answer = dict[tuple[tuple[str, str], ...], float]


def answer(result: list[dict[str, Any]], added: dict[str, str] | None = None) -> Answer:
    """label set -> value, without the labels in `added` (name and value: external labels Prometheus added on
    the way out); label sets must stay unique (else two series would have become one)."""
    found: Answer = {}
    for series in result:
        labels = sorted_items({k: v for k, v in series["metric"].items() if (added or {}).get(k) != v})
        assert labels not in found, f"two series with labels {dict(labels)}"
        found[labels] = float(series["value"][1])
    return found


def sorted_items(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def differences(expected: Answer, got: Answer, tolerance: float = RELATIVE_TOLERANCE) -> list[str]:
    """What differs between two answers: missing or extra series, or values beyond `tolerance`."""
    found = [f"missing {dict(labels)}" for labels in expected.keys() - got.keys()]
    found += [f"extra {dict(labels)}" for labels in got.keys() - expected.keys()]
    for labels in expected.keys() & got.keys():
        want, have = expected[labels], got[labels]
        if not math.isclose(want, have, rel_tol=tolerance, abs_tol=1e-9):
            found.append(f"{dict(labels)}: replica {want}, VictoriaMetrics {have}")
    return found


def ranged(url: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    """A range query with a 1 s step, as a Grafana graph asks it, flattened into one instant-query series per
    point: the point's time is the label "@"."""
    params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1"}
    body = requests.get(f"{url}/api/v1/query_range", params=params, timeout=10).json()
    assert body.get("status") == "success", f"{url}: {expr}: {body}"
    return [
        {"metric": {**series["metric"], "@": f"{float(at):.3f}"}, "value": [at, value]}
        for series in body["data"]["result"]
        for at, value in series["values"]
    ]


def compare(
    pair: HaPair, expr: str, name_kept: bool = False, replica: int = 0, at: float | None = None, span: float = 0
) -> tuple[Answer, list[str]]:
    """(a replica's answer, how VictoriaMetrics' differs) for one expression, at T unless told; with a `span`,
    at every second over the span up to then. `name_kept`: VictoriaMetrics names the series where Prometheus
    does not (NAME_KEPT); it must, and the name is set aside."""
    at = pair.at if at is None else at

    def ask(url: str) -> list[dict[str, Any]]:
        return ranged(url, expr, at - span, at) if span else instant(url, expr, at)

    vm_result = ask(pair.victoriametrics.url)
    replicated = [s for s in vm_result if "replica" in s["metric"]]
    assert replicated == [], f"series with a replica label in VictoriaMetrics: {replicated}"
    if name_kept:
        assert all(s["metric"].pop("__name__", None) for s in vm_result), f"{expr}: no longer named on VictoriaMetrics"
    expected = answer(ask(pair.replicas[replica].url))
    return expected, differences(expected, answer(vm_result, added=pair.external_labels), tolerance(expr))


def tolerance(expr: str) -> float:
    """RELATIVE_TOLERANCE, and for a function over a window of n one-second scrapes 1/n more: a scrape that a
    loaded host delays moves a sample across the window's edge, and PromQL's extrapolation then covers one
    interval less than MetricsQL's count (seen in a clean-clone run: increase(...[4s]) of a steady counter,
    0.15 on the replica against 0.2). A doubled value is still 100% off."""
    windows = [int(seconds) for seconds in re.findall(r"\[(\d+)s\]", expr)]
    return RELATIVE_TOLERANCE + (1 / min(windows) if windows else 0.0)


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, expr) of every panel target of every dashboard, with Grafana's variables substituted."""
    for path in sorted(OUTPUT.glob("*.json")):
        dashboard = json.loads(path.read_text())
        listed = dashboard.get("templating", {}).get("list", [])
        variables = {f"${v['name']}": v["allValue"] for v in listed if v["type"] == "query"}
        for title, expr in dashboard_expressions(dashboard):
            for variable, value in {**GRAFANA_WINDOWS, **variables}.items():  # "All", as a dashboard opens
                expr = expr.replace(variable, value)
            yield f"{path.stem} / {title}", expr


def rule_expressions() -> Iterator[tuple[str, str]]:
    """(rule name, expr) of every alerting and recording rule, as the replicas run them (RULE_WINDOW)."""
    for path in RULE_FILES:
        for group in yaml.safe_load(shortened(path.read_text()))["groups"]:
            for rule in group["rules"]:
                yield rule.get("alert") or rule["record"], rule["expr"]


@pytest.mark.slow  # the pair, VictoriaMetrics and the targets start in its fixture (about 20 s)
@pytest.mark.integration
def test_every_dashboard_query_answers_the_same_from_victoriametrics_as_from_one_replica(pair: HaPair) -> None:
    queries = list(dashboard_queries())
    assert len(queries) >= 90
    empty, mismatches = [], []
    for where, expr in queries:
        for span in (0, GRAPH_SPAN):  # a stat panel's instant query, and a graph's last points
            expected, differ = compare(pair, expr, span=span)
            empty += [f"{where}: {expr}"] if not expected else []
            mismatches += [f"{where}: {expr} (span {span} s): {difference}" for difference in differ]
    assert empty == [], "\n".join(
        empty
    )  # the targets serve every series a panel reads: an empty panel would compare trivially
    assert mismatches == []


@pytest.mark.integration
def test_every_rule_expression_answers_the_same_from_victoriametrics_as_from_one_replica(pair: HaPair) -> None:
    rules = list(rule_expressions())
    assert len(rules) >= 55
    empty, mismatches = [], []
    for name, expr in rules:
        expected, differ = compare(pair, expr, name_kept=name in NAME_KEPT)
        empty += [name] if not expected else []
        mismatches += [f"{name}: {expr}: {difference}" for difference in differ]
    assert sorted(empty) == sorted(EMPTY_BY_DESIGN)
    assert mismatches == []


@pytest.mark.integration
def test_template_variables_offer_the_same_values_from_victoriametrics(pair: HaPair) -> None:
    """`label_values(metric, label)`, as Grafana asks it: /api/v1/label/<label>/values?match[]=metric."""
    queries = [
        variable["query"]["query"].replace("$job", ".+")  # chained on job: as Grafana asks it with job at All
        for path in sorted(OUTPUT.glob("*.json"))
        for variable in json.loads(path.read_text()).get("templating", {}).get("list", [])
        if variable["type"] == "query"
    ]
    assert queries
    for query in queries:
        match = re.fullmatch(r"label_values\((\w+(?:\{[^}]*\})?), (\w+)\)", query)
        assert match, f"not label_values(selector, label): {query}"
        metric, label = match.groups()
        params = {"match[]": metric, "start": f"{pair.at - 60}", "end": f"{pair.at}"}
        values = [
            requests.get(f"{url}/api/v1/label/{label}/values", params=params, timeout=5).json()["data"]
            for url in (pair.replicas[0].url, pair.victoriametrics.url)
        ]
        assert values[0] and values[0] == values[1], query


@pytest.mark.integration
def test_victoriametrics_keeps_one_copy_of_each_series_and_one_sample_per_scrape_interval(pair: HaPair) -> None:
    """Both replicas wrote everything, each with its own `replica` label, and VictoriaMetrics holds what one
    replica holds: the same series (no `replica`, `environment` added), and not twice the samples."""
    for replica in pair.replicas:
        assert replica.metric("prometheus_remote_storage_samples_total") > 1000
        assert replica.metric("prometheus_remote_storage_samples_failed_total") == 0
        federated = requests.get(f"{replica.url}/federate", params={"match[]": "node_load1"}, timeout=5).text
        assert f'replica="{replica.replica}"' in federated  # on the Prometheus side the label is there

    inventory = '{job=~"' + "|".join(JOBS) + '"} or {__name__=~".+:.+|ALERTS"}'
    series = [instant(url, inventory, pair.at) for url in (pair.replicas[0].url, pair.victoriametrics.url)]
    assert len(series[0]) > 300
    assert all(s["metric"].get("environment") in ("local", "production", "staging") for s in series[1])
    assert answer(series[1], added=pair.external_labels).keys() == answer(series[0]).keys()

    # Each replica scraped node_load1 once a second, so without deduplication VictoriaMetrics would count 10 samples
    # in 5 s (one series, both replicas' samples).
    counts = [
        float(instant(url, "count_over_time(node_load1[5s])", pair.at)[0]["value"][1])
        for url in (*(replica.url for replica in pair.replicas), pair.victoriametrics.url)
    ]
    assert counts == [5, 5, 5]
    body = requests.get(f"{pair.victoriametrics.url}/metrics", timeout=5).text
    dropped = [float(line.split()[-1]) for line in body.splitlines() if line.startswith("vm_deduplicated_samples")]
    assert sum(dropped) > 1000


@pytest.mark.integration
def test_alertmanager_holds_one_alert_per_label_set_although_both_replicas_send_each(pair: HaPair) -> None:
    """alert_relabel_configs drops `replica`: the pair's copies of an alert are one alert to Alertmanager."""
    wait_until(lambda: all(r.metric("prometheus_notifications_sent_total") > 0 for r in pair.replicas), timeout=15)
    firing = instant(pair.replicas[0].url, 'ALERTS{alertstate="firing"}', time.time())
    expected = [{k: v for k, v in s["metric"].items() if k not in ("__name__", "alertstate")} for s in firing]
    alerts = requests.get(f"{pair.alertmanager.url}/api/v2/alerts", timeout=5).json()
    received = [{k: v for k, v in a["labels"].items() if pair.external_labels.get(k) != v} for a in alerts]
    assert {"Watchdog", "SupportSlaBreached"} <= {labels["alertname"] for labels in expected}
    assert sorted(map(sorted_items, received)) == sorted(map(sorted_items, expected))  # once each, no `replica`


@pytest.mark.integration
def test_over_a_window_longer_than_the_data_victoriametrics_rates_what_it_has_and_prometheus_extrapolates(
    pair: HaPair,
) -> None:
    """The one difference by design. PromQL's rate() over [5m] of a series a few seconds old extrapolates its
    increase over at most half a scrape interval beyond the samples and divides by the whole 5 minutes;
    MetricsQL's divides the increase it has by the time it covers. The replicas' own 5m records (the shipped
    rules) therefore read low for the first 5 minutes of a series on Prometheus and right from VictoriaMetrics;
    once the window is covered both agree (as every comparison above, over covered windows, shows)."""
    expr = "sum(rate(ratelimit_requests_total[5m]))"  # 12.3 requests per second, by the targets' rates
    (prometheus,) = instant(pair.replicas[0].url, expr, pair.at)
    (victoriametrics,) = instant(pair.victoriametrics.url, expr, pair.at)
    (samples,) = instant(pair.replicas[0].url, "count_over_time(ratelimit_active_bans[5m])", pair.at)
    covered = float(samples["value"][1])  # seconds: one sample a second, and the extrapolated ends
    assert float(victoriametrics["value"][1]) == pytest.approx(12.3, rel=RELATIVE_TOLERANCE)
    assert float(prometheus["value"][1]) == pytest.approx(12.3 * covered / 300, rel=0.1)


@pytest.mark.integration
def test_a_ratio_of_zero_rates_is_nan_on_prometheus_and_no_series_on_victoriametrics(pair: HaPair) -> None:
    """MetricsQL leaves NaN out of its answers: where PromQL's 0/0 shows NaN, a VictoriaMetrics panel shows
    "No data". The fixture has no empty denominator so the comparisons above hold; a quiet service would."""
    expr = 'rate(business_query_errors_total{query="mrr"}[4s]) / rate(business_query_errors_total{query="mrr"}[4s])'
    (prometheus,) = instant(pair.replicas[0].url, expr, pair.at)
    assert math.isnan(float(prometheus["value"][1]))
    assert instant(pair.victoriametrics.url, expr, pair.at) == []


@pytest.mark.integration
def test_with_replica_1_stopped_victoriametrics_goes_on_from_replica_2_without_a_gap(pair: HaPair) -> None:
    """Last in this module: it stops replica 1 for good. Replica 1 writes no staleness markers on shutdown, so
    its series go on in VictoriaMetrics with replica 2's samples: every second of a window across the stop holds
    a sample, and every dashboard answers as replica 2 does."""
    first, second = pair.replicas
    first.stop()
    later = float(math.ceil(time.time()) + 3)  # (later - 5 s, later] spans the stop
    pair.wait_written(later, [second])
    (count,) = instant(pair.victoriametrics.url, "count_over_time(node_load1[5s])", later)
    assert float(count["value"][1]) == 5
    mismatches = []
    for where, expr in dashboard_queries():
        expected, differ = compare(pair, expr, replica=1, at=later)
        mismatches += [f"{where}: {expr}: {difference}" for difference in ([] if expected else ["empty"]) + differ]
    assert mismatches == []
