"""The release controller's settings: the ``release`` section of the proxy's config
(config/ratelimit_proxy.yml), since the controller acts on the proxy's pools, Redis and audit log."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from service_kit.config import ConfigError, checked, positive

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def percent_steps(steps: list[int]) -> str | None:
    if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)) or steps[-1] != 100:
        return "rising percentages between 1 and 100, ending at 100"
    return None


def ratio(value: float) -> str | None:
    return None if 0 <= value <= 1 else "a ratio between 0 and 1"


def at_least_one(value: int) -> str | None:
    return None if value >= 1 else "at least 1"


@dataclass(frozen=True)
class SmokeRequest:
    """Sent straight to the new colour's URL (not through the proxy) by the health gate."""

    path: str
    method: str = "GET"
    status: int = 200


@dataclass(frozen=True)
class GateSettings:
    """Before any traffic moves: the new colour's ready_path answers 200 and every smoke request its status,
    retried every ``retry_seconds`` for up to ``timeout_seconds``."""

    timeout_seconds: float = checked(60.0, positive)
    retry_seconds: float = checked(2.0, positive)
    smoke: list[SmokeRequest] = field(default_factory=lambda: [SmokeRequest("/api/v1/users")])


@dataclass(frozen=True)
class AnalysisSettings:
    """Every ``interval_seconds`` after a step, Prometheus is asked about the last ``window_seconds`` of each
    colour; ``per_step`` passing analyses in a row move to the next step."""

    prometheus_url: str = "http://127.0.0.1:9090"
    selector: str = 'job="ratelimit-proxy"'  # which proxy's series (staging and production share a Prometheus)
    interval_seconds: float = checked(60.0, positive)
    window_seconds: float = checked(60.0, positive)
    per_step: int = checked(1, at_least_one)
    max_inconclusive: int = checked(5, at_least_one)  # in a row: then the release pauses for a person
    min_requests: int = checked(20, at_least_one)  # fewer in the window is too little to judge: inconclusive
    max_error_ratio: float = checked(0.05, ratio)
    max_error_ratio_increase: float = checked(0.02, ratio)  # above the old colour's
    max_p99_seconds: float = checked(1.0, positive)
    max_p99_factor: float = checked(1.5, positive)  # times the old colour's p99 ...
    p99_margin_seconds: float = checked(
        0.05, lambda v: None if v >= 0 else "0 or more seconds"
    )  # ... and this much slower
    # Fewer requests of a colour in the window: its p99 is its slowest request alone, so not judged.
    min_latency_requests: int = checked(100, at_least_one)
    query_timeout_seconds: float = checked(5.0, positive)


@dataclass(frozen=True)
class ReleaseSettings:
    # checked() gives a list default as a field(default_factory=...): not shared between instances
    steps: list[int] = checked([5, 25, 50, 100], percent_steps)  # noqa: RUF009
    gate: GateSettings = field(default_factory=GateSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    lease_seconds: float = checked(15.0, positive)  # one controller at a time; another takes over after this
    poll_seconds: float = checked(0.5, positive)
    # The pre-release migration check (issue 17 item 4, `vibelux-migrations check`): the command to run
    # before the gate; empty: skipped, and the release's events say so.
    migration_check: list[str] = field(default_factory=list)


def validate_release(release: ReleaseSettings, source: str) -> None:
    """What the field types cannot say: smoke requests a server can be sent, a Prometheus URL, a window that
    holds at least one analysis interval."""
    for i, smoke in enumerate(release.gate.smoke):
        key = f"release.gate.smoke[{i}]"
        if not smoke.path.startswith("/"):
            raise ConfigError(f"{key}.path", source, "a path starting with /", smoke.path)
        if smoke.method not in METHODS:
            raise ConfigError(f"{key}.method", source, f"one of {', '.join(METHODS)}", smoke.method)
        if not 100 <= smoke.status <= 599:
            raise ConfigError(f"{key}.status", source, "an HTTP status (100-599)", smoke.status)
    url = urlsplit(release.analysis.prometheus_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError("release.analysis.prometheus_url", source, "http(s)://host[:port]", url.geturl())
    if release.analysis.window_seconds < release.analysis.interval_seconds:
        expected = "at least interval_seconds (each analysis must see all the traffic since the last)"
        raise ConfigError("release.analysis.window_seconds", source, expected, release.analysis.window_seconds)
