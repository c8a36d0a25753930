"""Setting sections every service shares; each service's settings class embeds the ones it uses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from service_kit.config import checked, port_check, positive, ratio, secret, url_check


@dataclass(frozen=True)
class ServerSettings:
    """How granian serves the app; workers > 1 switches metrics to multiprocess mode."""

    host: str = "127.0.0.1"
    port: int = checked(8000, port_check)
    workers: int = checked(2, lambda v: None if 1 <= v <= 64 else "between 1 and 64 workers")
    blocking_threads: int = checked(16, lambda v: None if 1 <= v <= 256 else "between 1 and 256 threads")
    max_body_bytes: int = checked(10 * 1024 * 1024, positive)


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json: bool = True


@dataclass(frozen=True)
class SentrySettings:
    """Sentry is off unless a DSN comes from the environment."""

    dsn: str = secret()
    environment: str = "development"
    traces_sample_rate: float = checked(0.0, ratio)
    send_user_email: bool = False


@dataclass(frozen=True)
class JWTSettings:
    """Optional identity-provider tokens (Clerk, Auth0, …) verified against a JWKS URL."""

    jwks_url: str = checked("", url_check("http", "https"))
    issuer: str = ""
    audience: str = ""
    algorithms: list[str] = dataclasses.field(default_factory=lambda: ["RS256"])
    user_id_claim: str = "sub"
    role_claim: str = "role"
    tier_claim: str = "tier"
    default_role: Literal["admin", "agent", "viewer", "service", "customer"] = "customer"


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = checked("sqlite:///.run/service.sqlite3", url_check("sqlite", "postgresql", "postgresql+psycopg"))
    echo: bool = False
    # service_kit/statements.py: statements at least this slow get a log line (fingerprint and duration only)
    slow_statement_seconds: float = checked(0.25, positive)
    # distinct fingerprints with their own histogram series per process; later ones are "other"
    statement_fingerprints: int = checked(50, lambda v: None if 1 <= v <= 500 else "between 1 and 500 fingerprints")


@dataclass(frozen=True)
class JobsSettings:
    """How this process's runner shares periodic jobs with every other worker and replica (service_kit/jobs.py)."""

    # The longest a runner sleeps before it reads the schedule again, e.g. while another runner holds a due job.
    poll_seconds: float = checked(2.0, positive)
    # PostgreSQL ends a runner's session once it has been silent this long inside a job (a frozen host or a
    # partition), so another replica can take the job over; a job must not pause longer between statements.
    stalled_seconds: float = checked(60.0, lambda v: None if v >= 1 else "at least 1 second")
