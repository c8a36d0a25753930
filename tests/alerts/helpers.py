"""What the alerting tests share: the repository's Alertmanager config as tests run it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def alertmanager_config(webhook_url: str | None = None, timings: dict[str, str] | None = None) -> dict[str, Any]:
    """config/alertmanager.yml with its templates by absolute path (a test's copy is written elsewhere) and,
    optionally, the support desk webhook at `webhook_url` and shorter timers (applied to the root route and
    removed from child routes, so every route inherits them)."""
    config: dict[str, Any] = yaml.safe_load((REPO / "config" / "alertmanager.yml").read_text())
    config["templates"] = [str(REPO / "config" / template) for template in config["templates"]]
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


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of alert_rules/*.yml, each with the file it came from under `file`."""
    rules = []
    for path in sorted((REPO / "alert_rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [rule | {"file": path.name} for rule in group["rules"] if "alert" in rule]
    return rules


def recording_rule_names() -> set[str]:
    groups = yaml.safe_load((REPO / "alert_rules" / "recording.yml").read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"]}


def contract_metric_names() -> set[str]:
    """Metric names docs/conventions.md promises (backticked names, with or without their labels)."""
    text = (REPO / "docs" / "conventions.md").read_text()
    return set(re.findall(r"`([a-z][a-z0-9_]*_[a-z0-9_]+)(?:\{[^`]*\})?`", text))


def unknown_metrics(names: set[str]) -> set[str]:
    """Names neither in the contract, nor recorded by our rules, nor node_exporter's, nor Prometheus's own."""
    known = contract_metric_names() | recording_rule_names() | {"ALERTS", "up"}
    return {
        name
        for name in names
        if name not in known and re.sub(r"_(bucket|sum|count)$", "", name) not in known and not name.startswith("node_")
    }
