"""``vibelux-release`` as a process: a bad config is one line naming key and file (exit 2); bad arguments
are refused naming the field, as the admin API refuses them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
POOLS = [{"name": "blue", "url": "http://127.0.0.1:9", "weight": 100}, {"name": "green", "url": "http://127.0.0.1:10"}]


def release_cli(tmp_path: Path, config: dict, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "proxy.yml"
    path.write_text(yaml.safe_dump({"database": {"url": f"sqlite:///{tmp_path / 'p.sqlite3'}"}, **config}))
    env = {**os.environ, "VIBELUX_RATELIMIT_PROXY_CONFIG": str(path)}
    return subprocess.run(
        [sys.executable, "-m", "releases.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_release_cli_bad_config_is_one_line_naming_key_and_file(tmp_path: Path) -> None:
    done = release_cli(tmp_path, {"release": {"steps": [50, 5]}}, "status")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "release.steps" in lines[0] and str(tmp_path / "proxy.yml") in lines[0]


def test_release_cli_needs_two_pools(tmp_path: Path, redis_url: str) -> None:
    done = release_cli(tmp_path, {"redis": {"url": redis_url}}, "status")
    assert done.returncode == 2 and "at least two upstream.pools" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["weights", "purple=5"], "purple: not a configured pool"),
        (["weights", "blue=x"], "expected NAME=WEIGHT"),
        (["weights", "blue=0", "green=0"], "at least one pool needs a weight above 0"),
        (["start", "purple"], "to: 'purple' is not a configured pool"),
        (["start", "blue"], "to: blue already serves the traffic"),
        (["pause"], "no release is running"),
    ],
)
def test_release_cli_refuses_bad_arguments_naming_the_field(
    tmp_path: Path, redis_url: str, args: list[str], message: str
) -> None:
    done = release_cli(tmp_path, {"redis": {"url": redis_url}, "upstream": {"pools": POOLS}}, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
