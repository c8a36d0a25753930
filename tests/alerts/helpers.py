"""What the alerting tests share: the repository's Alertmanager config as tests run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def alertmanager_config(webhook_url: str | None = None, timings: dict[str, str] | None = None) -> dict[str, Any]:
    """config/alertmanager.yml with, optionally, the support desk webhook at `webhook_url` and shorter timers
    (applied to the root route and removed from child routes, so every route inherits them)."""
    config: dict[str, Any] = yaml.safe_load((REPO / "config" / "alertmanager.yml").read_text())
    if timings:
        config["route"].update(timings)
        for route in config["route"]["routes"]:
            for key in timings:
                route.pop(key, None)
    if webhook_url:
        for receiver in config["receivers"]:
            for webhook in receiver.get("webhook_configs", []):
                webhook["url"] = webhook_url
    return config
