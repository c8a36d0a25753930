"""Backups at the desk's scale (issue 13): restore time on both engines, and what a backup costs the live desk.

The desk is bench/tickets_search.py's corpus, made by its generator (100k tickets and 1M messages by
default, FTS index built) and cached in .run/bench/. The object store is SeaweedFS ``weed mini`` over
HTTPS on loopback, so it shares this host's cores with everything else measured here.

Restore time (``--restore``), the recovery time objective; the steps are the tool's own calls:

- SQLite: the corpus is replicated by ``vibelux-backup replicate`` (Litestream) until the replica holds a
  sentinel row written after it (``SqliteStore.sync``), then the replicator is stopped. Each round restores
  it twice, side by side: ``litestream restore`` alone (the tool's ``Litestream.run``) with SQLite's
  ``PRAGMA integrity_check`` timed apart, and ``SqliteStore.restore_into``, which is what the drill and
  ``vibelux-backup restore`` run: ``-integrity-check full``, restore and check in one call (so its check is
  only known as the difference).
- PostgreSQL: the corpus is COPYed from that SQLite file into a PostgreSQL 15 cluster (database ``desk``,
  created by the desk's migrations, search index rebuilt, ``fsync`` on after the load), archiving is turned
  on by ``PostgresStore.configure`` and one full backup taken by ``PostgresStore.backup``. Each round is the
  drill's steps, timed apart: ``restore_into`` a scratch directory (pgBackRest restore), the scratch
  instance started until it leaves recovery (``scratch_instance``), then ``integrity_check`` (pg_amcheck
  on every database). The restored row counts must equal the corpus'.

Backup cost (``--backup-cost``): the desk's API (tickets_app's Flask app in this process, 2 client threads,
against the PostgreSQL cluster holding the corpus) runs a fixed mix in a loop: per cycle a list of open
tickets, a search for a rare word, a staff reply, two ticket reads and a new ticket (``--no-thread-reads``
leaves out the last three, whose answers carry the ticket's thread: on PostgreSQL that query scanned every
message until issue 16, see bench/RESULTS.md). The phases alternate: no backup, a full backup running, no backup, an
incremental running, no backup, and so on for ``--rounds``. The requests per second while a backup runs
over the mean of the two phases without one around it is the ratio (1.0: free). pgBackRest's
``process-max`` and ``compress-level`` are not in the tool's settings: ``--process-max 1,2`` and
``--compress-level 1,3`` set them through pgBackRest's environment variables, each combination taking its
turn in every round (unset: pgBackRest's defaults, 1 process and zstd level 3).

Run: .venv/bin/python bench/backups_desk.py [--tickets 100000] [--messages 1000000] [--rounds 3]
     [--restore | --backup-cost] [--no-thread-reads] [--process-max 1,2] [--compress-level 1,3] [--rebuild]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script or as bench.backups_desk

import psycopg
from flask import Flask
from sqlalchemy import text

from backups.litestream import SqliteStore
from backups.pgbackrest import BackupSet, own
from backups.postgres import PostgresStore, scratch_instance
from bench.backups import postgres_settings
from bench.tickets_search import RARE_WORDS, generate
from service_kit.auth import create_token
from service_kit.db import make_engine
from service_kit.settings import DatabaseSettings, LoggingSettings
from tests.backups.conftest import USER, Cluster, Replicated
from tests.servers import SeaweedS3Server
from tickets_app.app import create_app
from tickets_app.cli import migrate
from tickets_app.models import SlaPolicy, StaffUser
from tickets_app.search import PostgresFtsIndex
from tickets_app.settings import AttachmentSettings, TicketsSettings, WebSettings

CORPUS_DIR = Path(".run/bench")
DESK_DATABASE = "desk"
CORPUS_TABLES = ("tickets", "messages")  # what the generator writes; the rest is the migrations' own


def corpus(tickets: int, messages: int, rebuild: bool) -> Path:
    """The generator's SQLite file for this size, made once and reused."""
    path = CORPUS_DIR / f"desk-{tickets}-tickets-{messages}-messages.sqlite3"
    if rebuild or not path.exists():
        began = time.perf_counter()
        generate(path, tickets, messages // tickets)
        print(f"corpus generated in {time.perf_counter() - began:.0f} s: {path}")
    return path


def stored_bytes(s3: SeaweedS3Server, prefix: str) -> int:
    """What the object store holds under ``prefix`` (a key prefix, no leading slash)."""
    total = 0
    for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix):
        total += sum(item["Size"] for item in page.get("Contents", []))
    return total


def megabytes(size: float) -> str:
    return f"{size / 1e6:,.0f} MB"


def timed(step: Any, *args: Any) -> float:
    began = time.perf_counter()
    step(*args)
    return time.perf_counter() - began


def counts(connection: Any) -> tuple[int, ...]:
    """Rows of the corpus tables (a sqlite3 or psycopg connection)."""
    return tuple(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in CORPUS_TABLES)


def load_average() -> str:
    """This host's 1-minute load average: other work on the same 2 cores, which the figures depend on."""
    return f"load average {os.getloadavg()[0]:.1f}"


def print_table(title: str, rows: list[tuple[str, list[float]]]) -> None:
    print(f"\n{title}; {load_average()} at the end")
    print("| step | median s | min s | max s |")
    print("|---|---|---|---|")
    for name, samples in rows:
        print(f"| {name} | {statistics.median(samples):.1f} | {min(samples):.1f} | {max(samples):.1f} |")


# -- SQLite ----------------------------------------------------------------------------------------------


def sqlite_restore(s3: SeaweedS3Server, source: Path, rounds: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="vibelux-bench-desk-sqlite-"))
    replicated = Replicated(root, s3, f"/bench/desk-sqlite-{os.getpid()}", sync_interval=1.0)  # the default
    try:
        replicated.replication_timeout = 900.0  # the first sync ships the whole database
        for suffix in ("-wal", "-shm"):
            replicated.path.with_name(replicated.path.name + suffix).unlink(missing_ok=True)
        shutil.copyfile(source, replicated.path)
        store = SqliteStore("tickets", replicated.settings())
        with store.connect() as connection:
            expected = counts(connection)
        replicated.start()
        shipped = timed(store.sync)
        replicated.stop()
        files = store.list()
        levels = sorted({item.level for item in files})
        repository = stored_bytes(s3, store.tool.replica_path("tickets"))
        print(f"\nSQLite: {expected[0]:,} tickets, {expected[1]:,} messages, database "
              f"{megabytes(source.stat().st_size)}; first replication {shipped:.0f} s; replica "
              f"{megabytes(repository)} in {len(files)} LTX files (levels {levels})")  # fmt: skip
        steps: dict[str, list[float]] = {"restore": [], "integrity_check": [], "restore_into (drill)": []}
        for index in range(rounds):
            alone, drill = root / f"alone-{index}.sqlite3", root / f"drill-{index}.sqlite3"
            steps["restore"].append(timed(store.tool.run, "restore", "-o", str(alone), str(store.path)))
            with sqlite3.connect(alone) as connection:
                began = time.perf_counter()
                verdict = connection.execute("PRAGMA integrity_check").fetchone()
                steps["integrity_check"].append(time.perf_counter() - began)
                if verdict != ("ok",):
                    raise SystemExit(f"the restored copy fails PRAGMA integrity_check: {verdict}")
                assert counts(connection) == expected
            steps["restore_into (drill)"].append(timed(store.restore_into, drill, None))
            with sqlite3.connect(drill) as connection:
                assert counts(connection) == expected
            for copy in (alone, drill):
                copy.unlink()
        difference = [d - r for d, r in zip(steps["restore_into (drill)"], steps["restore"], strict=True)]
        print_table(
            f"SQLite restore, {rounds} rounds (Litestream, {megabytes(repository)} replica)",
            [*steps.items(), ("-integrity-check full (restore_into minus restore)", difference)],
        )
    finally:
        replicated.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- PostgreSQL ------------------------------------------------------------------------------------------


@dataclass
class Desk:
    """The PostgreSQL cluster holding the corpus, its store, and what it took to get there."""

    cluster: Cluster
    store: PostgresStore
    url: str
    expected: tuple[int, ...]
    prefix: str  # the repository's key prefix in the bucket
    load: dict[str, float] = field(default_factory=dict)
    first_backup: BackupSet | None = None


def copy_corpus(source: Path, desk: psycopg.Connection) -> tuple[int, ...]:
    """COPY the generator's rows from SQLite into the migrated desk database, then its sequences; the counts."""
    with sqlite3.connect(source) as lite:
        for table in CORPUS_TABLES:
            columns = [row[1] for row in lite.execute(f"PRAGMA table_info({table})")]
            names = ", ".join(columns)
            with desk.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in lite.execute(f"SELECT {names} FROM {table}"):
                    copy.write_row(row)
            desk.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}")
        desk.commit()
        loaded = counts(desk)
        if loaded != counts(lite):
            raise SystemExit(f"COPY loaded {loaded} rows of {CORPUS_TABLES}, the corpus has {counts(lite)}")
    return loaded


@contextmanager
def postgres_desk(s3: SeaweedS3Server, source: Path) -> Iterator[Desk]:
    """A cluster with the corpus loaded, archiving to the repository, and one full backup of it."""
    root = Path(tempfile.mkdtemp(prefix="vibelux-bench-desk-pg-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root, USER)
    cluster = Cluster(root)
    cluster.start()
    try:
        prefix = f"/bench/desk-pg-{os.getpid()}"
        store = PostgresStore("tickets", postgres_settings(s3, cluster, prefix))
        with store.connect() as connection:
            connection.execute(f"CREATE DATABASE {DESK_DATABASE}")
        url = f"postgresql+psycopg://{USER}@127.0.0.1:{cluster.port}/{DESK_DATABASE}"
        desk = Desk(cluster, store, url, (), prefix.strip("/"))
        desk.load["migrate"] = timed(migrate, url)
        began = time.perf_counter()
        with psycopg.connect(host=str(root), port=cluster.port, user=USER, dbname=DESK_DATABASE) as connection:
            desk.expected = copy_corpus(source, connection)
        desk.load["COPY"] = time.perf_counter() - began
        engine = make_engine(url)
        began = time.perf_counter()
        with engine.begin() as connection:
            PostgresFtsIndex().rebuild_all(connection)
        desk.load["search index"] = time.perf_counter() - began
        began = time.perf_counter()
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
        engine.dispose()
        desk.load["VACUUM ANALYZE"] = time.perf_counter() - began
        with store.connect() as connection:
            connection.execute("ALTER SYSTEM SET fsync = on")  # off for initdb and the load only
        began = time.perf_counter()
        store.configure()
        store.service("stop")
        store.service("start")
        store.create_stanza()
        desk.load["archiving on, stanza"] = time.perf_counter() - began
        began = time.perf_counter()
        desk.first_backup = store.backup("full")
        desk.load["full backup"] = time.perf_counter() - began
        yield desk
    finally:
        cluster.crash()
        shutil.rmtree(root, ignore_errors=True)


def describe(s3: SeaweedS3Server, desk: Desk) -> None:
    with desk.store.connect() as connection:
        row = connection.execute(
            "SELECT pg_database_size(%s), sum(pg_database_size(datname))::bigint FROM pg_database", (DESK_DATABASE,)
        ).fetchone()
    assert row is not None and desk.first_backup is not None
    backup, archive = (stored_bytes(s3, f"{desk.prefix}/{kind}/") for kind in ("backup", "archive"))
    print(f"\nPostgreSQL: {desk.expected[0]:,} tickets, {desk.expected[1]:,} messages; database {DESK_DATABASE} "
          f"{megabytes(row[0])}, cluster {megabytes(row[1])}")  # fmt: skip
    print("load: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in desk.load.items()))
    print(f"full backup {desk.first_backup.label}: {megabytes(desk.first_backup.size_bytes)} backed up, "
          f"{megabytes(desk.first_backup.repository_bytes)} in the repository; repository now: backup/ "
          f"{megabytes(backup)}, archive/ {megabytes(archive)}")  # fmt: skip


def postgres_restore(desk: Desk, rounds: int) -> None:
    store = desk.store
    scratch = Path(store.settings.work_dir).absolute() / "drills" / "bench"
    steps: dict[str, list[float]] = {"restore_into (pgBackRest restore)": [], "start, leave recovery": [],
                                     "integrity_check (pg_amcheck)": [], "total": []}  # fmt: skip
    for _ in range(rounds):
        shutil.rmtree(scratch, ignore_errors=True)
        own(scratch, store.store.user)
        scratch.chmod(0o700)
        began = time.perf_counter()
        store.restore_into(scratch, None, archive=False)
        restored = time.perf_counter()
        (scratch / "pg_hba.conf").write_text("local all all trust\n")  # as the drill does
        with scratch_instance(store.store, scratch) as port:
            started = time.perf_counter()
            store.integrity_check(str(scratch), port)
            checked = time.perf_counter()
            with psycopg.connect(host=str(scratch), port=port, user=store.store.user, dbname=DESK_DATABASE) as copy:
                assert counts(copy) == desk.expected
        steps["restore_into (pgBackRest restore)"].append(restored - began)
        steps["start, leave recovery"].append(started - restored)
        steps["integrity_check (pg_amcheck)"].append(checked - started)
        steps["total"].append(checked - began)
        shutil.rmtree(scratch, ignore_errors=True)
    print_table(f"PostgreSQL restore of the full backup, {rounds} rounds (pgBackRest)", list(steps.items()))


# -- backup cost -----------------------------------------------------------------------------------------


class DeskClient(threading.Thread):
    """One client of the desk's API cycling through a fixed mix; records (end, seconds) per answer."""

    def __init__(self, app: Flask, tokens: dict[str, str], tickets: int, seed: int, thread_reads: bool) -> None:
        super().__init__(daemon=True)
        self.app, self.tickets, self.rng = app, tickets, random.Random(seed)
        self.thread_reads = thread_reads
        self.headers = {role: {"Authorization": f"Bearer {token}"} for role, token in tokens.items()}
        self.answers: list[tuple[float, float]] = []
        self.failures: list[str] = []
        self.running = True

    def cycle(self) -> list[tuple[str, str, str, dict[str, Any] | None]]:
        """(role, method, url, body): a list, a search, a staff reply; then, unless left out, two ticket
        reads and a new ticket, the answers that carry a thread."""
        some = self.rng.randint
        requests: list[tuple[str, str, str, dict[str, Any] | None]] = [
            ("agent", "GET", "/api/v1/tickets?status=open", None),
            ("agent", "GET", f"/api/v1/tickets?q={self.rng.choice(RARE_WORDS)}", None),
            ("agent", "POST", f"/api/v1/tickets/{some(1, self.tickets)}/messages",
             {"body": f"Could you try again with the export option {some(1, 10**6)}?"}),
        ]  # fmt: skip
        if self.thread_reads:
            requests += [
                ("agent", "GET", f"/api/v1/tickets/{some(1, self.tickets)}", None),
                ("agent", "GET", f"/api/v1/tickets/{some(1, self.tickets)}", None),
                ("customer", "POST", "/api/v1/tickets",
                 {"subject": f"Checkout fails on step {some(1, 99)}", "body": "Error 502", "priority": "high"}),
            ]  # fmt: skip
        return requests

    def run(self) -> None:
        client = self.app.test_client()
        while self.running:
            for role, method, url, body in self.cycle():
                began = time.perf_counter()
                response = client.open(url, method=method, json=body, headers=self.headers[role])
                ended = time.perf_counter()
                if response.status_code >= 400:
                    self.failures.append(f"{method} {url}: {response.status_code} {response.get_data(as_text=True)}")
                self.answers.append((ended, ended - began))


def desk_app(desk: Desk, workdir: Path) -> tuple[Flask, dict[str, str]]:
    settings = TicketsSettings(
        database=DatabaseSettings(url=desk.url),
        attachments=AttachmentSettings(directory=str(workdir / "files")),
        web=WebSettings(secret_key="bench-secret-key-for-sessions"),
        logging=LoggingSettings(level="WARNING", json=True),
    )
    app = create_app(settings, start_sweeper=False)
    with app.extensions["database"].new_session() as session:
        session.add(SlaPolicy(name="all", position=0, definition={"targets": {"first_response": 60}}))
        session.add(StaffUser(id="bench-agent", name="Bench Agent", role="agent", password_hash="-"))
        tokens = {
            "agent": create_token(session, "bench-agent", "agent", subject="bench-agent")[0],
            "customer": create_token(session, "bench-customer", "customer", subject="cust-1", tier="professional")[0],
        }
        session.commit()
    return app, tokens


# pgBackRest options the tool's settings do not expose (its config file leaves them out, so pgBackRest takes
# them from its environment); None: pgBackRest's default, 1 process and zstd level 3.
VARIANT_OPTIONS = ("process-max", "compress-level")
Variant = tuple[int | None, ...]


def use_variant(variant: Variant) -> None:
    for option, value in zip(VARIANT_OPTIONS, variant, strict=True):
        name = "PGBACKREST_" + option.upper().replace("-", "_")
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(value)


def variant_label(variant: Variant) -> str:
    defaults = {"process-max": 1, "compress-level": 3}
    return ", ".join(
        f"{option} {defaults[option]} (default)" if value is None else f"{option} {value}"
        for option, value in zip(VARIANT_OPTIONS, variant, strict=True)
    )


@dataclass
class Phase:
    kind: str  # none (no backup running), full, incr
    began: float
    ended: float
    backup: BackupSet | None = None
    variant: Variant = ()


def window(clients: list[DeskClient], phase: Phase) -> tuple[float, list[float]]:
    """Requests per second in the phase and their latencies (s)."""
    latencies = [seconds for c in clients for ended, seconds in c.answers if phase.began <= ended < phase.ended]
    return len(latencies) / (phase.ended - phase.began), latencies


def backup_cost(
    desk: Desk, rounds: int, phase_seconds: float, clients_n: int, thread_reads: bool, variants: list[Variant]
) -> None:
    """Alternating phases: none, then each variant's full and incremental backup, each followed by none."""
    workdir = Path(tempfile.mkdtemp(prefix="vibelux-bench-desk-app-"))
    app, tokens = desk_app(desk, workdir)
    clients = [DeskClient(app, tokens, desk.expected[0], seed, thread_reads) for seed in range(clients_n)]
    for client in clients:
        client.start()
    time.sleep(5)  # warm: connections, caches
    phases: list[Phase] = []

    def no_backup() -> None:
        began = time.perf_counter()
        time.sleep(phase_seconds)
        phases.append(Phase("none", began, time.perf_counter()))

    try:
        no_backup()
        for _ in range(rounds):
            for variant in variants:
                use_variant(variant)
                for kind in ("full", "incr"):
                    began = time.perf_counter()
                    backup = desk.store.backup(kind)
                    phases.append(Phase(kind, began, time.perf_counter(), backup, variant))
                    no_backup()
    finally:
        use_variant((None,) * len(VARIANT_OPTIONS))
        for client in clients:
            client.running = False
        for client in clients:
            client.join()
        app.extensions["database"].engine.dispose()
        shutil.rmtree(workdir, ignore_errors=True)
    failures = [failure for client in clients for failure in client.failures]
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    mix = "list, search, reply" + (", 2 ticket reads, new ticket" if thread_reads else " (no thread reads)")
    print(f"\nBackup cost: desk API ({mix}), {clients_n} clients, {rounds} rounds; each backup between two "
          f"phases of {phase_seconds:g} s without one; {load_average()} at the end")  # fmt: skip
    print("| phase | backup s | repository MB | req/s | p50 ms | p95 ms | ratio (median, range) |")
    print("|---|---|---|---|---|---|---|")
    base_rate, base_latency = [], []
    for phase in phases:
        if phase.kind == "none":
            rate, latencies = window(clients, phase)
            base_rate.append(rate)
            base_latency += latencies
    print(f"| no backup | | | {statistics.median(base_rate):.1f} | {percentile(base_latency, 0.5):.0f} | "
          f"{percentile(base_latency, 0.95):.0f} | 1.00 |")  # fmt: skip
    for variant in variants:
        for kind in ("full", "incr"):
            durations, stored, rates, ratios, latencies = [], [], [], [], []
            for index, phase in enumerate(phases):
                if phase.kind != kind or phase.variant != variant:
                    continue
                assert phase.backup is not None
                rate, seen = window(clients, phase)
                around = [window(clients, phases[index + step])[0] for step in (-1, 1)]
                durations.append(phase.ended - phase.began)
                stored.append(phase.backup.repository_bytes / 1e6)
                rates.append(rate)
                ratios.append(rate / statistics.mean(around))
                latencies += seen
            print(f"| {kind} backup, {variant_label(variant)} | {statistics.median(durations):.0f} | "
                  f"{statistics.median(stored):.0f} | {statistics.median(rates):.1f} | "
                  f"{percentile(latencies, 0.5):.0f} | {percentile(latencies, 0.95):.0f} | "
                  f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |")  # fmt: skip


def percentile(seconds: list[float], q: float) -> float:
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def numbers(value: str) -> list[int | None]:
    return [int(item) for item in value.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000, help="a multiple of --tickets")
    parser.add_argument("--rounds", type=int, default=3)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--restore", action="store_true", help="only the restore times")
    mode.add_argument("--backup-cost", action="store_true", help="only the cost of a backup to the desk")
    parser.add_argument("--phase-seconds", type=float, default=10.0, help="each phase without a backup")
    parser.add_argument("--clients", type=int, default=2, help="desk API clients (threads)")
    parser.add_argument(
        "--no-thread-reads",
        action="store_true",
        help="leave out the requests whose answer carries the thread (ticket reads, new tickets)",
    )
    parser.add_argument(
        "--process-max",
        type=numbers,
        default=[None],
        help="pgBackRest process-max, a list to compare in one run: 1,2 (default: its own, 1)",
    )
    parser.add_argument(
        "--compress-level",
        type=numbers,
        default=[None],
        help="pgBackRest compress-level, a list: 1,3 (default: its own, 3 for zst)",
    )
    parser.add_argument("--rebuild", action="store_true", help="generate the corpus again")
    args = parser.parse_args()
    if args.messages % args.tickets:
        parser.error("--messages must be a multiple of --tickets (the generator makes N messages per ticket)")
    source = corpus(args.tickets, args.messages, args.rebuild)
    print(f"{os.cpu_count()} cores, {load_average()}")
    s3 = SeaweedS3Server()
    s3.start()
    try:
        if not args.backup_cost:
            sqlite_restore(s3, source, args.rounds)
        with postgres_desk(s3, source) as desk:
            describe(s3, desk)
            if not args.backup_cost:
                postgres_restore(desk, args.rounds)
            if not args.restore:
                variants: list[Variant] = list(itertools.product(args.process_max, args.compress_level))
                backup_cost(desk, args.rounds, args.phase_seconds, args.clients, not args.no_thread_reads, variants)
    finally:
        s3.close()


if __name__ == "__main__":
    main()
