"""Scrape targets with known answers: every series the dashboards and alert rules read, per Prometheus job.

Each series has a value at start and a rate per second (counters grow, one filesystem fills up), so any two
scrapers of it at any moments agree on every rate, sum and quantile, and a doubled value stands out. The
values are chosen so that every alert's condition holds (ExporterDown and friends get a target that is down).

Samples are stamped with the next half second (x.5) after their scrape (an explicit timestamp) and valued at
that moment, so both replicas hand VictoriaMetrics the same samples, one a second, which it must deduplicate,
and a window or a step ending on a whole second holds the same samples on both sides. (A query sees a sample
once its time has come, so the newest one is under a second old, as with Prometheus's own stamps, and rate()
extrapolates as usual.) With Prometheus's
own stamps, the scrape's start, the replicas' samples fall at different offsets within the second;
deduplication keeps the later one of each second, so which replica's sample survives, and with it increase()
over a window, moves by up to a scrape interval's worth when their offsets straddle a second: real, but it
would make an exact comparison flaky.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Series:
    selector: str  # name{labels} as exposed
    value: float  # at start; "@-30" in a table is a moment: 30 s before the targets started
    per_second: float
    moment: bool

    def at(self, elapsed: float, started: float) -> float:
        return self.value + self.per_second * elapsed + (started if self.moment else 0.0)


def table(text: str) -> list[Series]:
    """Series from lines of `selector value [per_second]`, like promtool's input_series but by rate."""
    series = []
    for line in filter(str.strip, text.splitlines()):
        selector, value, *rate = line.split()
        moment = value.startswith("@")
        series.append(Series(selector, float(value.lstrip("@")), float(rate[0]) if rate else 0.0, moment))
    return series


def statement_histogram(service: str) -> str:
    """The kit's statement timer for one SELECT of ``service``: 25 a second, one in 25 over 0.1 s."""
    labels = f'service="{service}",database="default",fingerprint="5f2a9c01d3e7",statement_type="select"'
    buckets = "".join(
        f'db_statement_duration_seconds_bucket{{{labels},le="{le}"}} 0 {rate}\n'
        for le, rate in (("0.005", 20), ("0.1", 24), ("+Inf", 25))
    )
    return (
        f"{buckets}db_statement_duration_seconds_sum{{{labels}}} 0 0.4\n"
        f"db_statement_duration_seconds_count{{{labels}}} 0 25\n"
    )


def http_metrics(service: str) -> str:
    """A service's RED metrics: 9% of its requests answered 500, p99 over a second."""
    api = f'service="{service}",method="GET",route="/api/v1/items"'
    return f"""
http_requests_total{{service="{service}",method="GET",route="/healthz",status="200"}} 0 3
http_requests_total{{{api},status="200"}} 0 5
http_requests_total{{{api},status="500"}} 0 0.8
http_request_duration_seconds_bucket{{{api},le="0.1"}} 0 6
http_request_duration_seconds_bucket{{{api},le="0.5"}} 0 8
http_request_duration_seconds_bucket{{{api},le="2.5"}} 0 8.8
http_request_duration_seconds_bucket{{{api},le="+Inf"}} 0 8.8
http_request_duration_seconds_count{{{api}}} 0 8.8
vibelux_build_info{{service="{service}",version="1.4.0",python="3.11.2"}} 1
"""


def support_histogram(name: str) -> str:
    return "".join(
        f'{name}_bucket{{priority="{priority}",le="{le}"}} 0 {rate}\n'
        for priority in ("urgent", "normal")
        for le, rate in (("300", 0.1), ("3600", 0.3), ("14400", 0.35), ("+Inf", 0.4))
    )


# CPU 95% busy, memory 6% free, / 15% free and filling at 1 MB/s, 2% of eth0's packets in error.
INFRA = """
node_cpu_seconds_total{cpu="0",mode="idle"}    1000 0.04
node_cpu_seconds_total{cpu="0",mode="iowait"}  1000 0.01
node_cpu_seconds_total{cpu="0",mode="user"}    1000 0.9
node_cpu_seconds_total{cpu="0",mode="system"}  1000 0.05
node_cpu_seconds_total{cpu="1",mode="idle"}    2000 0.04
node_cpu_seconds_total{cpu="1",mode="iowait"}  2000 0.01
node_cpu_seconds_total{cpu="1",mode="user"}    2000 0.9
node_cpu_seconds_total{cpu="1",mode="system"}  2000 0.05
node_load1                                      2.5
node_memory_MemAvailable_bytes                  5e8
node_memory_MemTotal_bytes                      8e9
node_disk_read_bytes_total{device="sda"}        0 409600
node_disk_written_bytes_total{device="sda"}     0 204800
node_disk_io_time_seconds_total{device="sda"}   0 0.25
node_filesystem_avail_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"}      1.5e9 -1e6
node_filesystem_size_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"}       1e10
node_filesystem_avail_bytes{device="/dev/sda2",fstype="ext4",mountpoint="/boot"}  6e8
node_filesystem_size_bytes{device="/dev/sda2",fstype="ext4",mountpoint="/boot"}   1e9
node_network_receive_bytes_total{device="eth0"}     0 1e5
node_network_transmit_bytes_total{device="eth0"}    0 5e4
node_network_receive_packets_total{device="eth0"}   0 60
node_network_transmit_packets_total{device="eth0"}  0 40
node_network_receive_errs_total{device="eth0"}      0 1.5
node_network_transmit_errs_total{device="eth0"}     0 0.5
node_network_receive_bytes_total{device="lo"}       0 1e4
node_network_transmit_bytes_total{device="lo"}      0 1e4
node_network_receive_packets_total{device="lo"}     0 10
node_network_transmit_packets_total{device="lo"}    0 10
node_network_receive_errs_total{device="lo"}        0
node_network_transmit_errs_total{device="lo"}       0
vibelux_process_cpu_seconds_total{name="exporters",mode="user"}    0 0.3
vibelux_process_cpu_seconds_total{name="exporters",mode="system"}  0 0.1
vibelux_process_cpu_seconds_total{name="services",mode="user"}     0 0.5
vibelux_process_cpu_seconds_total{name="services",mode="system"}   0 0.2
vibelux_process_resident_memory_bytes{name="exporters"}  1.5e8
vibelux_process_resident_memory_bytes{name="services"}   4e8
vibelux_process_open_fds{name="exporters"}  40
vibelux_process_open_fds{name="services"}   120
vibelux_process_threads{name="exporters"}   12
vibelux_process_threads{name="services"}    30
vibelux_processes{name="exporters"}  3
vibelux_processes{name="services"}   5
"""

# redis down (its probes fail), ai degraded, the others healthy.
SERVICE_HEALTH = "".join(
    f"""
service_up{{service="{service}"}} {int(status != "down")}
service_status{{service="{service}",status="healthy"}} {int(status == "healthy")}
service_status{{service="{service}",status="degraded"}} {int(status == "degraded")}
service_status{{service="{service}",status="down"}} {int(status == "down")}
service_probe_duration_seconds{{service="{service}"}} {duration}
service_probe_results_total{{service="{service}",outcome="{outcome}"}} 0 2
service_last_success_timestamp_seconds{{service="{service}"}} @-{age}
"""
    for service, status, duration, outcome, age in (
        ("api", "healthy", 0.012, "success", 1),
        ("database", "healthy", 0.004, "success", 1),
        ("redis", "down", 0.5, "failure", 3600),
        ("ai", "degraded", 1.8, "degraded", 2),
        ("payments", "healthy", 0.2, "success", 1),
    )
)

# No sign-up in a day; MRR 7% below 30 days ago.
BUSINESS = """
business_users{tier="free"}      1200
business_users{tier="pro"}       300
business_users{tier="business"}  40
business_new_signups{window="1d"}   0
business_new_signups{window="7d"}   35
business_new_signups{window="30d"}  140
business_user_growth_ratio{window="7d"}   0.02
business_user_growth_ratio{window="30d"}  0.08
business_mrr_usd{tier="free"}      0
business_mrr_usd{tier="pro"}       6000
business_mrr_usd{tier="business"}  4000
business_mrr_change_30d_usd  -800
business_churned_subscriptions{window="7d"}   3
business_churned_subscriptions{window="30d"}  11
business_active_users{window="1d"}   420
business_active_users{window="7d"}   900
business_active_users{window="30d"}  1400
business_active_sessions  37
business_ai_requests{window="1d"}  5000
business_ai_requests{window="7d"}  30000
business_query_errors_total{query="users"}  0 0.1
business_query_errors_total{query="mrr"}    2
business_query_duration_seconds{query="users"}  0.02
business_query_duration_seconds{query="mrr"}    0.05
business_query_last_success_timestamp_seconds{query="users"}  @-30
business_query_last_success_timestamp_seconds{query="mrr"}    @-10
"""

# 12.3 requests/s: a third limited (3 of those 4/s from the over-limit cache), a seventh of the allowed ones
# 5xx; Redis erring, circuit open, bans rising.
RATELIMIT_PROXY = """
ratelimit_requests_total{tier="free",decision="allowed",status_class="2xx"}       0 4
ratelimit_requests_total{tier="free",decision="allowed",status_class="5xx"}       0 1
ratelimit_requests_total{tier="free",decision="limited",status_class="4xx"}       0 4
ratelimit_requests_total{tier="pro",decision="allowed",status_class="2xx"}        0 2
ratelimit_requests_total{tier="pro",decision="error",status_class="5xx"}          0 0.5
ratelimit_requests_total{tier="free",decision="blocked",status_class="4xx"}       0 0.5
ratelimit_requests_total{tier="free",decision="unauthorized",status_class="4xx"}  0 0.3
ratelimit_decision_duration_seconds_bucket{le="0.001"}  0 5
ratelimit_decision_duration_seconds_bucket{le="0.005"}  0 10
ratelimit_decision_duration_seconds_bucket{le="0.025"}  0 12
ratelimit_decision_duration_seconds_bucket{le="+Inf"}   0 12.3
ratelimit_decision_duration_seconds_count               0 12.3
ratelimit_upstream_duration_seconds_bucket{le="0.05"}   0 3
ratelimit_upstream_duration_seconds_bucket{le="0.25"}   0 6
ratelimit_upstream_duration_seconds_bucket{le="1"}      0 6.8
ratelimit_upstream_duration_seconds_bucket{le="+Inf"}   0 7
ratelimit_upstream_duration_seconds_count               0 7
ratelimit_blocked_requests_total{reason="banned"}    0 0.3
ratelimit_blocked_requests_total{reason="denylist"}  0 0.2
ratelimit_active_bans  3
ratelimit_bans_total{source="abuse"}  0 2.5
ratelimit_bans_total{source="admin"}  0 0.5
ratelimit_abuse_detections_total{rule="burst",mode="enforce"}  0 1
ratelimit_abuse_detections_total{rule="scan",mode="shadow"}    0 0.4
ratelimit_near_limit_total{tier="free",window="minute"}  0 1.5
ratelimit_redis_errors_total  0 0.5
ratelimit_circuit_open  1
ratelimit_local_refusals_total  0 3
ratelimit_leased_total  0 20
ratelimit_pool_requests_total{colour="blue",status_class="2xx"}   0 9
ratelimit_pool_requests_total{colour="green",status_class="2xx"}  0 0.9
ratelimit_pool_requests_total{colour="green",status_class="5xx"}  0 0.1
ratelimit_pool_errors_total{colour="blue"}   0 0.01
ratelimit_pool_errors_total{colour="green"}  0 0.1
ratelimit_pool_duration_seconds_bucket{colour="blue",le="0.05"}    0 8
ratelimit_pool_duration_seconds_bucket{colour="blue",le="+Inf"}    0 9
ratelimit_pool_duration_seconds_bucket{colour="green",le="0.05"}   0 0.5
ratelimit_pool_duration_seconds_bucket{colour="green",le="+Inf"}   0 1
release_traffic_weight{colour="blue"}   90
release_traffic_weight{colour="green"}  10
ratelimit_cache_requests_total{result="hit"}          0 6
ratelimit_cache_requests_total{result="miss"}         0 1
ratelimit_cache_requests_total{result="stale"}        0 0.5
ratelimit_cache_requests_total{result="revalidated"}  0 0.2
ratelimit_cache_requests_total{result="pass"}         0 1
ratelimit_cache_requests_total{result="bypass"}       0 0.1
ratelimit_cache_served_bytes_total                    0 4096
ratelimit_cache_not_stored_total{reason="no_lifetime"}  0 0.8
ratelimit_cache_not_stored_total{reason="too_large"}    0 0.1
ratelimit_cache_redis_errors_total                    0 0.05
ratelimit_cache_purges_total{kind="url"}              0 0.02
ratelimit_cache_purges_total{kind="tag"}              0 0.01
""" + http_metrics("ratelimit-proxy")

# Urgent tickets unassigned, SLAs being breached, 8 more tickets a second created than resolved.
TICKETS = (
    """
support_tickets_open{status="open",priority="urgent"}     3
support_tickets_open{status="open",priority="normal"}     20
support_tickets_open{status="pending",priority="normal"}  12
support_tickets_unassigned{priority="urgent"}  2
support_tickets_unassigned{priority="normal"}  5
support_tickets_at_risk{priority="urgent"}  1
support_tickets_at_risk{priority="normal"}  2
support_tickets_breached{priority="urgent"}  1
support_tickets_breached{priority="normal"}  0
support_sla_breaches_total{metric="first_response",priority="urgent"}  0 0.2
support_sla_breaches_total{metric="resolution",priority="normal"}      0 0.1
support_tickets_created_total{priority="urgent"}   0 4
support_tickets_created_total{priority="normal"}   0 5
support_tickets_resolved_total{priority="urgent"}  0 0.5
support_tickets_resolved_total{priority="normal"}  0 0.5
"""
    + support_histogram("support_first_response_seconds")
    + support_histogram("support_resolution_seconds")
    + http_metrics("tickets")
    + statement_histogram("tickets")
)

FLAGS = """
flags_evaluations_total{environment="production",flag="new-checkout",variant="on"}   0 5
flags_evaluations_total{environment="production",flag="new-checkout",variant="off"}  0 3
flags_evaluations_total{environment="production",flag="dark-mode",variant="on"}      0 2
flags_snapshot_version{environment="production"}  42
flags_snapshot_version{environment="staging"}     7
flags_sdk_polls_total{environment="production",result="modified"}      0 0.5
flags_sdk_polls_total{environment="production",result="not_modified"}  0 4
flags_sdk_polls_total{environment="production",result="error"}         0 0.1
flags_stale_flags{environment="production"}  2
flags_stale_flags{environment="staging"}     0
flags_changes_total{environment="production",action="update"}  0 0.05
""" + http_metrics("flags")

# tickets: its last good backup three days old, its last drill failed after its last good one (three days
# old too), six minutes of committed data not yet archived and WAL pushes failing; flags: healthy, drilled
# an hour ago and never failed. BackupTooOld, RestoreDrillFailed and WalArchiveLagging hold for tickets only.
BACKUP = """
backup_last_success_timestamp_seconds{store="tickets"}         @-259200
backup_last_success_timestamp_seconds{store="flags"}           @-600
backup_size_bytes{store="tickets"}                             5e8
backup_size_bytes{store="flags"}                               1.4e5
restore_drill_last_success_timestamp_seconds{store="tickets"}  @-262800
restore_drill_last_failure_timestamp_seconds{store="tickets"}  @-3600
restore_drill_last_success_timestamp_seconds{store="flags"}    @-3600
restore_drill_duration_seconds{store="tickets"}                95
restore_drill_duration_seconds{store="flags"}                  1.4
recovery_point_age_seconds{store="tickets"}                    360 1
recovery_point_age_seconds{store="flags"}                      0
backup_recovery_point_objective_seconds{store="tickets"}       60
backup_recovery_point_objective_seconds{store="flags"}         1
backup_wal_archive_failures_total{store="tickets"}             0 0.05
backup_wal_archive_failures_total{store="flags"}               0
"""

# The business exporter's computed revenue and retention series, as it exposes them for a demo platform
# (`python -m demo.business_db`, 600 users, 14 months, seed 1): cells too young to exist are absent.
REVENUE = """
business_cohort_start_timestamp_seconds{cohort="0",in_progress="true"}  1795996800
business_cohort_start_timestamp_seconds{cohort="1",in_progress="false"}  1795392000
business_cohort_start_timestamp_seconds{cohort="2",in_progress="false"}  1794787200
business_cohort_start_timestamp_seconds{cohort="3",in_progress="false"}  1794182400
business_cohort_start_timestamp_seconds{cohort="4",in_progress="false"}  1793577600
business_cohort_start_timestamp_seconds{cohort="5",in_progress="false"}  1792972800
business_cohort_start_timestamp_seconds{cohort="6",in_progress="false"}  1792368000
business_cohort_start_timestamp_seconds{cohort="7",in_progress="false"}  1791763200
business_cohort_start_timestamp_seconds{cohort="8",in_progress="false"}  1791158400
business_cohort_start_timestamp_seconds{cohort="9",in_progress="false"}  1790553600
business_cohort_start_timestamp_seconds{cohort="10",in_progress="false"}  1789948800
business_cohort_start_timestamp_seconds{cohort="11",in_progress="false"}  1789344000
business_cohort_users{cohort="0",in_progress="true"}  3
business_cohort_users{cohort="1",in_progress="false"}  10
business_cohort_users{cohort="2",in_progress="false"}  12
business_cohort_users{cohort="3",in_progress="false"}  14
business_cohort_users{cohort="4",in_progress="false"}  21
business_cohort_users{cohort="5",in_progress="false"}  9
business_cohort_users{cohort="6",in_progress="false"}  12
business_cohort_users{cohort="7",in_progress="false"}  12
business_cohort_users{cohort="8",in_progress="false"}  17
business_cohort_users{cohort="9",in_progress="false"}  11
business_cohort_users{cohort="10",in_progress="false"}  14
business_cohort_users{cohort="11",in_progress="false"}  14
business_retained_users{cohort="0",week="0",in_progress="true"}  3
business_retention_ratio{cohort="0",week="0",in_progress="true"}  1
business_retained_users{cohort="1",week="0",in_progress="false"}  10
business_retention_ratio{cohort="1",week="0",in_progress="false"}  1
business_retained_users{cohort="1",week="1",in_progress="true"}  4
business_retention_ratio{cohort="1",week="1",in_progress="true"}  0.4
business_retained_users{cohort="2",week="0",in_progress="false"}  12
business_retention_ratio{cohort="2",week="0",in_progress="false"}  1
business_retained_users{cohort="2",week="1",in_progress="false"}  4
business_retention_ratio{cohort="2",week="1",in_progress="false"}  0.333333
business_retained_users{cohort="2",week="2",in_progress="true"}  1
business_retention_ratio{cohort="2",week="2",in_progress="true"}  0.0833333
business_retained_users{cohort="3",week="0",in_progress="false"}  14
business_retention_ratio{cohort="3",week="0",in_progress="false"}  1
business_retained_users{cohort="3",week="1",in_progress="false"}  10
business_retention_ratio{cohort="3",week="1",in_progress="false"}  0.714286
business_retained_users{cohort="3",week="2",in_progress="false"}  9
business_retention_ratio{cohort="3",week="2",in_progress="false"}  0.642857
business_retained_users{cohort="3",week="3",in_progress="true"}  1
business_retention_ratio{cohort="3",week="3",in_progress="true"}  0.0714286
business_retained_users{cohort="4",week="0",in_progress="false"}  21
business_retention_ratio{cohort="4",week="0",in_progress="false"}  1
business_retained_users{cohort="4",week="1",in_progress="false"}  8
business_retention_ratio{cohort="4",week="1",in_progress="false"}  0.380952
business_retained_users{cohort="4",week="2",in_progress="false"}  6
business_retention_ratio{cohort="4",week="2",in_progress="false"}  0.285714
business_retained_users{cohort="4",week="3",in_progress="false"}  5
business_retention_ratio{cohort="4",week="3",in_progress="false"}  0.238095
business_retained_users{cohort="4",week="4",in_progress="true"}  2
business_retention_ratio{cohort="4",week="4",in_progress="true"}  0.0952381
business_retained_users{cohort="5",week="0",in_progress="false"}  9
business_retention_ratio{cohort="5",week="0",in_progress="false"}  1
business_retained_users{cohort="5",week="1",in_progress="false"}  3
business_retention_ratio{cohort="5",week="1",in_progress="false"}  0.333333
business_retained_users{cohort="5",week="2",in_progress="false"}  5
business_retention_ratio{cohort="5",week="2",in_progress="false"}  0.555556
business_retained_users{cohort="5",week="3",in_progress="false"}  3
business_retention_ratio{cohort="5",week="3",in_progress="false"}  0.333333
business_retained_users{cohort="5",week="4",in_progress="false"}  2
business_retention_ratio{cohort="5",week="4",in_progress="false"}  0.222222
business_retained_users{cohort="5",week="5",in_progress="true"}  2
business_retention_ratio{cohort="5",week="5",in_progress="true"}  0.222222
business_retained_users{cohort="6",week="0",in_progress="false"}  12
business_retention_ratio{cohort="6",week="0",in_progress="false"}  1
business_retained_users{cohort="6",week="1",in_progress="false"}  3
business_retention_ratio{cohort="6",week="1",in_progress="false"}  0.25
business_retained_users{cohort="6",week="2",in_progress="false"}  2
business_retention_ratio{cohort="6",week="2",in_progress="false"}  0.166667
business_retained_users{cohort="6",week="3",in_progress="false"}  1
business_retention_ratio{cohort="6",week="3",in_progress="false"}  0.0833333
business_retained_users{cohort="6",week="4",in_progress="false"}  0
business_retention_ratio{cohort="6",week="4",in_progress="false"}  0
business_retained_users{cohort="6",week="5",in_progress="false"}  3
business_retention_ratio{cohort="6",week="5",in_progress="false"}  0.25
business_retained_users{cohort="6",week="6",in_progress="true"}  0
business_retention_ratio{cohort="6",week="6",in_progress="true"}  0
business_retained_users{cohort="7",week="0",in_progress="false"}  12
business_retention_ratio{cohort="7",week="0",in_progress="false"}  1
business_retained_users{cohort="7",week="1",in_progress="false"}  4
business_retention_ratio{cohort="7",week="1",in_progress="false"}  0.333333
business_retained_users{cohort="7",week="2",in_progress="false"}  1
business_retention_ratio{cohort="7",week="2",in_progress="false"}  0.0833333
business_retained_users{cohort="7",week="3",in_progress="false"}  1
business_retention_ratio{cohort="7",week="3",in_progress="false"}  0.0833333
business_retained_users{cohort="7",week="4",in_progress="false"}  1
business_retention_ratio{cohort="7",week="4",in_progress="false"}  0.0833333
business_retained_users{cohort="7",week="5",in_progress="false"}  1
business_retention_ratio{cohort="7",week="5",in_progress="false"}  0.0833333
business_retained_users{cohort="7",week="6",in_progress="false"}  1
business_retention_ratio{cohort="7",week="6",in_progress="false"}  0.0833333
business_retained_users{cohort="7",week="7",in_progress="true"}  0
business_retention_ratio{cohort="7",week="7",in_progress="true"}  0
business_retained_users{cohort="8",week="0",in_progress="false"}  17
business_retention_ratio{cohort="8",week="0",in_progress="false"}  1
business_retained_users{cohort="8",week="1",in_progress="false"}  4
business_retention_ratio{cohort="8",week="1",in_progress="false"}  0.235294
business_retained_users{cohort="8",week="2",in_progress="false"}  5
business_retention_ratio{cohort="8",week="2",in_progress="false"}  0.294118
business_retained_users{cohort="8",week="3",in_progress="false"}  5
business_retention_ratio{cohort="8",week="3",in_progress="false"}  0.294118
business_retained_users{cohort="8",week="4",in_progress="false"}  4
business_retention_ratio{cohort="8",week="4",in_progress="false"}  0.235294
business_retained_users{cohort="8",week="5",in_progress="false"}  3
business_retention_ratio{cohort="8",week="5",in_progress="false"}  0.176471
business_retained_users{cohort="8",week="6",in_progress="false"}  5
business_retention_ratio{cohort="8",week="6",in_progress="false"}  0.294118
business_retained_users{cohort="8",week="7",in_progress="false"}  3
business_retention_ratio{cohort="8",week="7",in_progress="false"}  0.176471
business_retained_users{cohort="8",week="8",in_progress="true"}  4
business_retention_ratio{cohort="8",week="8",in_progress="true"}  0.235294
business_retained_users{cohort="9",week="0",in_progress="false"}  11
business_retention_ratio{cohort="9",week="0",in_progress="false"}  1
business_retained_users{cohort="9",week="1",in_progress="false"}  5
business_retention_ratio{cohort="9",week="1",in_progress="false"}  0.454545
business_retained_users{cohort="9",week="2",in_progress="false"}  6
business_retention_ratio{cohort="9",week="2",in_progress="false"}  0.545455
business_retained_users{cohort="9",week="3",in_progress="false"}  4
business_retention_ratio{cohort="9",week="3",in_progress="false"}  0.363636
business_retained_users{cohort="9",week="4",in_progress="false"}  1
business_retention_ratio{cohort="9",week="4",in_progress="false"}  0.0909091
business_retained_users{cohort="9",week="5",in_progress="false"}  3
business_retention_ratio{cohort="9",week="5",in_progress="false"}  0.272727
business_retained_users{cohort="9",week="6",in_progress="false"}  5
business_retention_ratio{cohort="9",week="6",in_progress="false"}  0.454545
business_retained_users{cohort="9",week="7",in_progress="false"}  4
business_retention_ratio{cohort="9",week="7",in_progress="false"}  0.363636
business_retained_users{cohort="9",week="8",in_progress="false"}  3
business_retention_ratio{cohort="9",week="8",in_progress="false"}  0.272727
business_retained_users{cohort="9",week="9",in_progress="true"}  2
business_retention_ratio{cohort="9",week="9",in_progress="true"}  0.181818
business_retained_users{cohort="10",week="0",in_progress="false"}  14
business_retention_ratio{cohort="10",week="0",in_progress="false"}  1
business_retained_users{cohort="10",week="1",in_progress="false"}  7
business_retention_ratio{cohort="10",week="1",in_progress="false"}  0.5
business_retained_users{cohort="10",week="2",in_progress="false"}  5
business_retention_ratio{cohort="10",week="2",in_progress="false"}  0.357143
business_retained_users{cohort="10",week="3",in_progress="false"}  7
business_retention_ratio{cohort="10",week="3",in_progress="false"}  0.5
business_retained_users{cohort="10",week="4",in_progress="false"}  5
business_retention_ratio{cohort="10",week="4",in_progress="false"}  0.357143
business_retained_users{cohort="10",week="5",in_progress="false"}  5
business_retention_ratio{cohort="10",week="5",in_progress="false"}  0.357143
business_retained_users{cohort="10",week="6",in_progress="false"}  6
business_retention_ratio{cohort="10",week="6",in_progress="false"}  0.428571
business_retained_users{cohort="10",week="7",in_progress="false"}  6
business_retention_ratio{cohort="10",week="7",in_progress="false"}  0.428571
business_retained_users{cohort="10",week="8",in_progress="false"}  5
business_retention_ratio{cohort="10",week="8",in_progress="false"}  0.357143
business_retained_users{cohort="10",week="9",in_progress="false"}  4
business_retention_ratio{cohort="10",week="9",in_progress="false"}  0.285714
business_retained_users{cohort="10",week="10",in_progress="true"}  3
business_retention_ratio{cohort="10",week="10",in_progress="true"}  0.214286
business_retained_users{cohort="11",week="0",in_progress="false"}  14
business_retention_ratio{cohort="11",week="0",in_progress="false"}  1
business_retained_users{cohort="11",week="1",in_progress="false"}  3
business_retention_ratio{cohort="11",week="1",in_progress="false"}  0.214286
business_retained_users{cohort="11",week="2",in_progress="false"}  5
business_retention_ratio{cohort="11",week="2",in_progress="false"}  0.357143
business_retained_users{cohort="11",week="3",in_progress="false"}  4
business_retention_ratio{cohort="11",week="3",in_progress="false"}  0.285714
business_retained_users{cohort="11",week="4",in_progress="false"}  3
business_retention_ratio{cohort="11",week="4",in_progress="false"}  0.214286
business_retained_users{cohort="11",week="5",in_progress="false"}  4
business_retention_ratio{cohort="11",week="5",in_progress="false"}  0.285714
business_retained_users{cohort="11",week="6",in_progress="false"}  3
business_retention_ratio{cohort="11",week="6",in_progress="false"}  0.214286
business_retained_users{cohort="11",week="7",in_progress="false"}  4
business_retention_ratio{cohort="11",week="7",in_progress="false"}  0.285714
business_retained_users{cohort="11",week="8",in_progress="false"}  2
business_retention_ratio{cohort="11",week="8",in_progress="false"}  0.142857
business_retained_users{cohort="11",week="9",in_progress="false"}  1
business_retention_ratio{cohort="11",week="9",in_progress="false"}  0.0714286
business_retained_users{cohort="11",week="10",in_progress="false"}  2
business_retention_ratio{cohort="11",week="10",in_progress="false"}  0.142857
business_retained_users{cohort="11",week="11",in_progress="true"}  1
business_retention_ratio{cohort="11",week="11",in_progress="true"}  0.0714286
business_month_start_timestamp_seconds{month="0",in_progress="true"}  1796083200
business_month_start_timestamp_seconds{month="1",in_progress="false"}  1793491200
business_month_start_timestamp_seconds{month="2",in_progress="false"}  1790812800
business_month_start_timestamp_seconds{month="3",in_progress="false"}  1788220800
business_month_start_timestamp_seconds{month="4",in_progress="false"}  1785542400
business_month_start_timestamp_seconds{month="5",in_progress="false"}  1782864000
business_month_start_timestamp_seconds{month="6",in_progress="false"}  1780272000
business_month_start_timestamp_seconds{month="7",in_progress="false"}  1777593600
business_month_start_timestamp_seconds{month="8",in_progress="false"}  1775001600
business_month_start_timestamp_seconds{month="9",in_progress="false"}  1772323200
business_month_start_timestamp_seconds{month="10",in_progress="false"}  1769904000
business_month_start_timestamp_seconds{month="11",in_progress="false"}  1767225600
business_mrr_opening_usd{month="0",in_progress="true"}  10687
business_mrr_closing_usd{month="0",in_progress="true"}  10687
business_mrr_movement_usd{month="0",movement="new",in_progress="true"}  0
business_mrr_movement_usd{month="0",movement="expansion",in_progress="true"}  0
business_mrr_movement_usd{month="0",movement="contraction",in_progress="true"}  0
business_mrr_movement_usd{month="0",movement="churn",in_progress="true"}  0
business_mrr_movement_usd{month="0",movement="reactivation",in_progress="true"}  0
business_net_revenue_retention_ratio{month="0",in_progress="true"}  1
business_gross_revenue_retention_ratio{month="0",in_progress="true"}  1
business_mrr_opening_usd{month="1",in_progress="false"}  9844
business_mrr_closing_usd{month="1",in_progress="false"}  10687
business_mrr_movement_usd{month="1",movement="new",in_progress="false"}  1162
business_mrr_movement_usd{month="1",movement="expansion",in_progress="false"}  680
business_mrr_movement_usd{month="1",movement="contraction",in_progress="false"}  0
business_mrr_movement_usd{month="1",movement="churn",in_progress="false"}  999
business_mrr_movement_usd{month="1",movement="reactivation",in_progress="false"}  0
business_net_revenue_retention_ratio{month="1",in_progress="false"}  0.967594
business_gross_revenue_retention_ratio{month="1",in_progress="false"}  0.898517
business_mrr_opening_usd{month="2",in_progress="false"}  8439
business_mrr_closing_usd{month="2",in_progress="false"}  9844
business_mrr_movement_usd{month="2",movement="new",in_progress="false"}  737
business_mrr_movement_usd{month="2",movement="expansion",in_progress="false"}  680
business_mrr_movement_usd{month="2",movement="contraction",in_progress="false"}  70
business_mrr_movement_usd{month="2",movement="churn",in_progress="false"}  99
business_mrr_movement_usd{month="2",movement="reactivation",in_progress="false"}  157
business_net_revenue_retention_ratio{month="2",in_progress="false"}  1.06055
business_gross_revenue_retention_ratio{month="2",in_progress="false"}  0.979974
business_mrr_opening_usd{month="3",in_progress="false"}  7748
business_mrr_closing_usd{month="3",in_progress="false"}  8439
business_mrr_movement_usd{month="3",movement="new",in_progress="false"}  638
business_mrr_movement_usd{month="3",movement="expansion",in_progress="false"}  350
business_mrr_movement_usd{month="3",movement="contraction",in_progress="false"}  140
business_mrr_movement_usd{month="3",movement="churn",in_progress="false"}  157
business_mrr_movement_usd{month="3",movement="reactivation",in_progress="false"}  0
business_net_revenue_retention_ratio{month="3",in_progress="false"}  1.00684
business_gross_revenue_retention_ratio{month="3",in_progress="false"}  0.961668
business_mrr_opening_usd{month="4",in_progress="false"}  5705
business_mrr_closing_usd{month="4",in_progress="false"}  7748
business_mrr_movement_usd{month="4",movement="new",in_progress="false"}  732
business_mrr_movement_usd{month="4",movement="expansion",in_progress="false"}  1410
business_mrr_movement_usd{month="4",movement="contraction",in_progress="false"}  0
business_mrr_movement_usd{month="4",movement="churn",in_progress="false"}  227
business_mrr_movement_usd{month="4",movement="reactivation",in_progress="false"}  128
business_net_revenue_retention_ratio{month="4",in_progress="false"}  1.20736
business_gross_revenue_retention_ratio{month="4",in_progress="false"}  0.96021
business_mrr_opening_usd{month="5",in_progress="false"}  4421
business_mrr_closing_usd{month="5",in_progress="false"}  5705
business_mrr_movement_usd{month="5",movement="new",in_progress="false"}  662
business_mrr_movement_usd{month="5",movement="expansion",in_progress="false"}  680
business_mrr_movement_usd{month="5",movement="contraction",in_progress="false"}  0
business_mrr_movement_usd{month="5",movement="churn",in_progress="false"}  58
business_mrr_movement_usd{month="5",movement="reactivation",in_progress="false"}  0
business_net_revenue_retention_ratio{month="5",in_progress="false"}  1.14069
business_gross_revenue_retention_ratio{month="5",in_progress="false"}  0.986881
business_mrr_opening_usd{month="6",in_progress="false"}  4033
business_mrr_closing_usd{month="6",in_progress="false"}  4421
business_mrr_movement_usd{month="6",movement="new",in_progress="false"}  314
business_mrr_movement_usd{month="6",movement="expansion",in_progress="false"}  940
business_mrr_movement_usd{month="6",movement="contraction",in_progress="false"}  70
business_mrr_movement_usd{month="6",movement="churn",in_progress="false"}  796
business_mrr_movement_usd{month="6",movement="reactivation",in_progress="false"}  0
business_net_revenue_retention_ratio{month="6",in_progress="false"}  1.01835
business_gross_revenue_retention_ratio{month="6",in_progress="false"}  0.785272
business_mrr_opening_usd{month="7",in_progress="false"}  3405
business_mrr_closing_usd{month="7",in_progress="false"}  4033
business_mrr_movement_usd{month="7",movement="new",in_progress="false"}  657
business_mrr_movement_usd{month="7",movement="expansion",in_progress="false"}  70
business_mrr_movement_usd{month="7",movement="contraction",in_progress="false"}  0
business_mrr_movement_usd{month="7",movement="churn",in_progress="false"}  99
business_mrr_movement_usd{month="7",movement="reactivation",in_progress="false"}  0
business_net_revenue_retention_ratio{month="7",in_progress="false"}  0.991483
business_gross_revenue_retention_ratio{month="7",in_progress="false"}  0.970925
business_mrr_opening_usd{month="8",in_progress="false"}  3016
business_mrr_closing_usd{month="8",in_progress="false"}  3405
business_mrr_movement_usd{month="8",movement="new",in_progress="false"}  348
business_mrr_movement_usd{month="8",movement="expansion",in_progress="false"}  70
business_mrr_movement_usd{month="8",movement="contraction",in_progress="false"}  0
business_mrr_movement_usd{month="8",movement="churn",in_progress="false"}  29
business_mrr_movement_usd{month="8",movement="reactivation",in_progress="false"}  0
business_net_revenue_retention_ratio{month="8",in_progress="false"}  1.01359
business_gross_revenue_retention_ratio{month="8",in_progress="false"}  0.990385
business_mrr_opening_usd{month="9",in_progress="false"}  2168
business_mrr_closing_usd{month="9",in_progress="false"}  3016
business_mrr_movement_usd{month="9",movement="new",in_progress="false"}  848
business_mrr_movement_usd{month="9",movement="expansion",in_progress="false"}  0
business_mrr_movement_usd{month="9",movement="contraction",in_progress="false"}  0
business_mrr_movement_usd{month="9",movement="churn",in_progress="false"}  0
business_mrr_movement_usd{month="9",movement="reactivation",in_progress="false"}  0
business_net_revenue_retention_ratio{month="9",in_progress="false"}  1
business_gross_revenue_retention_ratio{month="9",in_progress="false"}  1
business_mrr_opening_usd{month="10",in_progress="false"}  1540
business_mrr_closing_usd{month="10",in_progress="false"}  2168
business_mrr_movement_usd{month="10",movement="new",in_progress="false"}  529
business_mrr_movement_usd{month="10",movement="expansion",in_progress="false"}  70
business_mrr_movement_usd{month="10",movement="contraction",in_progress="false"}  0
business_mrr_movement_usd{month="10",movement="churn",in_progress="false"}  0
business_mrr_movement_usd{month="10",movement="reactivation",in_progress="false"}  29
business_net_revenue_retention_ratio{month="10",in_progress="false"}  1.04545
business_gross_revenue_retention_ratio{month="10",in_progress="false"}  1
business_mrr_opening_usd{month="11",in_progress="false"}  1127
business_mrr_closing_usd{month="11",in_progress="false"}  1540
business_mrr_movement_usd{month="11",movement="new",in_progress="false"}  273
business_mrr_movement_usd{month="11",movement="expansion",in_progress="false"}  140
business_mrr_movement_usd{month="11",movement="contraction",in_progress="false"}  0
business_mrr_movement_usd{month="11",movement="churn",in_progress="false"}  0
business_mrr_movement_usd{month="11",movement="reactivation",in_progress="false"}  0
business_net_revenue_retention_ratio{month="11",in_progress="false"}  1.12422
business_gross_revenue_retention_ratio{month="11",in_progress="false"}  1
business_net_revenue_retention_12m_ratio  1.51816
business_gross_revenue_retention_12m_ratio  0.380145
business_paying_customers{tier="startup"}  132
business_arpu_usd{tier="startup"}  29
business_paying_customers{tier="professional"}  34
business_arpu_usd{tier="professional"}  99
business_paying_customers{tier="enterprise"}  7
business_arpu_usd{tier="enterprise"}  499
business_trials_running  1
business_trials_ended{month="0",outcome="converted",in_progress="true"}  0
business_trials_ended{month="0",outcome="expired",in_progress="true"}  0
business_trials_ended{month="1",outcome="converted",in_progress="false"}  9
business_trials_ended{month="1",outcome="expired",in_progress="false"}  10
business_trial_conversion_ratio{month="1",in_progress="false"}  0.473684
business_trials_ended{month="2",outcome="converted",in_progress="false"}  4
business_trials_ended{month="2",outcome="expired",in_progress="false"}  8
business_trial_conversion_ratio{month="2",in_progress="false"}  0.333333
business_trials_ended{month="3",outcome="converted",in_progress="false"}  4
business_trials_ended{month="3",outcome="expired",in_progress="false"}  5
business_trial_conversion_ratio{month="3",in_progress="false"}  0.444444
business_trials_ended{month="4",outcome="converted",in_progress="false"}  7
business_trials_ended{month="4",outcome="expired",in_progress="false"}  10
business_trial_conversion_ratio{month="4",in_progress="false"}  0.411765
business_trials_ended{month="5",outcome="converted",in_progress="false"}  4
business_trials_ended{month="5",outcome="expired",in_progress="false"}  6
business_trial_conversion_ratio{month="5",in_progress="false"}  0.4
business_trials_ended{month="6",outcome="converted",in_progress="false"}  4
business_trials_ended{month="6",outcome="expired",in_progress="false"}  8
business_trial_conversion_ratio{month="6",in_progress="false"}  0.333333
business_trials_ended{month="7",outcome="converted",in_progress="false"}  6
business_trials_ended{month="7",outcome="expired",in_progress="false"}  4
business_trial_conversion_ratio{month="7",in_progress="false"}  0.6
business_trials_ended{month="8",outcome="converted",in_progress="false"}  3
business_trials_ended{month="8",outcome="expired",in_progress="false"}  2
business_trial_conversion_ratio{month="8",in_progress="false"}  0.6
business_trials_ended{month="9",outcome="converted",in_progress="false"}  10
business_trials_ended{month="9",outcome="expired",in_progress="false"}  8
business_trial_conversion_ratio{month="9",in_progress="false"}  0.555556
business_trials_ended{month="10",outcome="converted",in_progress="false"}  6
business_trials_ended{month="10",outcome="expired",in_progress="false"}  6
business_trial_conversion_ratio{month="10",in_progress="false"}  0.5
business_trials_ended{month="11",outcome="converted",in_progress="false"}  4
business_trials_ended{month="11",outcome="expired",in_progress="false"}  9
business_trial_conversion_ratio{month="11",in_progress="false"}  0.307692
"""

# reports: healthy schedules, one email delivery failing (ReportRunFailing holds; nothing overdue).
REPORTS = """
reports_runs_total{trigger="schedule",status="succeeded"}  40 0.01
reports_run_failures_total{stage="email"}                  0 0.02
reports_run_failures_total{stage="render"}                 0
reports_schedules{state="enabled"}                         1
reports_schedules_overdue                                  0
reports_render_seconds_bucket{le="0.5"}                    0 0.002
reports_render_seconds_bucket{le="2.5"}                    0 0.009
reports_render_seconds_bucket{le="10"}                     0 0.01
reports_render_seconds_bucket{le="+Inf"}                   0 0.01
reports_render_seconds_sum                                 0 0.012
reports_render_seconds_count                               0 0.01
"""

# The query exporter on a PostgreSQL (the compose stacks scrape it; make up's runs no PostgreSQL): one
# statement in the top K, the rest as other, one confirmed index suggestion.
QUERIES = """
pg_statement_calls_total{fingerprint="9d41c2b7e0aa",statement_type="select"}        0 20
pg_statement_calls_total{fingerprint="other",statement_type="other"}                0 5
pg_statement_exec_seconds_total{fingerprint="9d41c2b7e0aa",statement_type="select"} 0 0.4
pg_statement_exec_seconds_total{fingerprint="other",statement_type="other"}         0 0.05
pg_statement_shared_blocks_hit_total{fingerprint="9d41c2b7e0aa",statement_type="select"}   0 300
pg_statement_shared_blocks_read_total{fingerprint="9d41c2b7e0aa",statement_type="select"}  0 3
pg_statement_shared_blocks_hit_total{fingerprint="other",statement_type="other"}           0 30
pg_statement_shared_blocks_read_total{fingerprint="other",statement_type="other"}          0 1
pg_statement_info{fingerprint="9d41c2b7e0aa",statement_type="select",query="SELECT(?)"}  1
pg_statements_entries  420
pg_statements_deallocations_total  0 0.1
pg_index_suggestion_cost_reduction_ratio{table="tickets",column="customer_id",fingerprint="9d41c2b7e0aa"}  0.93
pg_insights_extension_available{extension="pg_stat_statements"}  1
pg_insights_extension_available{extension="hypopg"}              0
pg_insights_task_errors_total{task="statements"}   0 0.01
pg_insights_task_last_success_timestamp_seconds{task="statements"}  @-5
"""

JOBS: dict[str, list[Series]] = {
    "infra": table(INFRA),
    "service-health": table(SERVICE_HEALTH),
    "business": table(BUSINESS) + table(REVENUE),
    "ratelimit-proxy": table(RATELIMIT_PROXY),
    "tickets": table(TICKETS),
    "flags": table(FLAGS),
    "backup": table(BACKUP),
    "reports": table(REPORTS),
    "queries": table(QUERIES),
}


class FixtureTargets:
    """One HTTP server per job of JOBS on a free loopback port, serving /metrics from a shared start time."""

    def __init__(self) -> None:
        self.started = time.time()
        self.servers: dict[str, ThreadingHTTPServer] = {}
        for job, series in JOBS.items():
            server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(series))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers[job] = server

    def address(self, job: str) -> str:
        return f"127.0.0.1:{self.servers[job].server_address[1]}"

    def exposition(self, series: list[Series], now: float) -> str:
        stamp = math.ceil(now - 0.5) + 0.5
        lines = [f"{s.selector} {s.at(stamp - self.started, self.started)!r} {int(stamp * 1000)}" for s in series]
        return "\n".join(lines) + "\n"

    def _handler(self, series: list[Series]) -> type[BaseHTTPRequestHandler]:
        targets = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = targets.exposition(series, time.time()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError):  # a replica stopping mid-scrape
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                """Quiet: two replicas scrape every second."""

        return Handler

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()
