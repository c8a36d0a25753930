"""A PostgreSQL cluster or a replicated SQLite database per test, which the tool may destroy and restore."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from backups.postgres import PostgresStore, bindir
from backups.settings import ENV_PREFIX, BackupSettings, PostgresStoreSettings, validate
from service_kit.config import load_settings
from tests.servers import SeaweedS3Server, free_port

USER = "postgres"  # initdb and postgres refuse root; the tool runs them as this user, as on a Debian host


class Cluster:
    """A cluster started and stopped with pg_ctl, as the tool's default start/stop commands do."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.port = free_port()
        bins = bindir(PostgresStoreSettings())
        self.pg_ctl = str(bins / "pg_ctl")
        subprocess.run(
            [str(bins / "initdb"), "-D", str(self.data_dir), "-U", USER, "--auth=trust", "--no-sync"],
            check=True, capture_output=True, user=self.user,
        )  # fmt: skip
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\nfsync = off\n"
            )

    @property
    def user(self) -> str | None:
        return USER if os.geteuid() == 0 else None

    def pg(self, *args: str) -> None:
        subprocess.run([self.pg_ctl, "-D", str(self.data_dir), "-w", *args], check=True, capture_output=True,
                       user=self.user)  # fmt: skip

    def start(self) -> None:
        self.pg("-l", str(self.root / "server.log"), "start")

    def crash(self) -> None:
        """Stop at once, as a lost machine would (no shutdown checkpoint)."""
        if (self.data_dir / "postmaster.pid").exists():
            self.pg("-m", "immediate", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="vibelux-backup-test-"))
    root.chmod(0o755)  # the postgres user works in here
    if os.geteuid() == 0:
        shutil.chown(root, USER)
    running = Cluster(root)
    running.start()
    yield running
    running.crash()
    shutil.rmtree(root, ignore_errors=True)


SettingsFactory = Callable[..., BackupSettings]


@pytest.fixture
def backup_settings(s3_server: SeaweedS3Server, cluster: Cluster, request: pytest.FixtureRequest) -> SettingsFactory:
    """Settings as an operator writes them: a YAML file, keys in the environment; ``overrides`` per test."""

    def make(
        s3: dict[str, object] | None = None, environ: dict[str, str] | None = None, work_dir: Path | None = None
    ) -> BackupSettings:
        config = {
            "work_dir": str(work_dir or cluster.root / "work"),
            "database": {"url": f"sqlite:///{cluster.root / 'backups.sqlite3'}"},
            "s3": {
                "endpoint": "127.0.0.1",
                "port": s3_server.port,
                "bucket": s3_server.bucket,
                "uri_style": "path",
                "ca_file": str(s3_server.tls.ca_file),
                "prefix": f"/tests/{request.node.name}".replace("[", "-").replace("]", ""),
                "timeout_seconds": 5,
                "retries": 0,  # a fault fails the run at once instead of after two 15 s retries
                **(s3 or {}),
            },
            "postgres": {
                "tickets": {"data_dir": str(cluster.data_dir), "port": cluster.port, "socket_dir": str(cluster.root)}
            },
        }
        path = cluster.root / "backups.yml"
        path.write_text(yaml.safe_dump(config))
        env = {
            f"{ENV_PREFIX}_S3__ACCESS_KEY": s3_server.access_key,
            f"{ENV_PREFIX}_S3__SECRET_KEY": s3_server.secret_key,
            **(environ or {}),
        }
        return validate(load_settings(BackupSettings, path, ENV_PREFIX, env), str(path))

    return make


@pytest.fixture
def archived_store(backup_settings: SettingsFactory, cluster: Cluster) -> PostgresStore:
    """The `tickets` store with archiving on (restarted for archive_mode) and its stanza created."""
    store = PostgresStore("tickets", backup_settings())
    assert store.configure() is True  # archive_mode only changes on restart
    store.service("stop")
    store.service("start")
    assert store.configure() is False
    store.create_stanza()
    return store


class Replicated:
    """A SQLite database in WAL mode, its settings file, and `vibelux-backup replicate` running for it."""

    def __init__(self, root: Path, s3: SeaweedS3Server, prefix: str, sync_interval: float = 0.2) -> None:
        self.root = root
        self.sync_interval = sync_interval
        self.replication_timeout = 15.0  # a loaded 2-core machine; the fault suite lowers it
        self.s3 = s3
        self.path = root / "tickets.sqlite3"
        self.config_file = root / "backups.yml"
        self.environ = {
            **os.environ,
            "VIBELUX_BACKUP_CONFIG": str(self.config_file),
            f"{ENV_PREFIX}_S3__ACCESS_KEY": s3.access_key,
            f"{ENV_PREFIX}_S3__SECRET_KEY": s3.secret_key,
        }
        self.prefix = prefix
        self.process: subprocess.Popen[bytes] | None = None
        with sqlite3.connect(self.path) as connection:
            connection.execute("PRAGMA journal_mode=WAL")  # what the services set; Litestream needs WAL

    def settings(self, s3: dict[str, object] | None = None, work_dir: Path | None = None) -> BackupSettings:
        config = {
            "work_dir": str(work_dir or self.root / "work"),
            "database": {"url": f"sqlite:///{self.root / 'backups.sqlite3'}"},
            "s3": {
                "endpoint": "127.0.0.1", "port": self.s3.port, "bucket": self.s3.bucket, "uri_style": "path",
                "ca_file": str(self.s3.tls.ca_file), "prefix": self.prefix, "timeout_seconds": 5, **(s3 or {}),
            },
            "sqlite": {"tickets": {
                "path": str(self.path),
                "sync_interval_seconds": self.sync_interval,
                "replication_timeout_seconds": self.replication_timeout,
            }},
        }  # fmt: skip
        self.config_file.write_text(yaml.safe_dump(config))
        source = str(self.config_file)
        return validate(load_settings(BackupSettings, self.config_file, ENV_PREFIX, self.environ), source)

    def start(self) -> None:
        log = (self.root / "replicate.log").open("ab")
        cli = str(Path(sys.executable).with_name("vibelux-backup"))
        self.process = subprocess.Popen([cli, "replicate"], env=self.environ, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@pytest.fixture
def replicated(s3_server: SeaweedS3Server, request: pytest.FixtureRequest) -> Iterator[Replicated]:
    """The `tickets` SQLite store, its settings written, replicating to the test's own prefix."""
    root = Path(tempfile.mkdtemp(prefix="vibelux-litestream-test-"))
    prefix = f"/tests/{request.node.name}".replace("[", "-").replace("]", "")
    store = Replicated(root, s3_server, prefix)
    store.settings()
    store.start()
    yield store
    store.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def store_settings(s3_server: SeaweedS3Server, tmp_path: Path, request: pytest.FixtureRequest) -> SettingsFactory:
    """Settings for stores that need no database host (Redis, files): ``sections`` are the config's store
    sections, ``environ`` adds variables (passwords) to the S3 keys."""

    def make(
        environ: dict[str, str] | None = None, s3: dict[str, object] | None = None, **sections: object
    ) -> BackupSettings:
        config = {
            "work_dir": str(tmp_path / "work"),
            "database": {"url": f"sqlite:///{tmp_path / 'backups.sqlite3'}"},
            "s3": {
                "endpoint": "127.0.0.1", "port": s3_server.port, "bucket": s3_server.bucket, "uri_style": "path",
                "ca_file": str(s3_server.tls.ca_file), "timeout_seconds": 5, "retries": 0,
                "prefix": f"/tests/{request.node.name}".replace("[", "-").replace("]", ""), **(s3 or {}),
            },
            **sections,
        }  # fmt: skip
        path = tmp_path / "backups.yml"
        path.write_text(yaml.safe_dump(config))
        env = {
            f"{ENV_PREFIX}_S3__ACCESS_KEY": s3_server.access_key,
            f"{ENV_PREFIX}_S3__SECRET_KEY": s3_server.secret_key,
            **(environ or {}),
        }
        return validate(load_settings(BackupSettings, path, ENV_PREFIX, env), str(path))

    return make
