"""What every kind of store (PostgreSQL, SQLite, Redis, files) offers the scheduler, the metrics and the CLI.

One interface, so `serve`, `list`, `drill` and `restore` have one code path whatever the engine; each engine
keeps its own richer methods (``PostgresStore.backup`` returns pgBackRest's backup set) for its tests.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

Point = TypeVar("Point")


class BackupError(Exception):
    """A backup, restore or drill step that failed; ``str()`` says which step and why, in one line."""


@dataclass(frozen=True)
class ArchiverStatus:
    """How far behind the live store its copy in the object store is."""

    recovery_point_age_seconds: float  # how much committed data a restore now would lose at most
    failed_count: int  # WAL segments the archiver failed to push (PostgreSQL only; 0 elsewhere)


@dataclass(frozen=True)
class Done:
    """A successful backup run: its one-line detail and the size of what was backed up."""

    detail: str
    size_bytes: int | None


@dataclass(frozen=True)
class Drilled:
    """A drill that proved recoverability: what it restored, and when its sentinel was written."""

    store: str
    source: str  # the backup, replica position or export the restore started from
    duration_seconds: float  # restore and checks: the recovery time
    sentinel_written_at: datetime


@dataclass(frozen=True)
class Listed:
    """One row of `vibelux-backup list`."""

    label: str
    type: str
    started_at: datetime | None
    finished_at: datetime
    database_bytes: int | None  # the live data's size at that backup, where known
    repository_bytes: int | None  # what it occupies in the object store


@dataclass(frozen=True)
class RestorePlan(Generic[Point]):
    """What a restore would do, shown by ``--dry-run`` before anything changes."""

    store: str
    point: Point  # the engine's own description of the starting point (a backup set, an LTX file, an export)
    source: str  # that point, in words
    target: datetime | None  # None: the latest point
    latest: str  # what "latest" means for this engine
    location: str  # what is replaced
    set_aside: str  # where the current data goes first, never deleted
    check: str  # the integrity check run on the result


class Store(Protocol):
    name: str

    def schedule(self) -> dict[str, float]:
        """Backup kinds (plus ``drill``) and how often each runs, in seconds."""
        ...

    def objective_seconds(self) -> float:
        """The recovery point the store is built for: how much recent data a lost disk may cost."""
        ...

    def back_up(self, kind: str) -> Done: ...

    def drill(self) -> Drilled: ...

    def listing(self) -> list[Listed]: ...

    def plan_restore(self, to: datetime | None) -> RestorePlan[Any]: ...

    def restore(self, plan: RestorePlan[Any]) -> None:
        """Fence the service, set the current data aside, restore, check, start the service again."""
        ...

    def archiver_status(self) -> ArchiverStatus | None:
        """None when the store cannot be asked (down): the age is unknown."""
        ...


def run_service_command(store: str, action: str, argv: list[str], user: str | None = None) -> None:
    """A configured ``stop_command``/``start_command``; a failure stops the restore, naming the store."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, user=user)
    if done.returncode != 0:
        raise BackupError(f"{store}: could not {action} the service: {(done.stderr or done.stdout).strip()}")
