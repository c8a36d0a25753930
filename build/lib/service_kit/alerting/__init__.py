"""Acknowledging alerts: an ack is a short Alertmanager silence that says who, why and until when."""

from __future__ import annotations

from service_kit.alerting.silences import (
    ACK_PREFIX,
    Ack,
    AlertmanagerClient,
    AlertmanagerError,
    parse_duration,
    parse_matchers,
    silence_payload,
)

__all__ = [
    "ACK_PREFIX",
    "Ack",
    "AlertmanagerClient",
    "AlertmanagerError",
    "parse_duration",
    "parse_matchers",
    "silence_payload",
]
