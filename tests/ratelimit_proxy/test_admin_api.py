"""The admin API's contract: every body is checked by its model (nothing invalid is stored, nothing is a 500),
the tiers are the platform's, and /openapi.json documents what the models check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from ratelimit_proxy.cli import cli
from ratelimit_proxy.config import load
from ratelimit_proxy.policy import Policy
from service_kit.config import ConfigError
from service_kit.tiers import TIERS

pytestmark = pytest.mark.integration
Pair = tuple[Flask, FlaskClient, dict[str, str]]


def details_of(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.get_data(as_text=True)
    details: dict[str, str] = response.get_json()["error"]["details"]
    return details


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tier": [], "owner": "acme"}, "tier"),  # was a 500: a list is no dict key
        ({"tier": "gold", "owner": "acme"}, "tier"),
        ({"tier": "free", "owner": "a\u0000b"}, "owner"),  # was stored
        ({"tier": "free", "owner": "x" * 201}, "owner"),  # was stored
        ({"tier": "free", "owner": 7}, "owner"),
        ({"tier": "free", "owner": "acme", "colour": "red"}, "colour"),  # was silently dropped
    ],
)
def test_key_creation_refuses_a_bad_field_and_stores_nothing(pair: Pair, body: dict[str, Any], field: str) -> None:
    _, admin, headers = pair
    assert field in details_of(admin.post("/api/v1/keys", json=body, headers=headers))
    assert admin.get("/api/v1/keys", headers=headers).get_json()["data"] == []


def test_key_change_with_an_unhashable_tier_is_a_422_not_a_500(pair: Pair) -> None:
    _, admin, headers = pair
    key_id = admin.post("/api/v1/keys", json={"tier": "free", "owner": "acme"}, headers=headers).get_json()["key_id"]
    assert "tier" in details_of(admin.patch(f"/api/v1/keys/{key_id}", json={"tier": []}, headers=headers))
    assert admin.get("/api/v1/keys", headers=headers).get_json()["data"][0]["tier"] == "free"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"network": "198.51.100.7", "seconds": True}, "seconds"),  # was a one-second ban
        ({"network": "198.51.100.7", "seconds": 10**30}, "seconds"),
        ({"network": "198.51.100.7", "seconds": 0}, "seconds"),
        ({"network": "198.51.100.7", "reason": {"a": 1}}, "reason"),  # was stored as "{'a': 1}"
        ({"network": "198.51.100.7", "reason": "a\u0000b"}, "reason"),  # was stored
        ({"network": "198.51.100.7", "reason": "x" * 201}, "reason"),  # was cut to 200 without a word
        ({"network": "198.51.100.7/33"}, "network"),
        ({"seconds": 60}, "network"),
    ],
)
def test_ban_creation_refuses_a_bad_field_and_stores_nothing(pair: Pair, body: dict[str, Any], field: str) -> None:
    _, admin, headers = pair
    assert field in details_of(admin.post("/api/v1/bans", json=body, headers=headers))
    assert admin.get("/api/v1/bans", headers=headers).get_json()["data"] == []


def test_unknown_tier_from_the_cli_is_refused_and_stores_nothing(redis_url: str, tmp_path: Path) -> None:
    config = tmp_path / "proxy.yml"
    config.write_text(
        yaml.safe_dump({"redis": {"url": redis_url}, "database": {"url": f"sqlite:///{tmp_path / 'p.sqlite3'}"}})
    )
    env = {"VIBELUX_RATELIMIT_PROXY_CONFIG": str(config)}
    runner = CliRunner()
    refused = runner.invoke(cli, ["keys", "create", "--tier", "gold", "--owner", "acme"], env=env)
    assert refused.exit_code == 2 and "tier" in refused.output
    empty_owner = runner.invoke(cli, ["keys", "create", "--tier", "free", "--owner", ""], env=env)
    assert empty_owner.exit_code == 2 and "owner" in empty_owner.output
    assert runner.invoke(cli, ["keys", "list"], env=env).output == ""


def write_tiers(tmp_path: Path, names: list[str]) -> Path:
    limits = {"burst_per_second": 5, "per_minute": 20, "per_hour": 100, "ai_per_day": 50}
    config = tmp_path / "proxy.yml"
    config.write_text(yaml.safe_dump({"limits": {"tiers": {name: limits for name in names}}}))
    return config


@pytest.mark.parametrize(
    ("names", "key"),
    [
        ([t for t in TIERS if t != "startup"], "limits.tiers.startup"),
        ([*TIERS, "gold"], "limits.tiers.gold"),
    ],
)
def test_a_tier_table_other_than_the_platforms_stops_start_up_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str], key: str
) -> None:
    config = write_tiers(tmp_path, names)
    monkeypatch.setenv("VIBELUX_RATELIMIT_PROXY_CONFIG", str(config))
    with pytest.raises(ConfigError) as refused:
        load()
    line = str(refused.value)
    assert "\n" not in line and key in line and str(config) in line, line


def test_the_platforms_tier_table_loads_in_its_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIBELUX_RATELIMIT_PROXY_CONFIG", str(write_tiers(tmp_path, list(reversed(TIERS)))))
    assert tuple(Policy(load().limits).tiers) == TIERS
