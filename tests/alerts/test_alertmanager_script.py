"""scripts/alertmanager.sh (the Procfile's Alertmanager): secrets from the environment into files, then the
real Alertmanager on config/alertmanager.yml rendered for the secrets present, at the public URL."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import psutil
import pytest
import requests
import yaml

from tests.alerts.helpers import REPO
from tests.servers import free_port, wait_until

pytestmark = pytest.mark.integration


def test_script_writes_secrets_privately_leaves_out_receivers_without_them_and_serves(tmp_path: Path) -> None:
    """Without a Slack URL and an SMTP password, those integrations are not configured (named once, at start)
    rather than failing at every notification; PagerDuty and the desk, whose secrets are there, stay."""
    port = free_port()
    secret_file = tmp_path / "pagerduty-key"
    secret_file.write_text("pd-routing-key")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SLACK_WEBHOOK_URL", "SMTP_PASSWORD", "SLACK_WEBHOOK_URL_FILE", "SMTP_PASSWORD_FILE"}
    }
    env |= {
        "ALERTMANAGER_RUN_DIR": str(tmp_path / "run"),
        "ALERTMANAGER_LISTEN": f"127.0.0.1:{port}",
        "ALERTMANAGER_WEBHOOK_TOKEN": "desk-token",
        "PAGERDUTY_ROUTING_KEY_FILE": str(secret_file),
        "VIBELUX_URLS_ALERTMANAGER": "http://alerts.vm.example:9093",
    }
    process = subprocess.Popen(
        [str(REPO / "scripts" / "alertmanager.sh"), "--log.level=warn"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200, timeout=20)
        status = requests.get(f"http://127.0.0.1:{port}/api/v2/status", timeout=5).json()
        running = yaml.safe_load(status["config"]["original"])
        receivers = {r["name"]: sorted(key for key in r if key.endswith("_configs")) for r in running["receivers"]}
        assert receivers["oncall-pager"] == ["pagerduty_configs"]
        assert receivers["team-chat"] == []
        assert receivers["support-desk"] == ["webhook_configs"]
        command = psutil.Process(process.pid).cmdline()  # the script exec'd Alertmanager
        assert command[0] == "prometheus-alertmanager"
        assert "--web.external-url=http://alerts.vm.example:9093" in command
        secrets = tmp_path / "run" / "secrets"
        assert (secrets / "support-desk-webhook-token").read_text() == "desk-token"
        assert (secrets / "pagerduty-routing-key").read_text() == "pd-routing-key"
        assert not (secrets / "slack-webhook-url").exists()
        for path in secrets.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert "alertmanager: not set (nor <VAR>_FILE): SLACK_WEBHOOK_URL SMTP_PASSWORD\n" in stderr
    disabled = "oncall-pager/slack (slack-webhook-url), oncall-pager/email (smtp-password), team-chat/slack"
    assert stderr.count(f"alertmanager: no credentials, so not delivering to: {disabled}") == 1
    assert "desk-token" not in stderr and "pd-routing-key" not in stderr
