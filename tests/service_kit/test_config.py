from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from service_kit.config import ConfigError, describe_environment, load_settings
from service_kit.settings import SentrySettings, ServerSettings
from tests.service_kit.example_service import ExampleSettings

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Tiny:
    server: ServerSettings = field(default_factory=ServerSettings)
    sentry: SentrySettings = field(default_factory=SentrySettings)
    names: list[str] = field(default_factory=list)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "service.yml"
    path.write_text(text)
    return path


def test_file_values_and_defaults_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 9000\nnames: [a, b]\n")
    settings = load_settings(Tiny, path, "TINY", environ={})
    assert settings.server.port == 9000
    assert settings.server.workers == 2
    assert settings.names == ["a", "b"]


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 9000\n")
    settings = load_settings(Tiny, path, "TINY", environ={"TINY_SERVER__PORT": "9100", "TINY_NAMES": "[x]"})
    assert settings.server.port == 9100
    assert settings.names == ["x"]


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("server:\n  port: 70000\n", {}, "server.port: expected a TCP port between 1 and 65535, got 70000"),
        ("server:\n  port: eighty\n", {}, "server.port: expected an integer, got 'eighty'"),
        ("server:\n  prot: 80\n", {}, "server.prot: expected one of"),
        (
            "sentry:\n  traces_sample_rate: 2\n",
            {},
            "sentry.traces_sample_rate: expected a ratio between 0 and 1",
        ),
        (
            "sentry:\n  dsn: http://k@host/1\n",
            {},
            "sentry.dsn: expected no secret in the file; set TINY_SENTRY__DSN",
        ),
        ("", {"TINY_SERVER__WORKERS": "0"}, "environment variable TINY_SERVER__WORKERS: server.workers"),
        ("names: [1, 2]\n", {}, "names[0]: expected a string"),
        ("server: [\n", {}, "expected valid YAML"),
    ],
)
def test_bad_values_name_key_and_source(tmp_path: Path, text: str, environ: dict[str, str], message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_settings(Tiny, path, "TINY", environ=environ)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_secret_comes_from_a_file_named_by_the_environment(tmp_path: Path) -> None:
    secret_file = tmp_path / "dsn"
    secret_file.write_text("http://key@127.0.0.1:1/1\n")
    settings = load_settings(Tiny, None, "TINY", environ={"TINY_SENTRY__DSN_FILE": str(secret_file)})
    assert settings.sentry.dsn == "http://key@127.0.0.1:1/1"


def test_config_env_lists_every_variable_and_masks_secrets() -> None:
    settings = load_settings(Tiny, None, "TINY", environ={"TINY_SENTRY__DSN": "http://secret@h/1"})
    listed = dict(describe_environment(Tiny, "TINY", settings))
    assert listed["TINY_SERVER__PORT"] == "8000"
    assert listed["TINY_SENTRY__DSN"] == "********"


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.service_kit.example_service", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_bad_config_stops_startup_with_one_line_and_exit_code_2(tmp_path: Path) -> None:
    config = write(tmp_path, "server:\n  workers: many\n")
    result = run_cli(tmp_path, "serve", VIBELUX_EXAMPLE_CONFIG=str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == f"config error in {config}: server.workers: expected an integer, got 'many'"
    assert "Traceback" not in result.stderr + result.stdout


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    config = write(tmp_path, "greeting: hi\n")
    result = run_cli(tmp_path, "check-config", VIBELUX_EXAMPLE_CONFIG=str(config))
    assert result.returncode == 0, result.stderr
    assert ExampleSettings().greeting == "hello"
