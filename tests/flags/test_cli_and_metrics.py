"""The flags CLI against a live service, demo seeding, and the service's own metrics."""

from __future__ import annotations

import json
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from flags_service.cli import cli
from flags_service.engine import evaluate
from flags_service.settings import FlagsSettings
from service_kit.cli import run
from tests.flags.conftest import LiveServer


@pytest.mark.integration
def test_cli_create_toggle_rollout_history(live_server: LiveServer, make_token: Callable[[str], str]) -> None:
    runner = CliRunner()
    env = {"VIBELUX_FLAGS_URL": live_server.url, "VIBELUX_FLAGS_TOKEN": make_token("admin")}

    created = runner.invoke(cli, ["create", "new-search", "--owner", "search", "--client-visible"], env=env)
    assert created.exit_code == 0, created.output
    assert "new-search v1 (boolean)" in created.output
    toggled = runner.invoke(cli, ["toggle", "new-search", "--env", "production", "--on"], env=env)
    assert "production=on" in toggled.output
    rolled = runner.invoke(cli, ["rollout", "new-search", "25%", "--env", "production"], env=env)
    assert rolled.exit_code == 0, rolled.output
    assert "production fallthrough: on 25%, off 75%" in rolled.output
    history = runner.invoke(cli, ["history", "new-search"], env=env)
    lines = history.output.splitlines()
    assert re.fullmatch(r"v3  \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ  rollout  by .+", lines[0]), lines[0]
    assert any("environments.production.enabled: false -> true" in line for line in lines)

    bad = runner.invoke(cli, ["rollout", "new-search", "250%"], env=env)
    assert bad.exit_code != 0
    assert "PERCENT" in bad.output
    missing = runner.invoke(cli, ["toggle", "nope"], env=env)
    assert missing.exit_code == 1
    assert "404" in missing.output
    viewer = runner.invoke(cli, ["toggle", "new-search"], env={**env, "VIBELUX_FLAGS_TOKEN": make_token("viewer")})
    assert "403" in viewer.output


def test_seed_demo_creates_the_four_demo_flags_once(settings: FlagsSettings, tmp_path: Path) -> None:
    config = tmp_path / "flags.yml"
    config.write_text(f"database:\n  url: {settings.database.url}\nredis:\n  url: ''\n")
    keys_file = tmp_path / "keys.json"
    runner = CliRunner()
    env = {"VIBELUX_FLAGS_CONFIG": str(config)}
    first = runner.invoke(cli, ["seed-demo", "--keys-file", str(keys_file)], env=env)
    assert first.exit_code == 0, first.output
    assert "new-checkout, ai-summaries, pricing-page-experiment, upload-limit-mb" in first.output
    assert set(json.loads(keys_file.read_text())) == {"server", "client"}
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    again = runner.invoke(cli, ["seed-demo"], env=env)
    assert "already present" in again.output

    from flags_service.demo import DEMO_FLAGS
    from flags_service.model import compile_flag, validate_flag

    flags = {
        d["key"]: compile_flag(validate_flag(d, ["development", "staging", "production"]), "production")
        for d in DEMO_FLAGS
    }
    assert evaluate(flags["ai-summaries"], {"tier": "professional"}).value is True
    assert evaluate(flags["ai-summaries"], {"tier": "free"}).value is False
    assert evaluate(flags["upload-limit-mb"], {"tier": "enterprise"}).value == 500
    assert evaluate(flags["pricing-page-experiment"], {"targetingKey": "u1"}).reason == "SPLIT"
    served = sum(evaluate(flags["new-checkout"], {"targetingKey": f"u{i}"}).value for i in range(4000))
    assert 0.22 < served / 4000 < 0.28


def _samples(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_snapshot_versions_changes_and_stale_flags(
    client: FlaskClient, admin: dict[str, str], create_flag: Callable
) -> None:
    create_flag("expired", kind="ops", expiresAt="2020-01-01T00:00:00Z")
    client.post("/api/v1/flags/expired/environments/production/toggle", json={}, headers=admin)
    samples = _samples(client)
    versions = client.get("/api/v1/environments", headers=admin).json["data"]
    production = next(env["version"] for env in versions if env["name"] == "production")
    assert samples[("flags_snapshot_version", (("environment", "production"),))] == production
    assert samples[("flags_changes_total", (("action", "toggle"), ("environment", "production")))] == 1
    assert samples[("flags_changes_total", (("action", "create"), ("environment", "production")))] == 1
    assert samples[("flags_stale_flags", (("environment", "production"),))] == 1
    route = "/api/v1/flags/<key>/environments/<env>/toggle"
    assert any(name == "http_requests_total" and ("route", route) in labels for name, labels in samples)


def test_last_change_timestamp_marks_each_environments_last_write_and_is_absent_before_any(
    client: FlaskClient, admin: dict[str, str], create_flag: Callable
) -> None:
    """What the dashboards' flag-change annotation reads: the moment of the write, per environment."""
    name = "flags_last_change_timestamp_seconds"
    assert [labels for metric, labels in _samples(client) if metric == name] == []
    before_create = time.time()
    create_flag("dark-mode")
    created = {labels: value for (metric, labels), value in _samples(client).items() if metric == name}
    assert created, "a new flag changes the environments that serve it"
    assert all(before_create - 1 <= value <= time.time() for value in created.values())
    time.sleep(0.05)
    before_toggle = time.time()
    client.post("/api/v1/flags/dark-mode/environments/production/toggle", json={}, headers=admin)
    toggled = {labels: value for (metric, labels), value in _samples(client).items() if metric == name}
    production = (("environment", "production"),)
    assert before_toggle - 1e-3 <= toggled[production] <= time.time()
    assert toggled[production] > created[production]
    assert {k: v for k, v in toggled.items() if k != production} == {
        k: v for k, v in created.items() if k != production
    }


@pytest.mark.parametrize("variable", ["FLAGS_FLAGS__ENVIRONMENTS", "FLAGS_REDIS__URL"])
def test_bad_config_stops_start_up_with_one_line(variable: str) -> None:
    result = CliRunner().invoke(cli, ["check-config"], env={variable: "http://nope" if "URL" in variable else "[]"})
    assert result.exception is not None
    assert variable in str(result.exception)


def test_a_tiers_list_in_the_config_stops_start_up_naming_key_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tiers are the platform's (service_kit.tiers): a config still listing its own stops start-up."""
    config = tmp_path / "flags.yml"
    config.write_text("flags:\n  tiers: [free, pro, enterprise]\n")
    monkeypatch.setenv("VIBELUX_FLAGS_CONFIG", str(config))
    with pytest.raises(SystemExit) as stopped:
        run(cli, ["check-config"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"config error in {config}: flags.tiers: expected one of [") and error.count("\n") == 1
