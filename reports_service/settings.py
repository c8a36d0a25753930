"""Settings of the reports service (config/reports.yml, environment prefix ``REPORTS``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from service_kit.config import checked, positive, secret, url_check
from service_kit.settings import DatabaseSettings, JobsSettings, LoggingSettings, SentrySettings, ServerSettings


def _non_negative(value: int) -> str | None:
    return None if value >= 0 else "0 or more"


def _between(low: float, high: float) -> object:
    def check(value: float) -> str | None:
        return None if low <= value <= high else f"between {low:g} and {high:g}"

    return check


def _address(value: str) -> str | None:
    return None if "@" in value and " " not in value.strip() else "an email address like reports@example.com"


@dataclass(frozen=True)
class PlatformSettings:
    """The platform database the reports read (exporters/business/schema.py tables, api_usage_rollups)."""

    url: str = checked("sqlite:///.run/demo/platform.sqlite3", url_check("sqlite", "postgresql", "postgresql+psycopg"))
    # A report that runs longer is stopped (PostgreSQL statement_timeout, SQLite's progress handler).
    query_timeout_seconds: float = checked(10.0, positive)
    # Keep the usage summaries in this database (per day and key, per day and per hour by tier), so usage
    # reports read a few rows per period (reports_service/summary.py); false: read-only, every report reads
    # the minute rows.
    daily_summary: bool = True
    summary_refresh_seconds: float = checked(300.0, positive)
    # A period is summarised once it ended this long ago, so the proxy's last flushes of it (every
    # usage.flush_seconds, 10 s) are in; later ones are counted when the next refresh recomputes it.
    summary_settle_seconds: float = checked(120.0, positive)


@dataclass(frozen=True)
class SmtpSettings:
    """Where scheduled reports are mailed. An empty host keeps the PDFs for download only (make up)."""

    host: str = ""
    port: int = checked(587, lambda v: None if 1 <= v <= 65535 else "a TCP port between 1 and 65535")
    # starttls: plain connection upgraded with STARTTLS (port 587); tls: TLS from the first byte (465);
    # none: no encryption, for a relay on loopback only.
    security: Literal["starttls", "tls", "none"] = "starttls"
    ca_file: str = ""  # PEM bundle of a private CA; empty: the system's trust store
    username: str = ""
    password: str = secret()  # REPORTS_SMTP__PASSWORD or REPORTS_SMTP__PASSWORD_FILE
    from_address: str = checked("reports@vibelux.invalid", _address)
    timeout_seconds: float = checked(30.0, positive)


@dataclass(frozen=True)
class ReportsSection:
    # How often a runner looks for due schedules (one runner at a time across replicas: service_kit/jobs.py).
    sweep_seconds: float = checked(15.0, positive)
    # After downtime, at most this many missed occurrences of a schedule are run (the latest ones); older
    # ones are counted as skipped. 0: run none of the missed ones, only the schedule's next occurrence.
    catch_up_limit: int = checked(3, _non_negative)
    # Occurrences run per sweep: the sweep's transaction holds the schedule while it runs, so keep it short.
    max_runs_per_sweep: int = checked(2, positive)
    max_rows: int = checked(10_000, positive)
    # Kept PDFs older than this are deleted by the sweep.
    keep_runs_days: int = checked(90, positive)
    # An enabled schedule whose occurrence is this late counts in reports_schedules_overdue.
    overdue_seconds: float = checked(600.0, positive)
    chart_dpi: int = checked(110, _between(50, 300))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ReportsSettings:
    server: ServerSettings = field(default_factory=lambda: ServerSettings(port=8083))
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    sentry: SentrySettings = field(default_factory=SentrySettings)
    database: DatabaseSettings = field(default_factory=lambda: DatabaseSettings(url="sqlite:///.run/reports.sqlite3"))
    jobs: JobsSettings = field(default_factory=JobsSettings)
    platform: PlatformSettings = field(default_factory=PlatformSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    reports: ReportsSection = field(default_factory=ReportsSection)
