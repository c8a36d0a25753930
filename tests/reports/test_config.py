"""Bad configuration stops start-up with one line naming the key and the file (exit 2), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def check_config(tmp_path: Path, text: str, **environment: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "reports.yml"
    config.write_text(text)
    env = {**os.environ, "VIBELUX_REPORTS_CONFIG": str(config), **environment}
    return subprocess.run(
        [sys.executable, "-m", "reports_service.cli", "check-config"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("smtp:\n  security: ssl\n", "smtp.security", "one of starttls, tls, none"),
        ("smtp:\n  password: hunter2\n", "smtp.password", "no secret in the file; set REPORTS_SMTP__PASSWORD instead"),
        ("smtp:\n  from_address: nobody\n", "smtp.from_address", "an email address"),
        ("server:\n  port: 70000\n", "server.port", "a TCP port"),
        ("platform:\n  url: mysql://db/platform\n", "platform.url", "a URL starting with sqlite://"),
        ("reports:\n  catch_up_limit: -1\n", "reports.catch_up_limit", "0 or more"),
        ("platform:\n  summary_settle_seconds: 0\n", "platform.summary_settle_seconds", "a number greater than 0"),
        ("reports:\n  sweep_every: 5\n", "reports.sweep_every", "one of"),
    ],
)
def test_a_bad_value_is_one_line_naming_key_and_file(tmp_path: Path, text: str, key: str, expected: str) -> None:
    done = check_config(tmp_path, text)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"config error in {tmp_path / 'reports.yml'}: {key}: expected {expected}"), line


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    done = check_config(tmp_path, "{}\n", REPORTS_SMTP__PORT="smtp")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "config error in environment variable REPORTS_SMTP__PORT: smtp.port: expected an integer, got 'smtp'"
    )


def test_the_shipped_config_is_valid(tmp_path: Path) -> None:
    done = check_config(tmp_path, (REPO / "config" / "reports.yml").read_text())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "configuration ok"
