"""The VibeLux dashboards. Queries use the contract's metric names (docs/conventions.md) and the recording
rules of alert_rules/recording.yml; raw counters only inside rate()/increase() over $__rate_interval (or
$__range for "over the shown period" stats).

`job` and `instance` variables sit on the dashboards of scrape targets (infrastructure, services, rate
limiting, support, flags), and every raw series there follows them, or names the one job it comes from
(the probes: `job="service-health"`). The overview (the whole stack at once) and business (one exporter
over one database) have none: there is nothing to choose between.
"""

from __future__ import annotations

from typing import Any

from grafana.builder import (
    ALERTMANAGER_PAGE,
    AlertGroups,
    Annotation,
    Link,
    Panel,
    Query,
    Row,
    Text,
    Variable,
    build_dashboard,
    dashboard_url,
    job_and_instance,
    panel,
    quantiles,
    stat,
    state_timeline,
)

Q = Query
RATE = "$__rate_interval"
UP_DOWN = (
    {"type": "value", "options": {"0": {"text": "DOWN", "color": "red"}, "1": {"text": "UP", "color": "green"}}},
)
HEALTH_SERVICES = "api|database|redis|ai|payments"
SCOPED = '{job=~"$job", instance=~"$instance"}'


def scoped(*matchers: str) -> str:
    """SCOPED with more matchers, e.g. scoped('decision="limited"')."""
    return SCOPED[:-1] + "".join(f", {matcher}" for matcher in matchers) + "}"


PROBES_JOB = "service-health"  # the health exporter's job: the probes are its series, whatever job is chosen
# The stack's web UIs, as constant variables the provisioning fills (grafana/builder.py, LINK_DEFAULTS).
DESK = Link("Support desk", "${desk_url}", new_tab=True)
FLAGS_API = Link("Feature flags API", "${flags_url}/openapi.json", new_tab=True)
ALERTMANAGER = Link("Alertmanager", ALERTMANAGER_PAGE)
LINKS = [DESK, FLAGS_API, ALERTMANAGER]
# A drill-down from one probed dependency to the services dashboard, filtered to it.
TO_PROBE = Link(
    "Probes of ${__field.labels.service}", dashboard_url("vibelux-services", probe="${__field.labels.service}")
)
ANNOTATIONS = [
    Annotation(
        "Deploys and restarts",
        "max by (job, instance, service, version) (vibelux_start_time_seconds"
        " * on (job, instance, service) group_left (version) vibelux_build_info) * 1000",
        "{{service}} {{version}} started",
        "on {{instance}}",
        tags=("service", "version"),
        color="purple",
    ),
    Annotation(
        "Flag changes",
        "max by (environment) (flags_last_change_timestamp_seconds) * 1000",
        "Feature flags changed in {{environment}}",
        tags=("environment",),
        color="orange",
    ),
    Annotation(
        "Releases",
        "max by (event) (release_last_event_timestamp_seconds) * 1000",
        "Release: {{event}}",
        tags=("event",),
        color="green",
    ),
]


NAVIGATION = {
    "vibelux-infrastructure": "Infrastructure",
    "vibelux-services": "Services",
    "vibelux-ratelimit": "Rate limiting",
    "vibelux-support": "Support",
    "vibelux-flags": "Feature flags",
    "vibelux-business": "Business",
    "vibelux-backups": "Backups",
    "vibelux-revenue": "Revenue and retention",
    "vibelux-queries": "Database queries",
}
# alert_rules/backups.yml: BackupTooOld and RestoreDrillFailed past two days, WalArchiveLagging past 300 s
TWO_DAYS = 2 * 86400
AGE_THRESHOLDS = ((None, "green"), (TWO_DAYS, "red"))
# the recovery point as a multiple of the store's own objective: WalArchiveLagging past 5x (and 5 min)
OBJECTIVE_THRESHOLDS = ((None, "green"), (1.5, "yellow"), (5, "red"))
PROVED_FAILED = (
    {"type": "value", "options": {"0": {"text": "FAILED", "color": "red"}, "1": {"text": "proved", "color": "green"}}},
)


def overview() -> dict[str, Any]:
    """The admin dashboard of the seed, rebuilt: business, support, service health, alerts, navigation.

    Every figure links to the dashboard that explains it, keeping the time range and datasource."""
    navigation = Text(
        "Go to",
        " · ".join(
            [
                *(f"[{title}]({dashboard_url(uid)})" for uid, title in NAVIGATION.items()),
                *(f"[{link.title}]({link.url})" for link in LINKS),
            ]
        ),
        height=3,
    )
    health = f'{{service=~"{HEALTH_SERVICES}"}}'
    to_business = (Link("Business dashboard", dashboard_url("vibelux-business")),)
    to_support = (Link("Support dashboard", dashboard_url("vibelux-support")),)
    return build_dashboard(
        "vibelux-overview",
        "VibeLux / Overview",
        [
            Row("Navigation", (navigation,)),
            Row(
                "Business",
                (
                    stat("Users", "sum(business_users)", unit="short", links=to_business),
                    stat(
                        "User growth (30 days)",
                        'max(business_user_growth_ratio{window="30d"})',
                        unit="percentunit",
                        links=to_business,
                    ),
                    stat("MRR", "sum(business_mrr_usd)", unit="currencyUSD", links=to_business),
                    stat(
                        "MRR change (30 days)",
                        "sum(business_mrr_change_30d_usd)",
                        unit="currencyUSD",
                        links=to_business,
                    ),
                    stat(
                        "Daily active users", 'sum(business_active_users{window="1d"})', unit="short", links=to_business
                    ),
                    stat("Active sessions", "sum(business_active_sessions)", unit="short", links=to_business),
                ),
            ),
            Row(
                "Support",
                (
                    stat("Open tickets", "sum(support_tickets_open)", unit="short", width=6, links=to_support),
                    stat(
                        "Tickets past their SLA",
                        "sum(support_tickets_breached)",
                        unit="short",
                        width=6,
                        thresholds=((None, "green"), (1, "red")),
                        links=to_support,
                    ),
                    stat(
                        "SLA breaches in the period",
                        "sum(increase(support_sla_breaches_total[$__range])) or vector(0)",
                        unit="short",
                        width=6,
                        links=to_support,
                    ),
                    stat(
                        "Urgent tickets unassigned",
                        'sum(support_tickets_unassigned{priority="urgent"})',
                        unit="short",
                        width=6,
                        thresholds=((None, "green"), (1, "red")),
                        links=to_support,
                    ),
                ),
            ),
            Row(
                "Service health",
                (
                    stat(
                        "Status",
                        Q(f"max by (service) (service_up{health})", "{{service}}"),
                        unit="short",
                        width=6,
                        mappings=UP_DOWN,
                        thresholds=((None, "red"), (1, "green")),
                        links=(TO_PROBE,),
                    ),
                    stat(
                        "Uptime (period)",
                        Q(f"avg by (service) (avg_over_time(service_up{health}[$__range]))", "{{service}}"),
                        unit="percentunit",
                        width=6,
                        thresholds=((None, "red"), (0.99, "yellow"), (0.999, "green")),
                        links=(TO_PROBE,),
                    ),
                    stat(
                        "Response time (last probe)",
                        Q(f"max by (service) (service_probe_duration_seconds{health})", "{{service}}"),
                        unit="s",
                        width=6,
                        links=(TO_PROBE,),
                    ),
                    stat(
                        "Probe error rate (5m)",
                        Q(f"max by (service) (service:service_probe_failures:ratio_rate5m{health})", "{{service}}"),
                        unit="percentunit",
                        width=6,
                        thresholds=((None, "green"), (0.01, "yellow"), (0.1, "red")),
                        links=(TO_PROBE,),
                    ),
                    state_timeline(
                        "Up and down over the period",
                        Q(f"max by (service) (service_up{health})", "{{service}}"),
                        unit="short",
                        height=6,
                        mappings=UP_DOWN,
                        links=(TO_PROBE,),
                        description="One band per dependency: when it went down, and for how long.",
                    ),
                ),
            ),
            Row(
                "Alerts",
                (
                    AlertGroups(
                        "Alertmanager: alert groups",
                        matchers='alertname!="Watchdog"',
                        description="What Alertmanager holds, grouped as it routes them, silenced ones marked "
                        "(the provisioned Alertmanager datasource).",
                    ),
                    stat(
                        "Alerting pipeline",
                        'max(ALERTS{alertname="Watchdog", alertstate="firing"})',
                        unit="short",
                        width=8,
                        mappings=(
                            {"type": "value", "options": {"1": {"text": "Watchdog firing: OK", "color": "green"}}},
                        ),
                        no_value="Watchdog not firing: rules not evaluated",
                    ),
                    panel(
                        "Firing alerts (Prometheus)",
                        Q('sum by (alertname, severity, service) (ALERTS{alertstate="firing", alertname!="Watchdog"})'),
                        unit="short",
                        kind="table",
                        width=24,
                        height=6,
                        no_value="No alerts firing",
                        description="Alerts Prometheus is firing now (the Watchdog is left out: it always fires).",
                    ),
                ),
            ),
        ],
        description="Start here: business figures, support load, the health of every service, and what is firing.",
        tags=["overview"],
        annotations=ANNOTATIONS,
        links=LINKS,
    )


def infrastructure() -> dict[str, Any]:
    instance = SCOPED
    not_lo = scoped('device!="lo"')
    return build_dashboard(
        "vibelux-infrastructure",
        "VibeLux / Infrastructure",
        [
            Row(
                "CPU",
                (
                    panel(
                        "CPU utilisation",
                        Q(f"instance:node_cpu_utilisation:rate5m{instance}", "{{instance}}"),
                        unit="percentunit",
                        width=12,
                    ),
                    panel("Load (1m)", Q(f"node_load1{instance}", "{{instance}}"), unit="short", width=12),
                ),
            ),
            Row(
                "Memory",
                (
                    panel(
                        "Memory utilisation",
                        Q(f"instance:node_memory_utilisation:ratio{instance}", "{{instance}}"),
                        unit="percentunit",
                        width=12,
                    ),
                    panel(
                        "Memory available",
                        Q(f"node_memory_MemAvailable_bytes{instance}", "{{instance}}"),
                        unit="bytes",
                        width=12,
                    ),
                ),
            ),
            Row(
                "Disk",
                (
                    panel(
                        "Disk read",
                        Q(f"rate(node_disk_read_bytes_total{instance}[{RATE}])", "{{instance}} {{device}}"),
                        unit="Bps",
                        width=6,
                    ),
                    panel(
                        "Disk written",
                        Q(f"rate(node_disk_written_bytes_total{instance}[{RATE}])", "{{instance}} {{device}}"),
                        unit="Bps",
                        width=6,
                    ),
                    panel(
                        "Disk busy (I/O time)",
                        Q(f"rate(node_disk_io_time_seconds_total{instance}[{RATE}])", "{{instance}} {{device}}"),
                        unit="percentunit",
                        width=6,
                    ),
                    panel(
                        "Filesystem free",
                        Q(
                            f"node_filesystem_avail_bytes{instance} / node_filesystem_size_bytes{instance}",
                            "{{instance}} {{mountpoint}}",
                        ),
                        unit="percentunit",
                        width=6,
                    ),
                ),
            ),
            Row(
                "Network",
                (
                    panel(
                        "Received",
                        Q(f"rate(node_network_receive_bytes_total{not_lo}[{RATE}])", "{{instance}} {{device}}"),
                        unit="Bps",
                        width=8,
                    ),
                    panel(
                        "Transmitted",
                        Q(f"rate(node_network_transmit_bytes_total{not_lo}[{RATE}])", "{{instance}} {{device}}"),
                        unit="Bps",
                        width=8,
                    ),
                    panel(
                        "Errors (share of packets)",
                        Q(f"instance_device:node_network_errors:ratio_rate5m{instance}", "{{instance}} {{device}}"),
                        unit="percentunit",
                        width=8,
                        no_value="No packets with errors",
                    ),
                ),
            ),
            Row(
                "Stack processes",
                (
                    panel(
                        "CPU per process (1 = one core)",
                        Q(
                            f"sum by (name) (rate(vibelux_process_cpu_seconds_total{instance}[{RATE}]))",
                            "{{name}}",
                        ),
                        unit="percentunit",
                        width=6,
                    ),
                    panel(
                        "Resident memory",
                        Q(f"sum by (name) (vibelux_process_resident_memory_bytes{instance})", "{{name}}"),
                        unit="bytes",
                        width=6,
                    ),
                    panel(
                        "Open file descriptors",
                        Q(f"sum by (name) (vibelux_process_open_fds{instance})", "{{name}}"),
                        unit="short",
                        width=6,
                    ),
                    panel(
                        "Threads",
                        Q(f"sum by (name) (vibelux_process_threads{instance})", "{{name}}"),
                        unit="short",
                        width=6,
                    ),
                ),
            ),
        ],
        description="Hosts (infra exporter or node_exporter) and the stack's own processes.",
        tags=["infrastructure"],
        variables=job_and_instance("node_load1"),
        annotations=ANNOTATIONS,
        links=LINKS,
    )


def services() -> dict[str, Any]:
    service = scoped('service=~"$service"')
    http = f"rate(http_requests_total{service}[{RATE}])"
    errors = scoped('service=~"$service"', 'status=~"5.."')
    http_5xx = f"rate(http_requests_total{errors}[{RATE}])"
    probe = f'{{job="{PROBES_JOB}", service=~"$probe"}}'
    probe_links = (
        Link("Only ${__field.labels.service}", dashboard_url("vibelux-services", probe="${__field.labels.service}")),
    )
    return build_dashboard(
        "vibelux-services",
        "VibeLux / Services",
        [
            Row(
                "Requests (RED)",
                (
                    panel("Requests", Q(f"sum by (service) ({http})", "{{service}}"), unit="reqps"),
                    panel(
                        "Server errors (5xx share)",
                        Q(
                            f"(sum by (service) ({http_5xx}) or sum by (service) ({http}) * 0)"
                            f" / sum by (service) ({http})",
                            "{{service}}",
                        ),
                        unit="percentunit",
                    ),
                    panel(
                        "Latency p50 / p99",
                        *quantiles(
                            "http_request_duration_seconds",
                            0.5,
                            0.99,
                            by="service",
                            selector=service,
                            legend="{{service}}",
                        ),
                        unit="s",
                    ),
                    panel(
                        "Busiest routes",
                        Q(f"topk(10, sum by (service, route) ({http}))", "{{service}} {{route}}"),
                        unit="reqps",
                        width=12,
                    ),
                    panel(
                        "Responses by status",
                        Q(f"sum by (status) ({http})", "{{status}}"),
                        unit="reqps",
                        width=12,
                        stack=True,
                    ),
                ),
            ),
            Row(
                "Dependency probes (health exporter)",
                (
                    state_timeline(
                        "Up",
                        Q(f"max by (service) (service_up{probe})", "{{service}}"),
                        unit="short",
                        height=6,
                        mappings=UP_DOWN,
                        links=probe_links,
                    ),
                    panel(
                        "Probe duration",
                        Q(f"service_probe_duration_seconds{probe}", "{{service}}"),
                        unit="s",
                        links=probe_links,
                    ),
                    panel(
                        "Probe results",
                        Q(
                            f"sum by (service, outcome) (rate(service_probe_results_total{probe}[{RATE}]))",
                            "{{service}} {{outcome}}",
                        ),
                        unit="ops",
                        stack=True,
                        links=probe_links,
                    ),
                    panel(
                        "Time since last success",
                        Q(f"time() - service_last_success_timestamp_seconds{probe}", "{{service}}"),
                        unit="s",
                        links=probe_links,
                    ),
                ),
            ),
            Row(
                "API availability SLO (99.9%, through the proxy)",
                (
                    panel(
                        "Error ratio by window",
                        Q("slo:sli_error:ratio_rate5m", "5m"),
                        Q("slo:sli_error:ratio_rate1h", "1h"),
                        Q("slo:sli_error:ratio_rate6h", "6h"),
                        Q("slo:sli_error:ratio_rate3d", "3d"),
                        unit="percentunit",
                        width=12,
                    ),
                    panel(
                        "Burn rate (1 = spending the budget exactly in 30 days)",
                        Q("slo:sli_error:ratio_rate1h / 0.001", "1h"),
                        Q("slo:sli_error:ratio_rate6h / 0.001", "6h"),
                        unit="short",
                        width=12,
                        description="Pages at 14.4 (1h with 5m) or 6 (6h with 30m); tickets at 3 (1d) and 1 (3d).",
                    ),
                ),
            ),
            Row(
                "Scheduled reports (reports service)",
                (
                    panel(
                        "Report runs by trigger and status",
                        Q(
                            f"sum by (trigger, status) (increase(reports_runs_total{SCOPED}[{RATE}]))",
                            "{{trigger}} {{status}}",
                        ),
                        unit="short",
                        stack=True,
                        no_value="No report run (or no reports service scraped)",
                    ),
                    panel(
                        "Failures by stage",
                        Q(
                            f"sum by (stage) (increase(reports_run_failures_total{SCOPED}[{RATE}]))",
                            "{{stage}}",
                        ),
                        unit="short",
                        no_value="No failure",
                        description="ReportDeliveryFailing fires on any failure within an hour.",
                    ),
                    panel(
                        "Schedules overdue",
                        Q(f"max(reports_schedules_overdue{SCOPED})", "overdue"),
                        Q('max(reports_schedules{job=~"$job", instance=~"$instance", state="enabled"})', "enabled"),
                        unit="short",
                        no_value="No reports service scraped",
                        description="ReportSchedulesOverdue fires after 10 minutes with one overdue.",
                    ),
                    panel(
                        "PDF render time p50 / p95",
                        *quantiles("reports_render_seconds", 0.5, 0.95, selector=SCOPED, legend="render"),
                        unit="s",
                        no_value="No report rendered in the range",
                    ),
                ),
            ),
            Row(
                "Builds",
                (
                    panel(
                        "Running versions",
                        Q(f"count by (job, service, version, python) (vibelux_build_info{SCOPED})"),
                        unit="short",
                        kind="table",
                        width=24,
                        height=6,
                    ),
                ),
            ),
        ],
        description="The stack's services (RED metrics), the platform's dependencies (probes), and the API SLO.",
        tags=["services"],
        variables=[
            *job_and_instance("vibelux_build_info"),
            Variable("service", 'label_values(http_requests_total{job=~"$job"}, service)', "Service"),
            Variable("probe", f'label_values(service_up{{job="{PROBES_JOB}"}}, service)', "Dependency"),
        ],
        annotations=ANNOTATIONS,
        links=LINKS,
    )


def ratelimit() -> dict[str, Any]:
    requests = f"rate(ratelimit_requests_total{SCOPED}[{RATE}])"
    limited_selector, allowed_selector = scoped('decision="limited"'), scoped('decision="allowed"')
    limited = f"rate(ratelimit_requests_total{limited_selector}[{RATE}])"
    allowed = f"rate(ratelimit_requests_total{allowed_selector}[{RATE}])"
    return build_dashboard(
        "vibelux-ratelimit",
        "VibeLux / Rate limiting",
        [
            Row(
                "Traffic",
                (
                    panel(
                        "Requests by tier and decision",
                        Q(f"sum by (tier, decision) ({requests})", "{{tier}} {{decision}}"),
                        unit="reqps",
                        width=12,
                        stack=True,
                    ),
                    panel(
                        "Rate limited (429) by tier",
                        Q(
                            f"sum by (tier) ({limited})",
                            "{{tier}}",
                        ),
                        unit="reqps",
                        width=6,
                        no_value="No request limited",
                    ),
                    panel(
                        "Share limited",
                        Q(
                            f"(sum({limited}) or vector(0)) / sum({requests})",
                            "limited",
                        ),
                        unit="percentunit",
                        width=6,
                    ),
                    panel(
                        "Near the limit",
                        Q(
                            f"sum by (tier, window) (rate(ratelimit_near_limit_total{SCOPED}[{RATE}]))",
                            "{{tier}} {{window}}",
                        ),
                        unit="reqps",
                        width=12,
                        no_value="No client near its limit",
                    ),
                    panel(
                        "Upstream status classes",
                        Q(
                            f"sum by (status_class) ({allowed})",
                            "{{status_class}}",
                        ),
                        unit="reqps",
                        width=12,
                        stack=True,
                    ),
                ),
            ),
            Row(
                "Abuse",
                (
                    panel(
                        "Blocked by reason",
                        Q(f"sum by (reason) (rate(ratelimit_blocked_requests_total{SCOPED}[{RATE}]))", "{{reason}}"),
                        unit="reqps",
                        width=6,
                        no_value="Nothing blocked",
                    ),
                    panel("Active bans", Q(f"sum(ratelimit_active_bans{SCOPED})", "bans"), unit="short", width=6),
                    panel(
                        "New bans by source",
                        Q(f"sum by (source) (increase(ratelimit_bans_total{SCOPED}[{RATE}]))", "{{source}}"),
                        unit="short",
                        width=6,
                        no_value="No bans",
                    ),
                    panel(
                        "Abuse detections",
                        Q(
                            f"sum by (rule, mode) (rate(ratelimit_abuse_detections_total{SCOPED}[{RATE}]))",
                            "{{rule}} ({{mode}})",
                        ),
                        unit="ops",
                        width=6,
                        no_value="No abuse detected",
                    ),
                ),
            ),
            Row(
                "Upstream colours (releases)",
                (
                    panel(
                        "Requests by colour",
                        Q(f"sum by (colour) (rate(ratelimit_pool_requests_total{SCOPED}[{RATE}]))", "{{colour}}"),
                        unit="reqps",
                        width=6,
                    ),
                    panel(
                        "5xx ratio by colour",
                        Q(
                            f"sum by (colour) (rate(ratelimit_pool_errors_total{SCOPED}[{RATE}]))"
                            f" / sum by (colour) (rate(ratelimit_pool_requests_total{SCOPED}[{RATE}]))",
                            "{{colour}}",
                        ),
                        unit="percentunit",
                        width=6,
                    ),
                    panel(
                        "p99 by colour",
                        *quantiles(
                            "ratelimit_pool_duration_seconds", 0.99, by="colour", selector=SCOPED, legend="{{colour}}"
                        ),
                        unit="s",
                        width=6,
                    ),
                    panel(
                        "Weight by colour",
                        Q(f"max by (colour) (release_traffic_weight{SCOPED})", "{{colour}}"),
                        unit="short",
                        width=6,
                    ),
                ),
            ),
            Row(
                "Limiter health",
                (
                    panel(
                        "Decision latency p50 / p99",
                        *quantiles("ratelimit_decision_duration_seconds", 0.5, 0.99, selector=SCOPED),
                        unit="s",
                        width=8,
                    ),
                    panel(
                        "Upstream latency p50 / p99",
                        *quantiles("ratelimit_upstream_duration_seconds", 0.5, 0.99, selector=SCOPED),
                        unit="s",
                        width=8,
                    ),
                    panel(
                        "Redis errors and circuit",
                        Q(f"sum(rate(ratelimit_redis_errors_total{SCOPED}[{RATE}]))", "Redis errors/s"),
                        Q(f"max(ratelimit_circuit_open{SCOPED})", "circuit open"),
                        Q(
                            f"sum(rate(ratelimit_local_refusals_total{SCOPED}[{RATE}]))",
                            "429s without Redis (over-limit cache)/s",
                        ),
                        Q(f"sum(rate(ratelimit_leased_total{SCOPED}[{RATE}]))", "admitted without Redis (leases)/s"),
                        unit="short",
                        width=8,
                    ),
                ),
            ),
            cache_row(),
        ],
        description="The rate-limiting proxy: who is allowed, limited or blocked, and how fast the limiter decides.",
        tags=["ratelimit"],
        variables=job_and_instance("ratelimit_requests_total"),
        annotations=ANNOTATIONS,
        links=LINKS,
    )


def cache_row() -> Row:
    """The proxy's response cache (ratelimit_proxy/cache.py): what it answered, how much it served, what it
    could not store, and its Redis."""
    lookups = f"rate(ratelimit_cache_requests_total{SCOPED}[{RATE}])"
    from_cache = scoped('result=~"hit|stale|revalidated"')
    served = f"rate(ratelimit_cache_requests_total{from_cache}[{RATE}])"
    return Row(
        "Response cache",
        (
            panel(
                "Cache results (hit, miss, stale, revalidated, pass, bypass)",
                Q(f"sum by (result) ({lookups})", "{{result}}"),
                unit="reqps",
                width=8,
                stack=True,
                no_value="No request on a cached route",
            ),
            panel(
                "Hit ratio (served from the cache)",
                Q(f"(sum({served}) or vector(0)) / sum({lookups})", "hit ratio"),
                unit="percentunit",
                width=4,
                no_value="No request on a cached route",
            ),
            panel(
                "Bytes served from the cache",
                Q(f"sum(rate(ratelimit_cache_served_bytes_total{SCOPED}[{RATE}]))", "served"),
                unit="Bps",
                width=4,
            ),
            panel(
                "Not stored, by reason",
                Q(f"sum by (reason) (rate(ratelimit_cache_not_stored_total{SCOPED}[{RATE}]))", "{{reason}}"),
                unit="reqps",
                width=4,
                no_value="Nothing refused for storage",
            ),
            panel(
                "Cache Redis errors and purges",
                Q(f"sum(rate(ratelimit_cache_redis_errors_total{SCOPED}[{RATE}]))", "Redis errors/s"),
                Q(f"sum by (kind) (rate(ratelimit_cache_purges_total{SCOPED}[{RATE}]))", "{{kind}} purges/s"),
                unit="ops",
                width=4,
                no_value="No errors, no purges",
            ),
        ),
    )


def support() -> dict[str, Any]:
    return build_dashboard(
        "vibelux-support",
        "VibeLux / Support",
        [
            Row(
                "Backlog",
                (
                    panel(
                        "Open tickets by status",
                        Q(f"sum by (status) (support_tickets_open{SCOPED})", "{{status}}"),
                        unit="short",
                        stack=True,
                    ),
                    panel(
                        "Open tickets by priority",
                        Q(f"sum by (priority) (support_tickets_open{SCOPED})", "{{priority}}"),
                        unit="short",
                        stack=True,
                    ),
                    panel(
                        "Created vs resolved",
                        Q(f"sum(rate(support_tickets_created_total{SCOPED}[{RATE}]))", "created"),
                        Q(f"sum(rate(support_tickets_resolved_total{SCOPED}[{RATE}]))", "resolved"),
                        unit="ops",
                    ),
                    panel(
                        "Unassigned by priority",
                        Q(f"sum by (priority) (support_tickets_unassigned{SCOPED})", "{{priority}}"),
                        unit="short",
                        width=12,
                    ),
                ),
            ),
            Row(
                "SLA",
                (
                    panel(
                        "At risk by priority",
                        Q(f"sum by (priority) (support_tickets_at_risk{SCOPED})", "{{priority}}"),
                        unit="short",
                    ),
                    panel(
                        "Breached (open) by priority",
                        Q(f"sum by (priority) (support_tickets_breached{SCOPED})", "{{priority}}"),
                        unit="short",
                    ),
                    panel(
                        "Breaches",
                        Q(
                            f"sum by (metric, priority) (increase(support_sla_breaches_total{SCOPED}[{RATE}]))",
                            "{{metric}} {{priority}}",
                        ),
                        unit="short",
                        no_value="No SLA breach",
                    ),
                ),
            ),
            Row(
                "Response times (over the shown period)",
                (
                    panel(
                        "First response p50 / p90",
                        *quantiles(
                            "support_first_response_seconds",
                            0.5,
                            0.9,
                            by="priority",
                            selector=SCOPED,
                            legend="{{priority}}",
                            window="$__range",
                            function="increase",
                            instant=True,
                        ),
                        unit="s",
                        kind="bargauge",
                        width=12,
                        no_value="No first response in the period",
                    ),
                    panel(
                        "Resolution p50 / p90",
                        *quantiles(
                            "support_resolution_seconds",
                            0.5,
                            0.9,
                            by="priority",
                            selector=SCOPED,
                            legend="{{priority}}",
                            window="$__range",
                            function="increase",
                            instant=True,
                        ),
                        unit="s",
                        kind="bargauge",
                        width=12,
                        no_value="No ticket resolved in the period",
                    ),
                ),
            ),
        ],
        description="The support desk's load and its SLAs.",
        tags=["support"],
        variables=job_and_instance("support_tickets_open"),
        annotations=ANNOTATIONS,
        links=LINKS,
    )


def flags() -> dict[str, Any]:
    return build_dashboard(
        "vibelux-flags",
        "VibeLux / Feature flags",
        [
            Row(
                "Evaluations",
                (
                    panel(
                        "Evaluations by flag",
                        Q(f"sum by (flag) (rate(flags_evaluations_total{SCOPED}[{RATE}]))", "{{flag}}"),
                        unit="ops",
                        width=12,
                    ),
                    panel(
                        "Evaluations by variant",
                        Q(
                            f"sum by (flag, variant) (rate(flags_evaluations_total{SCOPED}[{RATE}]))",
                            "{{flag}} = {{variant}}",
                        ),
                        unit="ops",
                        width=12,
                    ),
                ),
            ),
            Row(
                "Configuration",
                (
                    panel(
                        "Stale flags",
                        Q(f"sum by (environment) (flags_stale_flags{SCOPED})", "{{environment}}"),
                        unit="short",
                        width=6,
                    ),
                    panel(
                        "Snapshot version",
                        Q(f"max by (environment) (flags_snapshot_version{SCOPED})", "{{environment}}"),
                        unit="short",
                        width=6,
                    ),
                    panel(
                        "Changes",
                        Q(f"sum by (action) (increase(flags_changes_total{SCOPED}[{RATE}]))", "{{action}}"),
                        unit="short",
                        width=6,
                        no_value="No flag changed",
                    ),
                    panel(
                        "SDK polls by result",
                        Q(f"sum by (result) (rate(flags_sdk_polls_total{SCOPED}[{RATE}]))", "{{result}}"),
                        unit="ops",
                        width=6,
                    ),
                ),
            ),
        ],
        description="Feature flag evaluations, changes and flags ready for removal.",
        tags=["flags"],
        variables=job_and_instance("flags_snapshot_version"),
        annotations=ANNOTATIONS,
        links=LINKS,
    )


def business() -> dict[str, Any]:
    return build_dashboard(
        "vibelux-business",
        "VibeLux / Business",
        [
            Row(
                "Revenue",
                (
                    panel(
                        "MRR by tier",
                        Q("sum by (tier) (business_mrr_usd)", "{{tier}}"),
                        unit="currencyUSD",
                        width=12,
                        stack=True,
                        links=(Link("MRR movements, retention and trials", dashboard_url("vibelux-revenue")),),
                    ),
                    panel(
                        "MRR change over 30 days",
                        Q("sum(business_mrr_change_30d_usd)", "change"),
                        unit="currencyUSD",
                        width=6,
                    ),
                    panel(
                        "Churned subscriptions",
                        Q("sum by (window) (business_churned_subscriptions)", "{{window}}"),
                        unit="short",
                        width=6,
                    ),
                ),
            ),
            Row(
                "Users",
                (
                    panel("Users by tier", Q("sum by (tier) (business_users)", "{{tier}}"), unit="short", stack=True),
                    panel("New sign-ups", Q("sum by (window) (business_new_signups)", "{{window}}"), unit="short"),
                    panel(
                        "User growth",
                        Q("max by (window) (business_user_growth_ratio)", "{{window}}"),
                        unit="percentunit",
                    ),
                    panel("Active users", Q("sum by (window) (business_active_users)", "{{window}}"), unit="short"),
                    panel("Active sessions", Q("sum(business_active_sessions)", "sessions"), unit="short"),
                    panel("AI requests", Q("sum by (window) (business_ai_requests)", "{{window}}"), unit="short"),
                ),
            ),
            Row(
                "Exporter queries",
                (
                    panel(
                        "Query errors",
                        Q(f"sum by (query) (rate(business_query_errors_total[{RATE}]))", "{{query}}"),
                        unit="ops",
                        no_value="No query failed",
                    ),
                    panel(
                        "Query duration", Q("max by (query) (business_query_duration_seconds)", "{{query}}"), unit="s"
                    ),
                    panel(
                        "Time since last success",
                        Q("time() - max by (query) (business_query_last_success_timestamp_seconds)", "{{query}}"),
                        unit="s",
                    ),
                ),
            ),
        ],
        description="Revenue, users and activity from the platform database (business exporter).",
        tags=["business"],
        annotations=ANNOTATIONS,
        links=LINKS,
        time_from="now-7d",
        refresh="5m",
    )


def backups() -> dict[str, Any]:
    """Per store: how much a restore now would lose (recovery point), whether the last drill proved a restore
    and how long it took (recovery time), and how old the last good backup is; red where an alert fires."""
    store = '{store=~"$store"}'
    drill_ok = f"restore_drill_last_success_timestamp_seconds{store}"
    drill_failed = f"restore_drill_last_failure_timestamp_seconds{store}"
    return build_dashboard(
        "vibelux-backups",
        "VibeLux / Backups",
        [
            Row(
                "Can we restore?",
                (
                    stat(
                        "Since last good backup",
                        Q(f"time() - max by (store) (backup_last_success_timestamp_seconds{store})", "{{store}}"),
                        unit="s",
                        thresholds=AGE_THRESHOLDS,
                        description="A full or incremental backup (PostgreSQL, attachments), a SQLite replica "
                        "proven current (sync) or a Redis export. Red: BackupTooOld.",
                    ),
                    stat(
                        "Recovery point, times its objective",
                        Q(
                            f"max by (store) (recovery_point_age_seconds{store})"
                            f" / max by (store) (backup_recovery_point_objective_seconds{store})",
                            "{{store}}",
                        ),
                        unit="short",
                        thresholds=OBJECTIVE_THRESHOLDS,
                        description="Committed data not yet in the object store, as a multiple of what the store "
                        "is built for (60 s of WAL, 1 s of SQLite, an hour of Redis or attachments). Red: "
                        "WalArchiveLagging.",
                    ),
                    stat(
                        "Since last good drill",
                        Q(f"time() - max by (store) ({drill_ok})", "{{store}}"),
                        unit="s",
                        thresholds=AGE_THRESHOLDS,
                        description="A restore into scratch that passed its integrity check and brought back its "
                        "sentinel. Red: RestoreDrillFailed.",
                    ),
                    stat(
                        "Last drill",
                        # RestoreDrillFailed's first two conditions: a failure newer than the last success, or
                        # failures only. Each side aggregated before `or`: VictoriaMetrics keeps only the `on`
                        # labels of a `bool` comparison (Prometheus the left side's), so unaggregated sides would
                        # not match and both would be kept.
                        Q(
                            f"max by (store) ({drill_ok} > bool on (job, instance, store) {drill_failed})"
                            f" or max by (store) ({drill_ok} * 0 + 1) or max by (store) ({drill_failed} * 0)",
                            "{{store}}",
                        ),
                        unit="short",
                        mappings=PROVED_FAILED,
                        thresholds=((None, "red"), (1, "green")),
                    ),
                    stat(
                        "Recovery time (last good drill)",
                        Q(f"max by (store) (restore_drill_duration_seconds{store})", "{{store}}"),
                        unit="s",
                        description="Restore, recovery and checks of the last drill that proved a restore.",
                    ),
                    stat(
                        "Database size (last good backup)",
                        Q(f"max by (store) (backup_size_bytes{store})", "{{store}}"),
                        unit="bytes",
                    ),
                ),
            ),
            Row(
                "Trends",
                (
                    panel(
                        "Recovery point age",
                        Q(f"max by (store) (recovery_point_age_seconds{store})", "{{store}}"),
                        unit="s",
                        width=12,
                    ),
                    panel(
                        "Age of the last good backup and drill",
                        Q(
                            f"time() - max by (store) (backup_last_success_timestamp_seconds{store})",
                            "{{store}} backup",
                        ),
                        Q(f"time() - max by (store) ({drill_ok})", "{{store}} drill"),
                        unit="s",
                        width=12,
                        thresholds=AGE_THRESHOLDS,
                    ),
                    panel(
                        "Recovery time (drill duration)",
                        Q(f"max by (store) (restore_drill_duration_seconds{store})", "{{store}}"),
                        unit="s",
                    ),
                    panel(
                        "WAL archive failures",
                        Q(f"sum by (store) (increase(backup_wal_archive_failures_total{store}[{RATE}]))", "{{store}}"),
                        unit="short",
                        description="WAL segments PostgreSQL's archive_command failed to push (pg_stat_archiver); "
                        "always 0 for the other stores, whose trouble shows as recovery point age.",
                    ),
                    panel(
                        "Database size in the last good backup",
                        Q(f"max by (store) (backup_size_bytes{store})", "{{store}}"),
                        unit="bytes",
                    ),
                ),
            ),
        ],
        description="Backups, WAL archiving and restore drills (vibelux-backup serve, job backup); runbook "
        "docs/runbooks/backups.md.",
        tags=["backups"],
        variables=[Variable("store", "label_values(backup_last_success_timestamp_seconds, store)")],
        annotations=ANNOTATIONS,
        links=LINKS,
        time_from="now-7d",
        refresh="1m",
    )


# Table transformations (Grafana's), applied in order. Labels arrive as text: sort periods as numbers.
def as_numbers(*fields: str) -> dict[str, Any]:
    return _convert(fields, "number")


def as_text(*fields: str) -> dict[str, Any]:
    return _convert(fields, "string")


def _convert(fields: tuple[str, ...], to: str) -> dict[str, Any]:
    conversions = [{"targetField": name, "destinationType": to} for name in fields]
    return {"id": "convertFieldType", "options": {"conversions": conversions, "fields": {}}}


def sort_by(name: str, desc: bool = False) -> dict[str, Any]:
    return {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": name, "desc": desc}]}}


def pivot(row: str, column: str) -> dict[str, Any]:
    """One row per `row` value, one column per `column` value. A combination with no sample becomes null
    (Grafana's default is "", which sorts and colours like a value), shown empty by EMPTY_CELL."""
    options = {"rowField": row, "columnField": column, "valueField": "Value", "emptyValue": "null"}
    return {"id": "groupingToMatrix", "options": options}


def organize(rename: dict[str, str], hide: tuple[str, ...] = ("Time",)) -> dict[str, Any]:
    """Rename columns (in this order, first) and hide others."""
    order = {name: index for index, name in enumerate(rename)}
    options = {"renameByName": rename, "excludeByName": dict.fromkeys(hide, True), "indexByName": order}
    return {"id": "organize", "options": options}


MERGE = {"id": "merge", "options": {}}
# A cell without a sample (a week that has not happened, a month before the history) shows nothing, not 0.
EMPTY_CELL = {
    "type": "special",
    "options": {"match": "null", "result": {"text": "", "color": "transparent", "index": 0}},
}


def column(name: str, **properties: Any) -> dict[str, Any]:
    """A field override: the column `name` gets `properties` (e.g. unit="time:YYYY-MM")."""
    values = [{"id": key.replace("_", "."), "value": value} for key, value in properties.items()]
    return {"matcher": {"id": "byName", "options": name}, "properties": values}


def period_label(current: str) -> dict[str, Any]:
    """Period index 0 is the current week or month: say it is in progress."""
    return {"type": "value", "options": {"0": {"text": f"0 ({current}, in progress)", "index": 0}}}


IN_PROGRESS = {
    "type": "value",
    "options": {"true": {"text": "in progress", "color": "orange", "index": 0}, "false": {"text": "", "index": 1}},
}
COMPLETE_CELLS = 'in_progress="false"'
GAINS, LOSSES = "new|expansion|reactivation", "contraction|churn"  # losses are drawn below the line


def revenue() -> dict[str, Any]:
    """Signup-week retention, MRR movements, revenue retention, ARPU and trials from the business exporter's
    computed queries (exporters/business/cohorts.py). Periods are relative indexes (0 = current), so every
    grid is an instant query pivoted by transformations; missing cells are null and render empty."""
    cohort = "Cohort (weeks ago)"
    month_table = [
        ("Month", "max by (month, in_progress) (business_month_start_timestamp_seconds) * 1000"),
        ("Opening", "max by (month, in_progress) (business_mrr_opening_usd)"),
        *(
            (movement.capitalize(), f'max by (month, in_progress) (business_mrr_movement_usd{{movement="{movement}"}})')
            for movement in ("new", "expansion", "reactivation", "contraction", "churn")
        ),
        ("Closing", "max by (month, in_progress) (business_mrr_closing_usd)"),
        ("Net retention", "max by (month, in_progress) (business_net_revenue_retention_ratio)"),
        ("Gross retention", "max by (month, in_progress) (business_gross_revenue_retention_ratio)"),
    ]
    trial_table = [
        ("Month", "max by (month, in_progress) (business_month_start_timestamp_seconds) * 1000"),
        ("Converted", 'max by (month, in_progress) (business_trials_ended{outcome="converted"})'),
        ("Expired", 'max by (month, in_progress) (business_trials_ended{outcome="expired"})'),
        ("Conversion", "max by (month, in_progress) (business_trial_conversion_ratio)"),
    ]

    def value_columns(names: list[str]) -> dict[str, str]:
        return {f"Value #{chr(ord('A') + index)}": name for index, name in enumerate(names)}

    def by_month(
        title: str, rows: list[tuple[str, str]], extra_overrides: tuple[dict[str, Any], ...], **options: Any
    ) -> Panel:
        """A table of months (0, the current one, first): one query per column, merged on the month."""
        names = [name for name, _ in rows]
        return panel(
            title,
            *(Q(expr, table=True) for _, expr in rows),
            kind="table",
            transformations=(
                MERGE,
                as_numbers("month"),
                sort_by("month"),
                organize({**value_columns(names), "in_progress": "Status"}, hide=("Time", "month")),
            ),
            mappings=(EMPTY_CELL,),
            overrides=(
                column("Month", unit="time:YYYY-MM"),
                column("Status", mappings=[IN_PROGRESS], custom_cellOptions={"type": "color-text"}),
                *extra_overrides,
            ),
            **options,
        )

    return build_dashboard(
        "vibelux-revenue",
        "VibeLux / Revenue and retention",
        [
            Row(
                "How to read",
                (
                    Text(
                        "Reading the grids",
                        "Periods are UTC calendar weeks and months counted back from now: **0 is the current one, "
                        "in progress**, and its figures will still change. An **empty cell has no figure** (a week "
                        "a cohort has not reached yet, a month before the platform's first user, a ratio over "
                        "nobody); **0% means it happened and nobody came back**. Week N of a cohort is the Nth "
                        "calendar week after its signup week; week 0 is 100% by definition. Figures are computed "
                        "every 15 minutes by the business exporter (exporters/business/cohorts.py).",
                        height=3,
                    ),
                ),
            ),
            Row(
                "Signup-week retention",
                (
                    panel(
                        "Retention by signup week (cohort x week N)",
                        Q("max by (cohort, week) (business_retention_ratio)", table=True),
                        unit="percentunit",
                        kind="table",
                        width=18,
                        height=11,
                        description="Share of each week's sign-ups active in the Nth calendar week after it. "
                        "A triangle: the last cell of each row is the current week, in progress; cells to its "
                        "right have not happened and are empty.",
                        transformations=(
                            as_numbers("cohort", "week"),
                            sort_by("week"),
                            pivot("cohort", "week"),
                            sort_by("cohort\\week", desc=True),
                            organize({"cohort\\week": cohort}),
                        ),
                        mappings=(EMPTY_CELL,),
                        field_config={
                            "decimals": 0,
                            "min": 0,
                            "max": 1,
                            "color": {"mode": "continuous-BlPu"},
                            "custom": {"align": "center", "cellOptions": {"type": "color-background"}},
                        },
                        overrides=(
                            column(
                                cohort,
                                unit="none",
                                mappings=[period_label("this week")],
                                custom_cellOptions={"type": "auto"},
                            ),
                        ),
                    ),
                    panel(
                        "Cohorts",
                        Q("max by (cohort) (business_cohort_start_timestamp_seconds) * 1000", table=True),
                        Q("max by (cohort) (business_cohort_users)", table=True),
                        unit="short",
                        kind="table",
                        width=6,
                        height=11,
                        description="Each cohort's signup week and how many signed up (empty: before the first "
                        "sign-up).",
                        transformations=(
                            MERGE,
                            as_numbers("cohort"),
                            sort_by("cohort", desc=True),
                            organize({"cohort": cohort, "Value #A": "Week of", "Value #B": "Users"}),
                        ),
                        mappings=(EMPTY_CELL,),
                        overrides=(
                            column("Week of", unit="time:YYYY-MM-DD"),
                            column(cohort, unit="none", mappings=[period_label("this week")]),
                        ),
                    ),
                    panel(
                        "Retention curve (complete weeks of all cohorts)",
                        Q(
                            f"sum by (week) (business_retained_users{{{COMPLETE_CELLS}}})"
                            f" / (sum by (week) (max by (cohort, week) (business_retained_users{{{COMPLETE_CELLS}}})"
                            " * 0 + on (cohort) group_left max by (cohort) (business_cohort_users)) > 0)",
                            table=True,
                        ),
                        unit="percentunit",
                        kind="barchart",
                        width=24,
                        height=7,
                        description="Users active in week N over the users of the cohorts whose week N is over "
                        "(weighted by cohort size; the current week is left out).",
                        transformations=(
                            as_numbers("week"),
                            sort_by("week"),
                            as_text("week"),
                            organize({"week": "Week N", "Value": "Retained"}),
                        ),
                        options={"xField": "Week N", "legend": {"showLegend": False}, "showValue": "auto"},
                        field_config={"min": 0, "max": 1},
                    ),
                ),
            ),
            Row(
                "MRR movements and revenue retention",
                (
                    panel(
                        "MRR movements by month",
                        Q(
                            f'max by (month, movement) (business_mrr_movement_usd{{movement=~"{GAINS}"}})'
                            f' or -max by (month, movement) (business_mrr_movement_usd{{movement=~"{LOSSES}"}})',
                            table=True,
                        ),
                        unit="currencyUSD",
                        kind="barchart",
                        width=16,
                        height=9,
                        description="Gains above the line, losses (contraction, churn) below it; months ago, the "
                        "current month (0) in progress. Opening + gains - losses = closing.",
                        transformations=(
                            as_numbers("month"),
                            sort_by("month", desc=True),
                            as_text("month"),
                            pivot("month", "movement"),
                            organize({"month\\movement": "Months ago"}),
                        ),
                        options={
                            "xField": "Months ago",
                            "stacking": "normal",
                            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
                        },
                        overrides=(column("Months ago", mappings=[period_label("this month")]),),
                    ),
                    stat(
                        "Net revenue retention (12 months)",
                        Q("max(business_net_revenue_retention_12m_ratio)"),
                        unit="percentunit",
                        width=4,
                        height=9,
                        description="What the customers paying 12 months ago pay now (at the start of this "
                        "month), over what they paid then.",
                        no_value="Not 12 months of customers yet",
                    ),
                    stat(
                        "Gross revenue retention (12 months)",
                        Q("max(business_gross_revenue_retention_12m_ratio)"),
                        unit="percentunit",
                        width=4,
                        height=9,
                        description="Net revenue retention without expansion: what was kept (at most 100%).",
                        no_value="Not 12 months of customers yet",
                    ),
                    by_month(
                        "Revenue by month",
                        month_table,
                        unit="currencyUSD",
                        width=24,
                        height=10,
                        description="MRR at each month's start and end and what moved it; net and gross "
                        "retention over the customers paying at its start. Empty: before the platform's history, "
                        "or a ratio over no customers.",
                        extra_overrides=(
                            column("Net retention", unit="percentunit", decimals=1),
                            column("Gross retention", unit="percentunit", decimals=1),
                        ),
                    ),
                ),
            ),
            Row(
                "Customers and trials",
                (
                    panel(
                        "ARPU by tier",
                        Q("max by (tier) (business_arpu_usd)", "{{tier}}"),
                        unit="currencyUSD",
                        description="MRR of the tier over its paying customers.",
                    ),
                    panel(
                        "Paying customers by tier",
                        Q("max by (tier) (business_paying_customers)", "{{tier}}"),
                        unit="short",
                        stack=True,
                    ),
                    stat("Trials running", Q("max(business_trials_running)"), unit="short", width=4),
                    stat(
                        "Trial conversion, last month",
                        Q('max(business_trial_conversion_ratio{month="1"})'),
                        unit="percentunit",
                        width=4,
                        description="Of the trials that ended last month, the share that became paid.",
                        no_value="No trial ended last month",
                    ),
                    by_month(
                        "Trial-to-paid conversion by month",
                        trial_table,
                        unit="short",
                        width=24,
                        height=8,
                        description="Trials that ended in each month, by outcome, and the share that converted.",
                        extra_overrides=(column("Conversion", unit="percentunit", decimals=0),),
                    ),
                ),
            ),
        ],
        description="Signup-week retention, MRR movements, revenue retention, ARPU and trial conversion "
        "(the business exporter's computed queries).",
        tags=["business"],
        annotations=ANNOTATIONS,
        links=LINKS,
        time_from="now-30d",
        refresh="15m",
    )


# The query exporter's statement text, one per fingerprint, to join onto its counters (exporters/queries).
STATEMENT_TEXT = "topk by (fingerprint) (1, max by (fingerprint, query) (pg_statement_info))"
AVAILABLE = (
    {
        "type": "value",
        "options": {"0": {"text": "not installed", "color": "orange"}, "1": {"text": "installed", "color": "green"}},
    },
)


def statement_table(title: str, expr: str, unit: str, description: str) -> Panel:
    """The top statements over the shown period, with their text (the "other" bucket has none: left out)."""
    return panel(
        title,
        Q(f"topk(10, ({expr}) * on (fingerprint) group_left (query) {STATEMENT_TEXT})", instant=True, table=True),
        unit=unit,
        kind="table",
        width=24,
        height=9,
        description=description,
        no_value="No statements yet: the exporter needs two reads of pg_stat_statements",
        transformations=(
            organize(
                {"fingerprint": "Fingerprint", "statement_type": "Type", "query": "Statement", "Value": title},
                hide=("Time", "job", "instance"),
            ),
        ),
    )


NO_POSTGRES = "No PostgreSQL watched: the query exporter runs where one does (docker-compose.production.yml)"


def queries() -> dict[str, Any]:
    """What the databases spend their time on: PostgreSQL's own statistics (the query exporter, top K plus
    other), the services' statement timer (every engine, SQLite too), and index suggestions hypopg confirmed."""
    exec_seconds = "sum by (fingerprint, statement_type) (increase(pg_statement_exec_seconds_total[$__range]))"
    calls = "sum by (fingerprint, statement_type) (increase(pg_statement_calls_total[$__range]))"
    hits = f"sum(rate(pg_statement_shared_blocks_hit_total[{RATE}]))"
    reads = f"sum(rate(pg_statement_shared_blocks_read_total[{RATE}]))"
    by_fingerprint = "sum by (fingerprint) (rate({metric}[" + RATE + "]))"
    service_sum = f"sum by (service, fingerprint) (rate(db_statement_duration_seconds_sum[{RATE}]))"
    service_count = f"sum by (service, fingerprint) (rate(db_statement_duration_seconds_count[{RATE}]))"
    return build_dashboard(
        "vibelux-queries",
        "VibeLux / Database queries",
        [
            Row(
                "PostgreSQL: top statements (pg_stat_statements)",
                (
                    statement_table(
                        "Total time",
                        exec_seconds,
                        "s",
                        "Execution time over the shown period, by statement fingerprint (the normalised text).",
                    ),
                    statement_table("Calls", calls, "short", "Calls over the shown period."),
                    statement_table(
                        "Mean time",
                        f"{exec_seconds} / ({calls} > 0)",
                        "s",
                        "Execution time per call over the shown period, among the exporter's top K by total time.",
                    ),
                    panel(
                        "Execution time by statement",
                        Q(
                            f"topk(10, {by_fingerprint.format(metric='pg_statement_exec_seconds_total')})",
                            "{{fingerprint}}",
                        ),
                        unit="s",
                        no_value=NO_POSTGRES,
                        stack=True,
                        description="Seconds of execution per second; other: every statement outside the top K.",
                    ),
                    panel(
                        "Calls by statement",
                        Q(f"topk(10, {by_fingerprint.format(metric='pg_statement_calls_total')})", "{{fingerprint}}"),
                        unit="ops",
                        no_value=NO_POSTGRES,
                    ),
                    panel(
                        "Mean time per call",
                        Q(
                            f"topk(10, {by_fingerprint.format(metric='pg_statement_exec_seconds_total')}"
                            f" / ({by_fingerprint.format(metric='pg_statement_calls_total')} > 0))",
                            "{{fingerprint}}",
                        ),
                        unit="s",
                        no_value=NO_POSTGRES,
                    ),
                ),
            ),
            Row(
                "PostgreSQL: cache and statistics",
                (
                    stat(
                        "Shared-buffer hit ratio",
                        Q(f"{hits} / ({hits} + {reads})", "hit ratio"),
                        unit="percentunit",
                        no_value=NO_POSTGRES,
                        thresholds=((None, "red"), (0.9, "yellow"), (0.99, "green")),
                        description="Blocks the statements found in shared buffers, against those read from disk "
                        "or the OS cache.",
                    ),
                    panel(
                        "Shared-buffer hit ratio over time",
                        Q(f"{hits} / ({hits} + {reads})", "hit ratio"),
                        unit="percentunit",
                        no_value=NO_POSTGRES,
                        width=8,
                    ),
                    panel(
                        "Blocks read from disk by statement",
                        Q(
                            f"topk(10, {by_fingerprint.format(metric='pg_statement_shared_blocks_read_total')})",
                            "{{fingerprint}}",
                        ),
                        unit="short",
                        no_value=NO_POSTGRES,
                        width=6,
                    ),
                    stat(
                        "Statements tracked",
                        Q("sum(pg_statements_entries)", "entries"),
                        unit="short",
                        no_value=NO_POSTGRES,
                        width=3,
                        description="Entries pg_stat_statements holds; the exporter keeps the top K of them.",
                    ),
                    stat(
                        "Evicted entries",
                        Q("sum(increase(pg_statements_deallocations_total[$__range]))", "evicted"),
                        unit="short",
                        no_value=NO_POSTGRES,
                        width=3,
                        description="Entries dropped at pg_stat_statements.max over the shown period: raise it "
                        "when this grows, their calls between two reads are lost.",
                    ),
                ),
            ),
            Row(
                "PostgreSQL: index suggestions (hypopg)",
                (
                    panel(
                        "Index suggestions the planner confirmed",
                        Q(
                            "max by (table, column, fingerprint) (pg_index_suggestion_cost_reduction_ratio)"
                            f" * on (fingerprint) group_left (query) {STATEMENT_TEXT}",
                            instant=True,
                            table=True,
                        ),
                        unit="percentunit",
                        kind="table",
                        width=18,
                        no_value="None: no sequential scan a single-column index would fix (or hypopg is missing)",
                        description="CREATE INDEX ON <table> (<column>) makes the planner use the index for the "
                        "statement and cuts its estimated cost by this much (a hypothetical index, never built). "
                        "Checked for the slowest SELECTs on the tables most read by sequential scans.",
                        transformations=(
                            organize(
                                {
                                    "table": "Table",
                                    "column": "Column",
                                    "Value": "Cost reduction",
                                    "query": "Statement",
                                    "fingerprint": "Fingerprint",
                                },
                                hide=("Time", "job", "instance"),
                            ),
                        ),
                    ),
                    stat(
                        "Extensions",
                        Q("max by (extension) (pg_insights_extension_available)", "{{extension}}"),
                        unit="short",
                        no_value=NO_POSTGRES,
                        width=6,
                        mappings=AVAILABLE,
                        description="pg_stat_statements feeds the statements; hypopg the suggestions.",
                    ),
                ),
            ),
            Row(
                "Services: statement timer (SQLite and PostgreSQL)",
                (
                    panel(
                        "Statement time by service and fingerprint",
                        Q(f"topk(10, {service_sum})", "{{service}} {{fingerprint}}"),
                        unit="s",
                        description="Seconds spent per second in statements, timed in each service's process "
                        "(service_kit/statements.py); fingerprints past the cap are other.",
                    ),
                    panel(
                        "Statements by service and type",
                        Q(
                            f"sum by (service, statement_type) (rate(db_statement_duration_seconds_count[{RATE}]))",
                            "{{service}} {{statement_type}}",
                        ),
                        unit="ops",
                    ),
                    panel(
                        "Statement latency by service",
                        *quantiles("db_statement_duration_seconds", 0.5, 0.95, by="service", legend="{{service}}"),
                        unit="s",
                    ),
                    panel(
                        "Slowest statements (mean) by service",
                        Q(f"topk(10, {service_sum} / ({service_count} > 0))", "{{service}} {{fingerprint}}"),
                        unit="s",
                        width=12,
                        description="The slow-statement log line carries the same fingerprint, with the "
                        "normalised text and never the parameters.",
                    ),
                    panel(
                        "Query exporter runs",
                        Q(f"sum by (task) (rate(pg_insights_task_errors_total[{RATE}]))", "{{task}} errors"),
                        Q("time() - max by (task) (pg_insights_task_last_success_timestamp_seconds)", "{{task}} age"),
                        unit="short",
                        width=12,
                        no_value="No query exporter: it runs where a PostgreSQL does (docker-compose.production.yml)",
                    ),
                ),
            ),
        ],
        description="Database queries: PostgreSQL's statement statistics (exporter-queries, job queries), the "
        "services' statement timer on every engine, and index suggestions confirmed with hypopg.",
        tags=["databases"],
        annotations=ANNOTATIONS,
        links=LINKS,
        refresh="1m",
    )


DASHBOARDS = {
    "overview": overview,
    "infrastructure": infrastructure,
    "services": services,
    "ratelimit": ratelimit,
    "support": support,
    "flags": flags,
    "business": business,
    "backups": backups,
    "revenue": revenue,
    "queries": queries,
}
