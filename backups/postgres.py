"""PostgreSQL stores: continuous WAL archiving plus full and incremental base backups with pgBackRest.

Why pgBackRest over barman or pg_basebackup scripts: it archives WAL straight from ``archive_command`` to
S3, takes incremental backups at file level, expires by retention, and restores to a timestamp, in one
tool Debian ships. Its ``verify`` proves checksums, not that a restore starts; so a drill here is a restore.

A drill, step by step (``PostgresStore.drill``):

1. Write a sentinel row in the live cluster, switch WAL and wait until the archiver has pushed that
   segment: the row is now only recoverable through the archive, not just the base backup.
2. Restore the latest backup plus archived WAL into a scratch directory, with archiving off there (a
   drill must never push its own timeline into the repository).
3. Start it on a unix socket only (no TCP listener) with trust for local connections, and wait until
   recovery has ended.
4. Run ``pg_amcheck`` (heap and B-tree checks on every database), then look for the sentinel row.
5. Stop and remove the scratch instance; the time from 2 to 4 is the recovery time.

Any step that fails raises BackupError: a drill that cannot prove the restore is a failed drill.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from backups.pgbackrest import BackupSet, PgBackRest, own, run_as
from backups.settings import BackupSettings, PostgresStoreSettings
from backups.store import ArchiverStatus, BackupError, Done, Drilled, Listed, RestorePlan, run_service_command

SENTINEL_TABLE = "vibelux_backup_sentinel"
READY_TIMEOUT = 300.0  # recovery of a day's WAL can take minutes


def bindir(store: PostgresStoreSettings) -> Path:
    if store.bindir:
        return Path(store.bindir)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not found:
        raise BackupError("no PostgreSQL binaries in /usr/lib/postgresql (set postgres.<store>.bindir)")
    return found[-1]


class InstanceExited(BackupError):
    """The scratch instance's postgres process ended: waiting longer cannot help."""


class PostgresStore:
    def __init__(self, name: str, settings: BackupSettings, tool: PgBackRest | None = None) -> None:
        self.name = name
        self.settings = settings
        self.store = settings.postgres[name]
        self.tool = tool or PgBackRest(settings)
        self.data_dir = Path(self.store.data_dir).absolute()

    def schedule(self) -> dict[str, float]:
        store = self.store
        return {"full": store.full_every_seconds, "incr": store.incremental_every_seconds,
                "drill": store.drill_every_seconds}  # fmt: skip

    def objective_seconds(self) -> float:
        return float(self.store.archive_timeout_seconds)

    def back_up(self, kind: str) -> Done:
        done = self.backup(kind)
        return Done(f"{done.label} ({done.type})", done.size_bytes)

    def listing(self) -> list[Listed]:
        return [
            Listed(item.label, item.type, item.started_at, item.stopped_at, item.size_bytes, item.repository_bytes)
            for item in self.list()
        ]

    def connect(self, host: str | None = None, port: int | None = None) -> psycopg.Connection:
        try:
            return psycopg.connect(
                host=host or self.store.socket_dir,
                port=port or self.store.port,
                user=self.store.user,
                dbname=self.store.database,
                connect_timeout=5,
                autocommit=True,
            )
        except psycopg.OperationalError as exc:
            raise BackupError(f"cannot connect to {self.name}: {str(exc).strip().splitlines()[-1]}") from None

    def configure(self) -> bool:
        """Turn on WAL archiving to the repository; True when PostgreSQL must restart for it to apply."""
        archive_command = " ".join(self.tool.command(self.name, "archive-push")) + " %p"
        wanted = {
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": archive_command,
            "archive_timeout": str(self.store.archive_timeout_seconds),
        }
        self.tool.write_config(self.store.user)
        with self.connect() as connection:
            for setting, value in wanted.items():
                connection.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(setting), value))
            connection.execute("SELECT pg_reload_conf()")
            # the running values: these two change only on restart, whatever the reload has read yet
            running: dict[str, str] = dict(
                connection.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', 'archive_mode')"
                ).fetchall()
            )
        return running.get("archive_mode") != "on" or running.get("wal_level") == "minimal"

    def create_stanza(self) -> None:
        """The store's place in the repository, then ``check``: one WAL segment archived end to end."""
        self.tool.run(self.name, self.store, "stanza-create")
        self.tool.run(self.name, self.store, "check")

    def write_sentinel(self) -> tuple[str, datetime]:
        """A row whose presence after a restore proves that data written at this moment came back."""
        token = secrets.token_hex(8)
        with self.connect() as connection:
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {SENTINEL_TABLE} "
                "(token text PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
            row = connection.execute(
                f"INSERT INTO {SENTINEL_TABLE} (token) VALUES (%s) RETURNING written_at", (token,)
            ).fetchone()
        assert row is not None
        return token, row[0]

    def backup(self, kind: str) -> BackupSet:
        """A ``full`` or ``incr`` backup, with a sentinel row written just before it."""
        self.write_sentinel()
        self.tool.run(self.name, self.store, f"--type={kind}", "backup")
        backups = self.tool.info(self.name, self.store)
        if not backups:
            raise BackupError(f"pgbackrest backup ({self.name}) reported success but info lists no backup")
        return backups[-1]

    def list(self) -> list[BackupSet]:
        return self.tool.info(self.name, self.store)

    def restore_into(self, target_dir: Path, to: datetime | None, archive: bool) -> None:
        """pgBackRest restore into an empty ``target_dir``: to ``to``, else to the end of the archive."""
        args = [f"--pg1-path={target_dir}"]
        if to is not None:
            args += ["--type=time", f"--target={to.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f+00}", "--target-action=promote"]
        if not archive:
            args.append("--archive-mode=off")
        self.tool.run(self.name, self.store, *args, "restore")

    def wait_for_archive(self, timeout: float = 60.0) -> None:
        """Switch WAL and wait until the archiver has pushed the segment just closed."""
        with self.connect() as connection:
            row = connection.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            assert row is not None
            segment = row[0]
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                stats = connection.execute("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver").fetchone()
                if stats and stats[0] and stats[0] >= segment:
                    return
                time.sleep(0.1)
        failed = f" (last failed: {stats[1]})" if stats and stats[1] else ""
        raise BackupError(f"{self.name}: WAL segment {segment} not archived within {timeout:g}s{failed}")

    def archiver_status(self) -> ArchiverStatus:
        """Recovery point age: 0 when nothing was written past the last archived segment, else the time since
        that segment was archived (what is written after it exists only on the live disk)."""
        with self.connect() as connection:
            row = connection.execute(
                "SELECT last_archived_wal, extract(epoch FROM clock_timestamp() - last_archived_time),"
                " failed_count, pg_current_wal_lsn() - '0/0'::pg_lsn,"
                " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),"
                " extract(epoch FROM clock_timestamp() - pg_postmaster_start_time())"
                " FROM pg_stat_archiver"
            ).fetchone()
        assert row is not None
        last_wal, since_archived, failed, current, segment_size, uptime = row
        if last_wal is None:
            return ArchiverStatus(float(uptime), int(failed))
        archived_end = (
            int(last_wal[8:16], 16) * 0x100000000 // segment_size + int(last_wal[16:24], 16) + 1
        ) * segment_size
        age = 0.0 if int(current) <= archived_end else float(since_archived)
        return ArchiverStatus(age, int(failed))

    def drill(self) -> Drilled:
        """Prove recoverability by restoring into scratch (see the module docstring)."""
        token, written_at = self.write_sentinel()
        self.wait_for_archive()
        backups = self.list()
        if not backups:
            raise BackupError(f"{self.name}: no backup to restore")
        scratch = Path(self.settings.work_dir).absolute() / "drills" / self.name
        shutil.rmtree(scratch, ignore_errors=True)
        own(scratch, self.store.user)
        scratch.chmod(0o700)
        started = time.perf_counter()
        try:
            self.restore_into(scratch, None, archive=False)
            (scratch / "pg_hba.conf").write_text("local all all trust\n")  # socket only, in a 0700 directory
            with scratch_instance(self.store, scratch) as port:
                self.integrity_check(str(scratch), port)
                with self.connect(str(scratch), port) as connection:
                    found = connection.execute(f"SELECT 1 FROM {SENTINEL_TABLE} WHERE token = %s", (token,)).fetchone()
                if found is None:
                    raise BackupError(
                        f"{self.name}: the sentinel row written at {written_at:%H:%M:%S} did not come back"
                    )
            return Drilled(self.name, backups[-1].label, time.perf_counter() - started, written_at)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def integrity_check(self, host: str, port: int) -> None:
        """pg_amcheck on every database: heap pages and B-tree indexes (creates amcheck where missing)."""
        done = subprocess.run(
            [str(bindir(self.store) / "pg_amcheck"), "--install-missing", "--all", "--no-password",
             "-h", host, "-p", str(port), "-U", self.store.user],
            capture_output=True, text=True, user=run_as(self.store.user), check=False,
        )  # fmt: skip
        if done.returncode != 0:
            lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
            raise BackupError(f"{self.name}: pg_amcheck found problems: {lines[0] if lines else done.returncode}")

    def plan_restore(self, to: datetime | None) -> RestorePlan[BackupSet]:
        backups = self.list()
        usable = [backup for backup in backups if to is None or backup.stopped_at <= to]
        if not usable:
            when = f" finished before {to.isoformat()}" if to else ""
            raise BackupError(f"{self.name}: no backup{when} in the repository")
        chosen = usable[-1]
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return RestorePlan(
            self.name, chosen, f"backup {chosen.label} ({chosen.type}, finished {chosen.stopped_at.isoformat()})",
            to, "the end of the archived WAL", str(self.data_dir),
            str(self.data_dir.with_name(f"{self.data_dir.name}.before-restore-{stamp}")), "pg_amcheck",
        )  # fmt: skip

    def restore(self, plan: RestorePlan[BackupSet]) -> None:
        """Fence the service, set the data directory aside, restore, start, check; see docs/runbooks/backups.md."""
        self.service("stop")
        if self.data_dir.exists():
            self.data_dir.rename(plan.set_aside)
        own(self.data_dir, self.store.user)
        self.data_dir.chmod(0o700)
        self.restore_into(self.data_dir, plan.target, archive=True)
        self.service("start")
        wait_out_of_recovery(lambda: self.connect())
        self.integrity_check(self.store.socket_dir, self.store.port)

    def service(self, action: str) -> None:
        """``stop_command``/``start_command``, else pg_ctl on the data directory."""
        configured = self.store.stop_command if action == "stop" else self.store.start_command
        pg_ctl = [str(bindir(self.store) / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "120"]
        if configured:
            argv = configured
        elif action == "stop":
            if not (self.data_dir / "postmaster.pid").exists():
                return  # not running: already fenced
            argv = [*pg_ctl, "-m", "fast", "stop"]
        else:
            argv = [*pg_ctl, "-l", str(self.data_dir / "restore-start.log"), "start"]
        run_service_command(self.name, action, argv, run_as(self.store.user))


def wait_out_of_recovery(connect: object, timeout: float = READY_TIMEOUT) -> None:
    """Until the cluster accepts connections and has left recovery (replayed up to its target)."""
    deadline = time.monotonic() + timeout
    last = "not started"
    while time.monotonic() < deadline:
        try:
            with connect() as connection:  # type: ignore[operator]
                row = connection.execute("SELECT pg_is_in_recovery()").fetchone()
                if row and not row[0]:
                    return
                last = "still in recovery"
        except InstanceExited:
            raise
        except (BackupError, psycopg.Error) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise BackupError(f"the restored cluster did not leave recovery within {timeout:g}s: {last}")


@contextmanager
def scratch_instance(store: PostgresStoreSettings, directory: Path) -> Iterator[int]:
    """A restored cluster started on a unix socket in ``directory`` only; yields its port."""
    import socket

    with socket.socket() as sock:  # the port names the socket file; free, so no shared-memory key clash
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    log = (directory.parent / f"{directory.name}.log").open("wb")
    process = subprocess.Popen(
        [str(bindir(store) / "postgres"), "-D", str(directory), "-p", str(port), "-k", str(directory),
         "-c", "listen_addresses=", "-c", "archive_mode=off"],
        stdout=log, stderr=subprocess.STDOUT, user=run_as(store.user),
    )  # fmt: skip
    try:

        def connect() -> psycopg.Connection:
            if process.poll() is not None:
                tail = (directory.parent / f"{directory.name}.log").read_text(errors="replace").strip().splitlines()
                raise InstanceExited(f"the scratch instance exited: {tail[-1] if tail else process.returncode}")
            return psycopg.connect(host=str(directory), port=port, user=store.user, dbname=store.database,
                                   connect_timeout=5, autocommit=True)  # fmt: skip

        wait_out_of_recovery(connect)
        yield port
    finally:
        if process.poll() is None:
            process.terminate()  # smart shutdown is fine: nothing else is connected
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        (directory.parent / f"{directory.name}.log").unlink(missing_ok=True)
