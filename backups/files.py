"""File stores (the desk's attachments): content-addressed copies in the object store, a manifest per run.

Each file is stored once under the SHA-256 of its bytes (``objects/<2 hex>/<hex>``), so a run uploads only
new content, and a manifest (``manifests/<time>.json.gz``) maps every path to its hash, size and mtime. A
restore to T takes the newest manifest taken by T and fetches its objects; every object is checked against
its hash on the way back.

Integrity against the desk's own record: when ``database_url`` is set, every file is compared with the
SHA-256 the desk stored at upload (``attachments.sha256``). A file that differs was damaged on the local
disk: its bytes are not uploaded, the manifest keeps the recorded copy (so a restore heals it) and the run
fails naming the file. An incremental run hashes only files whose size or mtime changed; a full run
re-reads every one, which is what finds bit rot that leaves mtime alone.

A drill writes a sentinel file, runs a backup, then checks that every object the newest manifest names is in
the object store with its size, and downloads and hashes the sentinel plus ``drill_sample`` other files.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from backups.objects import Document, DocumentedStore, ObjectArea
from backups.settings import BackupSettings, FilesStoreSettings
from backups.store import BackupError, Done, Drilled, RestorePlan
from service_kit.db import make_engine

FORMAT = "vibelux-files-manifest/1"
SENTINEL_NAME = ".vibelux-backup-sentinel"  # not an attachment id (those never start with "."), never served
TRANSFERS = 8  # parallel uploads and downloads: object stores reward concurrency
MANIFESTS = "manifests/"


@dataclass(frozen=True)
class Entry:
    sha256: str
    size_bytes: int
    mtime_ns: int


def object_key(sha256: str) -> str:
    return f"objects/{sha256[:2]}/{sha256}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class FilesStore(DocumentedStore):
    folder, noun, check = MANIFESTS, "manifest", "SHA-256 of every file"

    def __init__(self, name: str, settings: BackupSettings) -> None:
        self.name = name
        self.config: FilesStoreSettings = settings.files[name]
        self.root = Path(self.config.directory).absolute()
        self.area = ObjectArea(settings.s3, f"files/{name}")
        self.stop_command, self.start_command = self.config.stop_command, self.config.start_command

    def schedule(self) -> dict[str, float]:
        return {
            "full": self.config.full_every_seconds,
            "incr": self.config.incremental_every_seconds,
            "drill": self.config.drill_every_seconds,
        }

    def walk(self) -> Iterator[tuple[str, Path]]:
        """Every file under the root as (relative POSIX path, path); files being written (.part) are left out."""
        for directory, _dirs, names in os.walk(self.root):
            for name in names:
                if not name.endswith(".part"):
                    path = Path(directory, name)
                    yield path.relative_to(self.root).as_posix(), path

    def recorded(self) -> dict[str, tuple[str, int]]:
        """The desk's record: relative path -> (SHA-256, size) of every attachment, if configured."""
        if not self.config.database_url:
            return {}
        engine = make_engine(self.config.database_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(text("SELECT id, sha256, size_bytes FROM attachments")).all()
        except SQLAlchemyError as exc:
            raise BackupError(f"{self.name}: the desk's attachment records cannot be read: {exc}") from None
        finally:
            engine.dispose()
        return {f"{row[0][:2]}/{row[0]}": (row[1], int(row[2])) for row in rows}

    def newest_manifest(self) -> tuple[Document, dict[str, Entry]] | None:
        documents = self.area.documents(MANIFESTS)
        if not documents:
            return None
        return documents[-1], self.load(documents[-1])

    def load(self, document: Document) -> dict[str, Entry]:
        manifest: dict[str, Any] = self.area.get_document(document.item.key)
        if manifest.get("format") != FORMAT or manifest.get("store") != self.name:
            raise BackupError(f"{self.name}: {document.item.key} is not a manifest of this store")
        return {path: Entry(*fields) for path, fields in manifest["files"].items()}

    def objective_seconds(self) -> float:
        return float(self.config.incremental_every_seconds)

    def back_up(self, kind: str) -> Done:
        """One run: hash what changed (everything, for ``full``), check it against the desk's record, upload
        new content, write the manifest, expire old manifests and the objects only they named."""
        taken_at = datetime.now(UTC)
        newest = self.newest_manifest()
        previous = newest[1] if newest else {}
        recorded = self.recorded()
        entries: dict[str, Entry] = {}
        uploads: dict[str, Path] = {}
        damaged: list[str] = []
        for relative, path in self.walk():
            stat = path.stat()
            before = previous.get(relative)
            unchanged = before and (before.size_bytes, before.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
            sha = before.sha256 if before and unchanged and kind != "full" else file_sha256(path)
            expected = recorded.get(relative)
            if expected and expected[0] != sha:
                damaged.append(relative)
                if before and before.sha256 == expected[0]:
                    entries[relative] = before  # the recorded copy, backed up before the damage
                continue
            entries[relative] = Entry(sha, stat.st_size, stat.st_mtime_ns)
            if not (before and before.sha256 == sha) or kind == "full":
                uploads.setdefault(sha, path)
        missing = sorted(set(recorded) - set(entries) - set(damaged))
        present = {item.key for item in self.area.objects("objects/")} if kind == "full" else None
        uploaded = self._upload(uploads, present)
        manifest = {
            "format": FORMAT,
            "store": self.name,
            "taken_at": taken_at.isoformat(),
            "files": {relative: [e.sha256, e.size_bytes, e.mtime_ns] for relative, e in sorted(entries.items())},
        }
        document = self.area.put_document(MANIFESTS, manifest, taken_at)
        self._expire()
        if damaged:
            raise BackupError(
                f"{self.name}: {len(damaged)} file(s) differ from the SHA-256 recorded at upload, e.g. {damaged[0]}: "
                "damaged on disk; the backup keeps the recorded copy where it has one (restore the files)"
            )
        if missing:
            raise BackupError(f"{self.name}: {len(missing)} recorded file(s) missing on disk, e.g. {missing[0]}")
        total = sum(entry.size_bytes for entry in entries.values())
        return Done(f"{len(entries)} files, {uploaded} uploaded, manifest {document.item.key}", total)

    def _upload(self, uploads: dict[str, Path], present: set[str] | None) -> int:
        """Upload each hash's file unless its object is there (``present``: the listing; None: ask each);
        returns how many were sent."""

        def one(item: tuple[str, Path]) -> int:
            sha, path = item
            there = object_key(sha) in present if present is not None else self.area.exists(object_key(sha))
            if there:
                return 0
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != sha:
                raise BackupError(f"{self.name}: {path.name} changed while it was backed up; the next run takes it")
            self.area.put(object_key(sha), data)
            return 1

        with ThreadPoolExecutor(TRANSFERS) as pool:
            return sum(pool.map(one, uploads.items()))

    def _expire(self) -> None:
        expired = self.area.keep_newest(MANIFESTS, self.config.retention)
        if not expired:
            return
        kept = {entry.sha256 for document in self.area.documents(MANIFESTS) for entry in self.load(document).values()}
        orphans = [item.key for item in self.area.objects("objects/") if item.key.rsplit("/", 1)[-1] not in kept]
        self.area.delete(orphans)

    def drill(self) -> Drilled:
        token = secrets.token_hex(8)
        written_at = datetime.now(UTC)
        self.root.mkdir(parents=True, exist_ok=True)
        sentinel = self.root / SENTINEL_NAME
        partial = sentinel.with_name(sentinel.name + ".part")
        partial.write_text(json.dumps({"token": token, "written_at": written_at.isoformat()}))
        os.replace(partial, sentinel)
        self.back_up("incr")
        started = time.perf_counter()
        found = self.newest_manifest()
        if found is None:
            raise BackupError(f"{self.name}: no manifest in the object store after a backup")
        document, entries = found
        if SENTINEL_NAME not in entries:
            raise BackupError(f"{self.name}: the sentinel written at {written_at:%H:%M:%S} is not in the manifest")
        stored = {item.key: item.size_bytes for item in self.area.objects("objects/")}
        for relative, entry in entries.items():
            size = stored.get(object_key(entry.sha256))
            if size is None:
                raise BackupError(f"{self.name}: {relative} is in the manifest but its object is missing")
            if size != entry.size_bytes:
                raise BackupError(f"{self.name}: {relative}'s object is {size} bytes, {entry.size_bytes} backed up")
        others = sorted(set(entries) - {SENTINEL_NAME})
        count = len(others) if self.config.drill_sample == 0 else min(len(others), self.config.drill_sample)
        sample = random.sample(others, count)
        scratch = self.root.parent / f".{self.root.name}-drill"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            self._download({relative: entries[relative] for relative in [SENTINEL_NAME, *sample]}, scratch)
            restored = json.loads((scratch / SENTINEL_NAME).read_text())
            if restored.get("token") != token:
                raise BackupError(f"{self.name}: the sentinel written at {written_at:%H:%M:%S} did not come back")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return Drilled(self.name, document.item.key, time.perf_counter() - started, written_at)

    def _download(self, entries: dict[str, Entry], into: Path) -> None:
        """Fetch each entry's object into ``into``, checked against the manifest's hash."""

        def one(item: tuple[str, Entry]) -> None:
            relative, entry = item
            parts = PurePosixPath(relative).parts
            if PurePosixPath(relative).is_absolute() or ".." in parts:
                raise BackupError(f"{self.name}: the manifest names {relative!r}, outside the directory")
            data = self.area.get(object_key(entry.sha256))
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                raise BackupError(f"{self.name}: the object for {relative} does not hold what was backed up")
            path = into.joinpath(*parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))

        into.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(TRANSFERS) as pool:
            list(pool.map(one, entries.items()))

    def location(self) -> tuple[str, str]:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return str(self.root), str(self.root.with_name(f"{self.root.name}.before-restore-{stamp}"))

    def restore(self, plan: RestorePlan[Any]) -> None:
        """Fetch everything into a new directory next to the root, then swap it in while the service is down."""
        entries = self.load(plan.point)
        incoming = self.root.with_name(f".{self.root.name}-restoring")
        shutil.rmtree(incoming, ignore_errors=True)
        try:
            self._download(entries, incoming)
        except BackupError:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        self.service("stop")
        if self.root.exists():
            self.root.rename(plan.set_aside)
        incoming.rename(self.root)
        self.service("start")
