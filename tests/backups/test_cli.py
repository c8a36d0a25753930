"""`vibelux-backup` as an operator runs it: list, restore --dry-run, and a bad configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backups.postgres import PostgresStore
from tests.backups.conftest import Cluster, SettingsFactory
from tests.servers import SeaweedS3Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLI = str(Path(sys.executable).with_name("vibelux-backup"))


def vibelux_backup(cluster: Cluster, s3: SeaweedS3Server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "VIBELUX_BACKUP_CONFIG": str(cluster.root / "backups.yml"),  # written by the backup_settings fixture
        "BACKUP_S3__ACCESS_KEY": s3.access_key,
        "BACKUP_S3__SECRET_KEY": s3.secret_key,
        **env,
    }
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=environ, timeout=120, check=False)


def test_list_shows_backups_and_a_dry_run_restore_changes_nothing(
    archived_store: PostgresStore, cluster: Cluster, s3_server: SeaweedS3Server
) -> None:
    done = archived_store.backup("full")

    listed = vibelux_backup(cluster, s3_server, "list", "--store", "tickets")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split("\t")[:3] == ["store", "label", "type"]
    assert row.split("\t")[:3] == ["tickets", done.label, "full"]
    assert int(row.split("\t")[5]) == done.size_bytes

    dry = vibelux_backup(cluster, s3_server, "restore", "--store", "tickets", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"from: backup {done.label} (full" in dry.stdout
    assert "dry run: nothing changed" in dry.stdout
    with archived_store.connect() as connection:  # still the live, running cluster
        assert connection.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    assert not list(cluster.root.glob("data.before-restore-*"))

    too_early = vibelux_backup(cluster, s3_server, "restore", "--store", "tickets", "--to", "2020-01-01T00:00:00Z")
    assert too_early.returncode == 1
    assert "no backup finished before 2020-01-01T00:00:00+00:00" in too_early.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            ["list"],
            {"BACKUP_S3__SECRET_KEY": ""},
            "s3.access_key: expected BACKUP_S3__ACCESS_KEY and",
            id="no-secret-key",
        ),
        pytest.param(["list"], {"BACKUP_S3__PORT": "70000"}, "s3.port: expected a TCP port", id="bad-port"),
        pytest.param(
            ["restore", "--store", "tickets", "--to", "2026-12-01T10:00:00"],
            {},
            "the time needs a zone",
            id="target-without-zone",
        ),
        pytest.param(
            ["restore", "--store", "billing"], {}, "no store 'billing'; configured: tickets", id="unknown-store"
        ),
    ],
)
def test_bad_configuration_or_arguments_stop_with_one_line(
    backup_settings: SettingsFactory,
    cluster: Cluster,
    s3_server: SeaweedS3Server,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    backup_settings()  # writes the config file
    failed = vibelux_backup(cluster, s3_server, *args, **env)
    assert failed.returncode != 0
    assert message in failed.stderr
    assert "Traceback" not in failed.stderr
