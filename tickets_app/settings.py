"""Settings of the support desk: config/tickets.yml, overridden by TICKETS_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from service_kit.config import checked, positive, secret, url_check
from service_kit.settings import (
    DatabaseSettings,
    JobsSettings,
    JWTSettings,
    LoggingSettings,
    SentrySettings,
    ServerSettings,
)


@dataclass(frozen=True)
class SlaSettings:
    at_risk_minutes: float = checked(60.0, positive)
    auto_close_days: float = checked(4.0, positive)
    # Breach detection and auto-close: the job `sla_sweep`, run once per interval across all replicas.
    sweep_interval_seconds: float = checked(30.0, lambda v: None if v >= 0 else "0 (off) or more seconds")


@dataclass(frozen=True)
class AttachmentSettings:
    directory: str = ".run/tickets-attachments"
    max_file_bytes: int = checked(10 * 1024 * 1024, positive)
    max_user_bytes_per_day: int = checked(200 * 1024 * 1024, positive)


@dataclass(frozen=True)
class AlertSettings:
    """The shared token Alertmanager sends as `Authorization: Bearer …` (empty disables the webhook), and
    the Alertmanager that agents acknowledge alerts in (acks are silences there)."""

    webhook_token: str = secret()
    alertmanager_url: str = checked("http://127.0.0.1:9093", url_check("http", "https"))


@dataclass(frozen=True)
class RunbookSettings:
    """Where the pages served at /runbooks are (docs/runbooks/ of the checkout or the image)."""

    directory: str = "docs/runbooks"


@dataclass(frozen=True)
class WebSettings:
    secret_key: str = secret()
    secure_cookie: bool = False
    session_hours: float = checked(12.0, positive)


@dataclass(frozen=True)
class TicketsSettings:
    server: ServerSettings = field(default_factory=lambda: ServerSettings(port=8081))
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    sentry: SentrySettings = field(default_factory=SentrySettings)
    database: DatabaseSettings = field(default_factory=lambda: DatabaseSettings(url="sqlite:///.run/tickets.sqlite3"))
    jwt: JWTSettings = field(default_factory=JWTSettings)
    sla: SlaSettings = field(default_factory=SlaSettings)
    attachments: AttachmentSettings = field(default_factory=AttachmentSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    web: WebSettings = field(default_factory=WebSettings)
    runbooks: RunbookSettings = field(default_factory=RunbookSettings)
    jobs: JobsSettings = field(default_factory=JobsSettings)
