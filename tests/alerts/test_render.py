"""`vibelux-alerting`: the public URLs of config/urls.yml, the rules rendered on them, and the Alertmanager
config rendered for the credentials present."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from service_kit.alerting.render import RenderError, cli, render_alertmanager, render_rules, write_alertmanager
from service_kit.config import ConfigError
from service_kit.urls import PublicUrls, load_urls
from tests.alerts.helpers import REPO

URLS_FILE = REPO / "config" / "urls.yml"
SHIPPED = load_urls(URLS_FILE, environ={})
ELSEWHERE = PublicUrls(
    prometheus="https://prometheus.ops.example",
    alertmanager="https://alerts.ops.example",
    grafana="https://grafana.ops.example/grafana",
    desk="https://desk.ops.example",
    flags="https://flags.ops.example",
    runbooks="https://wiki.ops.example/runbooks",
)
RULE_FILES = sorted((REPO / "alert_rules").glob("*.yml"))


def test_urls_come_from_the_file_and_each_can_be_overridden() -> None:
    assert SHIPPED.alertmanager == "http://127.0.0.1:9093"
    assert SHIPPED.runbooks_base == f"{SHIPPED.desk}/runbooks"  # the desk serves docs/runbooks by default
    moved = load_urls(URLS_FILE, environ={"VIBELUX_URLS_DESK": "http://vm:8081/", "VIBELUX_URLS_GRAFANA": "http://g"})
    assert (moved.desk, moved.runbooks_base, moved.grafana) == ("http://vm:8081", "http://vm:8081/runbooks", "http://g")
    assert moved.prometheus == SHIPPED.prometheus


@pytest.mark.parametrize(
    ("text", "key"),
    [("prometheus: ftp://x\n", "prometheus"), ("alertmanager: http://a\n", "prometheus"), ("desc: x\n", "desc")],
)
def test_a_missing_or_bad_url_names_its_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "urls.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_urls(path, environ={})
    assert error.value.key == key


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_committed_rules_are_config_urls_rendering_of_themselves(path: Path) -> None:
    """What promtool tests is exactly what `make up` loads with the shipped config/urls.yml."""
    assert render_rules(path.read_text(), SHIPPED, str(path)) == path.read_text()


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_rendering_moves_every_link_to_the_configured_bases_and_changes_nothing_else(path: Path) -> None:
    source = yaml.safe_load(path.read_text())
    rendered = yaml.safe_load(render_rules(path.read_text(), ELSEWHERE, str(path)))
    for group, new_group in zip(source["groups"], rendered["groups"], strict=True):
        for rule, new_rule in zip(group["rules"], new_group["rules"], strict=True):
            if "alert" in rule:
                old, new = rule["annotations"], new_rule["annotations"]
                assert new["runbook_url"] == old["runbook_url"].replace(SHIPPED.runbooks_base, ELSEWHERE.runbooks)
                assert new["dashboard_url"] == old["dashboard_url"].replace(SHIPPED.grafana, ELSEWHERE.grafana)
                old |= {"runbook_url": new["runbook_url"], "dashboard_url": new["dashboard_url"]}
    assert rendered == source


@pytest.mark.parametrize(
    "line", ["runbook_url: docs/runbooks/x.md", "runbook_url: http://h/x#a", "dashboard_url: http://g/dashboards"]
)
def test_a_link_of_another_shape_stops_rendering_naming_file_and_line(line: str) -> None:
    with pytest.raises(RenderError, match=r"^rules.yml:2: "):
        render_rules(f"groups:\n  {line}\n", SHIPPED, "rules.yml")


def test_rules_command_renders_every_file_into_a_fresh_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "rules"
    out.mkdir()
    (out / "removed.yml").write_text("groups: []\n")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("VIBELUX_URLS_GRAFANA", "https://grafana.ops.example")
    result = CliRunner().invoke(cli, ["rules", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in RULE_FILES]
    assert "https://grafana.ops.example/d/vibelux-support" in (out / "support.yml").read_text()
    subprocess.run(["promtool", "check", "rules", *map(str, out.iterdir())], check=True, capture_output=True)


def shipped_alertmanager() -> dict:
    return yaml.safe_load((REPO / "config" / "alertmanager.yml").read_text())


def integrations(config: dict) -> dict[str, list[str]]:
    return {r["name"]: sorted(k for k in r if k.endswith("_configs")) for r in config["receivers"]}


def test_alertmanager_keeps_every_integration_whose_credential_is_there(tmp_path: Path) -> None:
    for name in ("support-desk-webhook-token", "slack-webhook-url", "pagerduty-routing-key", "smtp-password"):
        (tmp_path / "secrets").mkdir(exist_ok=True)
        (tmp_path / "secrets" / name).write_text("x")
    rendered, disabled = render_alertmanager(shipped_alertmanager(), tmp_path)
    assert disabled == []
    assert integrations(rendered) == integrations(shipped_alertmanager())
    assert rendered["global"]["smtp_auth_password_file"] == str(tmp_path / "secrets" / "smtp-password")
    (desk,) = next(r for r in rendered["receivers"] if r["name"] == "support-desk")["webhook_configs"]
    token_file = desk["http_config"]["authorization"]["credentials_file"]
    assert token_file == str(tmp_path / "secrets" / "support-desk-webhook-token")


def test_alertmanager_leaves_out_integrations_without_credentials_and_names_them(tmp_path: Path) -> None:
    """No Slack URL, an empty SMTP password: what would fail every notification is not configured at all."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "support-desk-webhook-token").write_text("token")
    (tmp_path / "secrets" / "pagerduty-routing-key").write_text("key")
    (tmp_path / "secrets" / "smtp-password").write_text("")
    out = tmp_path / "run" / "alertmanager.yml"
    disabled = write_alertmanager(REPO / "config" / "alertmanager.yml", tmp_path, out)
    assert disabled == [
        "oncall-pager/slack (slack-webhook-url)",
        "oncall-pager/email (smtp-password)",
        "team-chat/slack (slack-webhook-url)",
    ]
    rendered = yaml.safe_load(out.read_text())
    assert integrations(rendered)["oncall-pager"] == ["pagerduty_configs"]
    assert integrations(rendered)["team-chat"] == []
    assert rendered["route"] == shipped_alertmanager()["route"]  # routes untouched: the desk still gets both
    assert (out.parent / "alertmanager.tmpl").read_text() == (REPO / "config" / "alertmanager.tmpl").read_text()
    subprocess.run(["amtool", "check-config", str(out)], check=True, capture_output=True)


def test_public_urls_have_no_defaults_of_their_own() -> None:
    """config/urls.yml is the one place for the values: a default here would be a second."""
    assert {field.default for field in dataclasses.fields(PublicUrls)} == {""}
