"""pgBackRest as the tool runs it: one generated config file, commands run as the cluster's owner.

The config file carries the object store's keys because PostgreSQL's ``archive_command`` runs pgBackRest
from the server's own environment, which has none of ours; so it is written mode 0600, owned by the
cluster's owner, and rewritten from the settings on every command (the settings stay the one source).
pgBackRest redacts keys in its own output, so its messages can be shown and logged as they are.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backups.settings import BackupSettings, PostgresStoreSettings
from backups.store import BackupError


@dataclass(frozen=True)
class BackupSet:
    """One backup in the repository, as ``info`` reports it."""

    label: str
    type: str  # full, diff or incr
    started_at: datetime
    stopped_at: datetime
    size_bytes: int  # the database's size at backup time
    repository_bytes: int  # what this backup added to the object store (compressed, incremental)


def run_as(user: str) -> str | None:
    """The user to run a command as: the cluster's owner when we are root, else ourselves."""
    return user if os.geteuid() == 0 and pwd.getpwuid(os.geteuid()).pw_name != user else None


def own(path: Path, user: str) -> None:
    """Create ``path`` (a directory) owned by ``user`` when we are root."""
    path.mkdir(parents=True, exist_ok=True)
    if run_as(user):
        os.chown(path, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)


class PgBackRest:
    def __init__(self, settings: BackupSettings) -> None:
        self.settings = settings
        self.home = Path(settings.work_dir).absolute() / "pgbackrest"
        self.config_file = self.home / "pgbackrest.conf"

    def write_config(self, user: str) -> None:
        s3 = self.settings.s3
        lines = [
            "[global]",
            "repo1-type=s3",
            f"repo1-s3-endpoint={s3.endpoint}",
            f"repo1-storage-port={s3.port}",
            f"repo1-s3-bucket={s3.bucket}",
            f"repo1-s3-region={s3.region}",
            f"repo1-s3-uri-style={s3.uri_style}",
            f"repo1-path={s3.prefix}",
            f"repo1-s3-key-type={s3.key_type}",
            f"io-timeout={s3.timeout_seconds:g}",
            f"job-retry={s3.retries}",
            "compress-type=zst",
            "start-fast=y",
            "log-level-console=warn",
            "log-level-stderr=error",
            "log-level-file=info",
            f"log-path={self.home / 'log'}",
            f"lock-path={self.home / 'lock'}",
            f"spool-path={self.home / 'spool'}",
        ]
        if s3.key_type == "shared":
            lines += [f"repo1-s3-key={s3.access_key}", f"repo1-s3-key-secret={s3.secret_key}"]
        if s3.ca_file:
            lines.append(f"repo1-storage-ca-file={Path(s3.ca_file).absolute()}")
        for name, store in self.settings.postgres.items():
            lines += [
                "",
                f"[{name}]",
                f"pg1-path={Path(store.data_dir).absolute()}",
                f"pg1-port={store.port}",
                f"pg1-socket-path={store.socket_dir}",
                f"pg1-user={store.user}",
                f"repo1-retention-full={store.retention_full}",
            ]
        for directory in (self.home, self.home / "log", self.home / "lock", self.home / "spool"):
            own(directory, user)
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        if run_as(user):
            os.chown(self.config_file, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        os.chmod(self.config_file, 0o600)

    def command(self, stanza: str, *args: str) -> list[str]:
        """The command line, e.g. for ``archive_command`` (``%p`` added by the caller)."""
        return ["pgbackrest", f"--config={self.config_file}", f"--stanza={stanza}", *args]

    def run(self, name: str, store: PostgresStoreSettings, *args: str, timeout: float | None = None) -> str:
        """Run one command for store ``name``; its stdout, or BackupError with pgBackRest's own message."""
        self.write_config(store.user)
        argv = self.command(name, *args)
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, user=run_as(store.user), check=False
            )
        except subprocess.TimeoutExpired:
            raise BackupError(f"pgbackrest {args[-1]} ({name}) did not finish within {timeout:g}s") from None
        if done.returncode != 0:
            lines = [line.strip() for line in (done.stderr.strip() or done.stdout.strip()).splitlines()]
            # the ERROR and the lines under it say what failed; the HINT only guesses (stanza-create for a bad key)
            first = next((i for i, line in enumerate(lines) if "ERROR:" in line), max(len(lines) - 1, 0))
            reason: list[str] = []
            for line in lines[first:]:
                if line.startswith("HINT:") or (reason and "ERROR:" in line):
                    break
                reason.append(line)
            raise BackupError(f"pgbackrest {args[-1]} ({name}) failed: {' '.join(reason) or done.returncode}")
        return done.stdout

    def info(self, name: str, store: PostgresStoreSettings) -> list[BackupSet]:
        """The store's backups, oldest first; BackupError when the repository cannot be read."""
        stanzas: list[dict[str, Any]] = json.loads(self.run(name, store, "--output=json", "info"))
        stanza = stanzas[0] if stanzas else {}
        status = stanza.get("status", {})
        if status.get("code", 0) not in (0, 2):  # 2: no backups yet
            raise BackupError(f"pgbackrest info ({name}): {status.get('message', 'unknown status')}")
        return [
            BackupSet(
                label=backup["label"],
                type=backup["type"],
                started_at=datetime.fromtimestamp(backup["timestamp"]["start"], UTC),
                stopped_at=datetime.fromtimestamp(backup["timestamp"]["stop"], UTC),
                size_bytes=int(backup["info"]["size"]),
                repository_bytes=int(backup["info"]["repository"]["delta"]),
            )
            for backup in stanza.get("backup", [])
        ]
