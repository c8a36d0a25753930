"""Settings of `vibelux-backup`: config/backups.yml, overridden by BACKUP_* environment variables.

The object store is any S3 API (AWS S3, GCS's S3 interoperability, MinIO, SeaweedFS): only endpoint,
bucket, region, addressing style and CA change. Its keys are secrets, so they come only from the
environment or files (``BACKUP_S3__ACCESS_KEY_FILE``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from service_kit.config import ConfigError, checked, port_check, positive, secret
from service_kit.redis_connect import RedisConnection
from service_kit.settings import DatabaseSettings, JobsSettings, LoggingSettings, SentrySettings, ServerSettings

ENV_PREFIX = "BACKUP"
STORE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")  # a pgBackRest stanza, a job name part and a metric label


UNIQUE_NAME = "a store name of lower-case letters, digits and _, unique across all stores"


def _not_empty(value: str) -> str | None:
    return None if value else "a non-empty value"


def _prefix(value: str) -> str | None:
    return None if value.startswith("/") and not value.endswith("/") else "a path like /vibelux/production"


@dataclass(frozen=True)
class S3Settings:
    endpoint: str = "s3.amazonaws.com"  # host name only; the port is separate
    port: int = checked(443, port_check)
    bucket: str = ""
    region: str = "us-east-1"
    prefix: str = checked("/vibelux", _prefix)  # every store's backups and WAL live under it
    uri_style: Literal["host", "path"] = "host"  # "path" for MinIO, SeaweedFS and most self-hosted stores
    ca_file: str = ""  # empty: the system's CAs
    # "auto": the instance or pod role (AWS IAM), no keys in the environment
    key_type: Literal["shared", "auto"] = "shared"
    access_key: str = secret()
    secret_key: str = secret()
    # pgBackRest's io-timeout: how long a silent object store may stall a backup or an archived WAL segment
    timeout_seconds: float = checked(60.0, positive)
    # pgBackRest's job-retry: a failed file copy is tried again this often (15 s apart) before the run fails
    retries: int = checked(2, lambda v: None if 0 <= v <= 10 else "between 0 and 10")


@dataclass(frozen=True)
class PostgresStoreSettings:
    """One PostgreSQL cluster (a pgBackRest stanza); the tool runs on its host, as root or as its owner."""

    data_dir: str = ""
    port: int = checked(5432, port_check)
    socket_dir: str = "/var/run/postgresql"
    user: str = "postgres"
    database: str = "postgres"  # where the sentinel table lives
    bindir: str = ""  # empty: the newest /usr/lib/postgresql/*/bin
    retention_full: int = checked(2, lambda v: None if v >= 1 else "at least 1 full backup kept")
    full_every_seconds: float = checked(7 * 86400.0, positive)
    incremental_every_seconds: float = checked(86400.0, positive)
    drill_every_seconds: float = checked(86400.0, positive)
    # WAL is archived at least this often while there are writes: the recovery point objective
    archive_timeout_seconds: int = checked(60, lambda v: None if 1 <= v <= 3600 else "between 1 and 3600 seconds")
    # How `restore` fences and restarts the service; empty: pg_ctl on data_dir
    stop_command: list[str] = field(default_factory=list)
    start_command: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SqliteStoreSettings:
    """One SQLite database replicated by Litestream (``vibelux-backup replicate``) on its host."""

    path: str = ""
    # Litestream ships WAL changes this often: the recovery point objective and the finest point in time
    sync_interval_seconds: float = checked(1.0, positive)
    sync_every_seconds: float = checked(3600.0, positive)  # the job proving the replica is current
    # How long a sync or drill waits for its sentinel row to reach the replica before it fails
    replication_timeout_seconds: float = checked(60.0, positive)
    drill_every_seconds: float = checked(86400.0, positive)
    # How `restore` fences and restarts the service; empty: the operator has stopped it
    stop_command: list[str] = field(default_factory=list)
    start_command: list[str] = field(default_factory=list)


def _at_least_one(value: int) -> str | None:
    return None if value >= 1 else "at least 1"


@dataclass(frozen=True)
class RedisStoreSettings(RedisConnection):
    """The proxy's Redis (any topology): what must survive it, exported through the proxy's own storage.

    Why an export and not the RDB file: managed Redis hides the file, a cluster has one per shard, and
    most of the data is limiter counters that are ephemeral by design (see backups/redis_state.py).
    """

    timeout_seconds: float = checked(5.0, positive)
    export_every_seconds: float = checked(3600.0, positive)  # the recovery point objective
    drill_every_seconds: float = checked(86400.0, positive)
    retention: int = checked(168, _at_least_one)  # exports kept: a week of hourly ones
    stop_command: list[str] = field(default_factory=list)
    start_command: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FilesStoreSettings:
    """A directory of files, the desk's attachments: content-addressed copies plus a manifest per run."""

    directory: str = ""
    # The desk's database: every file is checked against the SHA-256 recorded at upload (empty: no check)
    database_url: str = ""
    # incr: new and changed files (by size and mtime); full: every file re-read, hashed and checked
    incremental_every_seconds: float = checked(3600.0, positive)  # the recovery point objective
    full_every_seconds: float = checked(86400.0, positive)
    drill_every_seconds: float = checked(86400.0, positive)
    retention: int = checked(168, _at_least_one)  # manifests kept; objects no kept manifest names are deleted
    # Files a drill downloads and hashes, besides its sentinel (0: all); every object's presence and size
    # is checked against the manifest regardless
    drill_sample: int = checked(200, lambda v: None if v >= 0 else "0 (all) or more")
    stop_command: list[str] = field(default_factory=list)
    start_command: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BackupSettings:
    server: ServerSettings = field(default_factory=lambda: ServerSettings(port=9104, workers=1))
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    sentry: SentrySettings = field(default_factory=SentrySettings)
    # Where backup and drill runs are recorded, and the job schedule
    database: DatabaseSettings = field(default_factory=lambda: DatabaseSettings(url="sqlite:///.run/backups.sqlite3"))
    jobs: JobsSettings = field(default_factory=JobsSettings)
    s3: S3Settings = field(default_factory=S3Settings)
    work_dir: str = checked(".run/backups", _not_empty)  # pgBackRest's config, logs, locks; drill scratch
    postgres: dict[str, PostgresStoreSettings] = field(default_factory=dict)
    sqlite: dict[str, SqliteStoreSettings] = field(default_factory=dict)
    redis: dict[str, RedisStoreSettings] = field(default_factory=dict)
    files: dict[str, FilesStoreSettings] = field(default_factory=dict)

    def store_names(self) -> list[str]:
        return [*self.postgres, *self.sqlite, *self.redis, *self.files]


def validate(settings: BackupSettings, source: str) -> BackupSettings:
    """Checks across fields that the loader's per-field checks cannot make."""
    if not settings.s3.bucket:
        raise ConfigError("s3.bucket", source, "the bucket's name")
    if settings.s3.key_type == "shared" and not (settings.s3.access_key and settings.s3.secret_key):
        raise ConfigError("s3.access_key", source, f"{ENV_PREFIX}_S3__ACCESS_KEY and {ENV_PREFIX}_S3__SECRET_KEY set")
    seen: set[str] = set()
    for section in ("postgres", "sqlite", "redis", "files"):
        for name in getattr(settings, section):
            if not STORE_NAME.match(name) or name in seen:
                raise ConfigError(f"{section}.{name}", source, UNIQUE_NAME)
            seen.add(name)
    required = {"postgres": "data_dir", "sqlite": "path", "redis": "url", "files": "directory"}
    what = {"data_dir": "the cluster's data directory", "path": "the database file's path",
            "url": "the Redis URL", "directory": "the directory to back up"}  # fmt: skip
    for section, key in required.items():
        for name, store in getattr(settings, section).items():
            if not getattr(store, key):
                raise ConfigError(f"{section}.{name}.{key}", source, what[key])
    return settings
