"""File stores (the desk's attachments): content-addressed copies and manifests on a real S3, checked
against the SHA-256 the desk recorded at upload; every damaged or missing object is a failed run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session

from backups.files import FilesStore, object_key
from backups.store import BackupError
from service_kit.db import make_engine
from tests.backups.conftest import SettingsFactory
from tests.servers import SeaweedS3Server
from tickets_app.attachments import AttachmentStore, accept_upload
from tickets_app.models import Attachment, Base

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LIMITS = (1 << 20, 1 << 30)
CLI = str(Path(sys.executable).with_name("vibelux-backup"))


class Desk:
    """The desk's attachment store and database, as the app writes them (accept_upload)."""

    def __init__(self, root: Path) -> None:
        self.directory = root / "attachments"
        self.url = f"sqlite:///{root / 'tickets.sqlite3'}"
        self.engine = make_engine(self.url)
        Base.metadata.create_all(self.engine)
        self.files = AttachmentStore(self.directory)

    def upload(self, name: str, data: bytes) -> str:
        with Session(self.engine) as session:
            attachment = accept_upload(session, self.files, "agent-1", name, data, LIMITS, None, datetime.now(UTC))
            session.commit()
            return attachment.id

    def delete(self, attachment_id: str) -> None:
        with Session(self.engine) as session:
            session.execute(delete(Attachment).where(Attachment.id == attachment_id))
            session.commit()
        self.files.remove(attachment_id)

    def path(self, attachment_id: str) -> Path:
        return self.directory / attachment_id[:2] / attachment_id

    def contents(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in self.directory.rglob("*") if p.is_file() and not p.name.startswith(".")}


@pytest.fixture
def desk(tmp_path: Path) -> Desk:
    return Desk(tmp_path)


def files_store(store_settings: SettingsFactory, desk: Desk, **fields: object) -> FilesStore:
    section = {"directory": str(desk.directory), "database_url": desk.url, **fields}
    return FilesStore("attachments", store_settings(files={"attachments": section}))


def test_restore_to_a_point_in_time_brings_back_exactly_the_files_of_that_moment(
    store_settings: SettingsFactory, desk: Desk
) -> None:
    store = files_store(store_settings, desk)
    first = {desk.upload(f"note-{n}.txt", f"note {n}\n".encode() * 100): n for n in range(3)}
    desk.upload("copy.txt", b"note 0\n" * 100)  # the same bytes as another: one object
    store.back_up("incr")
    expected = desk.contents()
    target = datetime.now(UTC)
    time.sleep(0.01)
    desk.upload("later.txt", b"after the target\n")
    desk.delete(next(iter(first)))
    done = store.back_up("incr")
    assert "1 uploaded" in done.detail  # only the new content

    shutil.rmtree(desk.directory)  # the disk is gone
    plan = store.plan_restore(target)
    assert plan.point.taken_at <= target
    store.restore(plan)

    assert desk.contents() == expected
    objects = [item.key for item in store.area.objects("objects/")]
    assert len(objects) == 4  # three distinct notes and the later file, each stored once


def test_a_file_damaged_on_disk_fails_the_full_backup_and_a_restore_heals_it(
    store_settings: SettingsFactory, desk: Desk
) -> None:
    store = files_store(store_settings, desk)
    good = b"quarterly figures\n" * 50
    damaged_id = desk.upload("figures.csv", good)
    desk.upload("other.txt", b"fine\n")
    store.back_up("full")
    path = desk.path(damaged_id)
    stat = path.stat()
    path.write_bytes(good.replace(b"figures", b"fXgures", 1))  # bit rot: same size, same mtime
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    store.back_up("incr")  # size and mtime unchanged: an incremental run does not re-read it
    with pytest.raises(
        BackupError, match=f"differ from the SHA-256 recorded at upload, e.g. {damaged_id[:2]}/{damaged_id}"
    ):
        store.back_up("full")

    store.restore(store.plan_restore(None))  # the newest manifest kept the recorded copy
    assert desk.path(damaged_id).read_bytes() == good


def test_a_file_recorded_by_the_desk_but_missing_on_disk_fails_the_backup(
    store_settings: SettingsFactory, desk: Desk
) -> None:
    store = files_store(store_settings, desk)
    lost = desk.upload("lost.txt", b"gone\n")
    desk.path(lost).unlink()
    with pytest.raises(BackupError, match="1 recorded file\\(s\\) missing on disk"):
        store.back_up("incr")


def test_the_drill_restores_its_sentinel_and_checks_every_object(store_settings: SettingsFactory, desk: Desk) -> None:
    store = files_store(store_settings, desk, drill_sample=0)
    for n in range(5):
        desk.upload(f"file-{n}.txt", f"file {n}\n".encode())
    drilled = store.drill()
    assert drilled.source.startswith("manifests/")
    assert (desk.directory / ".vibelux-backup-sentinel").exists()


@pytest.mark.parametrize("fault", ["deleted", "truncated"])
def test_the_drill_fails_when_an_object_is_deleted_or_truncated(
    store_settings: SettingsFactory, desk: Desk, s3_server: SeaweedS3Server, fault: str
) -> None:
    store = files_store(store_settings, desk, drill_sample=0)
    victim = desk.upload("victim.txt", b"the bytes that go missing\n" * 10)
    desk.upload("bystander.txt", b"unharmed\n")
    store.back_up("incr")
    sha = store.newest_manifest()[1][f"{victim[:2]}/{victim}"].sha256  # type: ignore[index]
    client, key = s3_server.client(), store.area.base + object_key(sha)
    if fault == "deleted":
        client.delete_object(Bucket=s3_server.bucket, Key=key)
    else:
        body = client.get_object(Bucket=s3_server.bucket, Key=key)
        client.put_object(Bucket=s3_server.bucket, Key=key, Body=body["Body"].read()[:5], Metadata=body["Metadata"])

    message = "its object is missing" if fault == "deleted" else "object is 5 bytes, 260 backed up"
    with pytest.raises(BackupError, match=message):
        store.drill()


def test_cli_lists_manifests_and_restores_with_one_command(
    store_settings: SettingsFactory, desk: Desk, s3_server: SeaweedS3Server, tmp_path: Path
) -> None:
    store = files_store(store_settings, desk)  # writes tmp_path/backups.yml
    desk.upload("a.txt", b"alpha\n")
    store.back_up("incr")
    expected = desk.contents()
    environ = {
        **os.environ,
        "VIBELUX_BACKUP_CONFIG": str(tmp_path / "backups.yml"),
        "BACKUP_S3__ACCESS_KEY": s3_server.access_key,
        "BACKUP_S3__SECRET_KEY": s3_server.secret_key,
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, *args], capture_output=True, text=True, env=environ, timeout=60, check=False)

    listed = cli("list", "--store", "attachments")
    assert listed.returncode == 0, listed.stderr
    (row,) = [line.split("\t") for line in listed.stdout.splitlines()[1:]]
    assert row[:3] == ["attachments", store.listing()[0].label, "manifest"]

    shutil.rmtree(desk.directory)
    dry = cli("restore", "--store", "attachments", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "check: SHA-256 of every file" in dry.stdout
    assert not desk.directory.exists()

    done = cli("restore", "--store", "attachments", "--yes")
    assert done.returncode == 0, done.stderr
    assert desk.contents() == expected
    bad_kind = cli("backup", "--store", "attachments", "--type", "sync")
    assert bad_kind.returncode == 2
    assert "attachments takes full or incr" in bad_kind.stderr
