"""The migration safety check over the repository's Alembic histories: can the previous release run on the
new schema? Each history is read statically (parse, rules) and then upgraded on a real SQLite database
(database), which finds what the static reading cannot see; a finding of both is reported once.

Without a ref, every migration is held to the schema its ancestors built (each one could be a release of its
own): that is what CI runs, and it needs no git history. With ``since`` (a git ref of the release that is
running), the migrations added since then are held together to the schema of the migrations it had, and a
contract step must name an expand step that release already had. Histories are every
``<package>/migrations/versions`` beside an ``env.py``.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path

from service_kit.migration_safety.database import upgraded_schemas
from service_kit.migration_safety.parse import Migration, parse_migration
from service_kit.migration_safety.rules import Loss, Op, Schema, breakages, excused, losses, replay

MAX_COMBINATIONS = 4096  # paths through the new migrations together (each if-branch doubles them): about a second


class CheckError(Exception):
    """The check could not run (bad history, bad ref); ``str()`` is one line naming the file or ref."""


@dataclass(frozen=True)
class Finding:
    message: str  # one line, starting with the file (and line, when the static reading found it)
    allowed: bool = False  # the planned removal of a contract step whose expand step has shipped
    file: str = ""
    table: str | None = None
    column: str | None = None


@dataclass(frozen=True)
class Report:
    histories: tuple[str, ...]
    migrations: int
    findings: tuple[Finding, ...]

    @property
    def problems(self) -> list[str]:
        return [finding.message for finding in self.findings if not finding.allowed]


def check_repository(root: Path, since: str | None = None) -> Report:
    """Check every history under ``root``; ``since`` a git ref of the previous release (see the module doc)."""
    histories = find_histories(root)
    if not histories:
        raise CheckError(f"{root}: no Alembic history (<package>/migrations/versions beside an env.py)")
    findings: list[Finding] = []
    count = 0
    for directory in histories.values():
        migrations = load_history(root, directory)
        count += len(migrations)
        released = released_revisions(root, directory, since) if since is not None else None
        static = check_history(migrations, released)
        ordered = _ordered(migrations)
        upgraded = upgraded_schemas(directory.parent, [m.revision for m in ordered])
        findings.extend(static)
        findings.extend(database_findings(ordered, upgraded.schemas, released, static))
        if upgraded.failure:  # the migration after the last schema
            findings.append(Finding(f"{ordered[len(upgraded.schemas) - 1].file}: {upgraded.failure}"))
    return Report(tuple(histories), count, tuple(findings))


def find_histories(root: Path) -> dict[str, Path]:
    """{package: its versions directory} for each Alembic environment of the stack's own services."""
    return {
        versions.parent.parent.name: versions
        for versions in sorted(root.glob("*/migrations/versions"))
        if (versions.parent / "env.py").is_file()
    }


def load_history(root: Path, directory: Path) -> list[Migration]:
    return [
        parse_migration(str(path.relative_to(root)), path.read_text())
        for path in sorted(directory.glob("*.py"))
        if path.name != "__init__.py"
    ]


def released_revisions(root: Path, directory: Path, ref: str) -> set[str]:
    """The revisions whose files the history had at ``ref`` (read from git, whatever they are named now)."""
    relative = str(directory.relative_to(root))
    listing = _git(root, "ls-tree", "-r", "--name-only", ref, "--", relative)
    revisions = set()
    for name in listing.splitlines():
        if name.endswith(".py") and not name.endswith("__init__.py"):
            revisions.add(parse_migration(f"{ref}:{name}", _git(root, "show", f"{ref}:{name}")).revision)
    return revisions


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["failed"])[0]
        raise CheckError(f"git {' '.join(args[:2])} in {root}: {first}")
    return result.stdout


def check_history(migrations: Sequence[Migration], released: set[str] | None = None) -> list[Finding]:
    """Findings of one history; ``released`` the revisions of the previous release (None: each migration)."""
    ordered = _ordered(migrations)
    ancestors = _ancestors(ordered)
    contract_ok = _contracts_in_force(ordered, released)
    findings = [Finding(problem) for m in ordered for problem in _contract_problems(m, ancestors, released)]
    by_file = {m.file: m for m in ordered}

    def judged(ops: Sequence[Op], old: Schema) -> Iterable[Finding]:
        for breakage in breakages(old, ops):
            migration = by_file[breakage.op.file]
            allowed = excused(breakage, contract_ok[migration.revision])
            note = f"(contract step of {', '.join(migration.contract)}, allowed) " if allowed else ""
            message = f"{breakage.op.where}: {note}{breakage.op.call} {breakage.detail}"
            yield Finding(message, allowed, migration.file, breakage.table, breakage.column)

    if released is None:
        for migration in ordered:
            old = _schema_of(m for m in ordered if m.revision in ancestors[migration.revision])
            for path in migration.paths:
                findings.extend(judged(path, old))
    else:
        new = [m for m in ordered if m.revision not in released]
        old = _schema_of(m for m in ordered if m.revision in released)
        if math.prod(len(m.paths) for m in new) > MAX_COMBINATIONS:
            raise CheckError(
                f"{new[0].file}: more than {MAX_COMBINATIONS} dialect paths since the release: check a later ref"
            )
        for combination in product(*(m.paths for m in new)) if new else ():
            findings.extend(judged([op for path in combination for op in path], old))
    return list(dict.fromkeys(findings))  # each dialect's path may find the same thing


def database_findings(
    ordered: Sequence[Migration], schemas: Sequence[Schema], released: set[str] | None, static: Sequence[Finding]
) -> list[Finding]:
    """What the real upgrade lost that the static reading did not find; ``schemas[i + 1]`` is the schema after
    ``ordered[i]`` (database.upgraded_schemas). Without ``released``, each migration against the one before."""
    contract_ok = _contracts_in_force(ordered, released)
    seen = {(f.file, f.table, f.column) for f in static}  # column None: the whole table; table None: anything
    upgraded = len(schemas) - 1  # migrations that ran (all, unless one failed)
    if released is None:
        steps = [(ordered[i], losses(schemas[i], schemas[i + 1])) for i in range(upgraded)]
    else:
        start = max((i + 1 for i, m in enumerate(ordered) if m.revision in released), default=0)
        if start > upgraded:
            return []
        new_losses = {i: losses(schemas[start], schemas[i + 1]) for i in range(start, upgraded)}
        final = new_losses.get(upgraded - 1, [])
        first_step = {loss: next(i for i in new_losses if _same(loss, new_losses[i])) for loss in final}
        steps = [(ordered[i], [loss for loss in final if first_step[loss] == i]) for i in new_losses]
    findings = []
    for migration, found in steps:
        for loss in found:
            found_statically = {(migration.file, loss.table, loss.column), (migration.file, loss.table, None)}
            if found_statically & seen or (migration.file, None, None) in seen:
                continue
            allowed = excused(loss, contract_ok[migration.revision])
            note = f"(contract step of {', '.join(migration.contract)}, allowed) " if allowed else ""
            message = f"{migration.file}: {note}upgrade() on SQLite {loss.detail} (DDL its op.* calls do not show)"
            findings.append(Finding(message, allowed, migration.file, loss.table, loss.column))
    return findings


def _same(loss: Loss, found: Sequence[Loss]) -> bool:
    return any((loss.kind, loss.table, loss.column) == (f.kind, f.table, f.column) for f in found)


def _contracts_in_force(ordered: Sequence[Migration], released: set[str] | None) -> dict[str, bool]:
    """{revision: whether its contract marker is there and valid}: a valid one excuses the planned removals."""
    ancestors = _ancestors(ordered)
    return {m.revision: bool(m.contract) and not _contract_problems(m, ancestors, released) for m in ordered}


def _schema_of(migrations: Iterable[Migration]) -> Schema:
    """The schema the migrations build, in order, each by its first path: a migration's dialect branches build
    one schema (tests/service_kit/test_migration_safety.py holds the reading to real SQLite and PostgreSQL)."""
    return replay({}, [op for migration in migrations for op in migration.paths[0]])


def _ordered(migrations: Sequence[Migration]) -> list[Migration]:
    """Parents before children (by file name among siblings); errors name the file."""
    by_revision: dict[str, Migration] = {}
    for migration in migrations:
        if migration.revision in by_revision:
            other = by_revision[migration.revision].file
            raise CheckError(f"{migration.file}: revision {migration.revision} is {other}'s too")
        by_revision[migration.revision] = migration
    for migration in migrations:
        for parent in migration.down_revisions:
            if parent not in by_revision:
                raise CheckError(f"{migration.file}: down_revision {parent} names no migration of this history")
    ordered: list[Migration] = []
    placed: set[str] = set()
    waiting = sorted(migrations, key=lambda m: m.file)
    while waiting:
        ready = [m for m in waiting if set(m.down_revisions) <= placed]
        if not ready:
            raise CheckError(f"{waiting[0].file}: its down_revision chain is a cycle")
        ordered.extend(ready)
        placed.update(m.revision for m in ready)
        waiting = [m for m in waiting if m.revision not in placed]
    return ordered


def _ancestors(ordered: Sequence[Migration]) -> dict[str, set[str]]:
    ancestors: dict[str, set[str]] = {}
    for migration in ordered:
        ancestors[migration.revision] = set().union(
            *({parent} | ancestors[parent] for parent in migration.down_revisions)
        )
    return ancestors


def _contract_problems(migration: Migration, ancestors: dict[str, set[str]], released: set[str] | None) -> list[str]:
    """What is wrong with a migration's contract marker (empty when it has none, or a good one)."""
    problems = []
    for expand in migration.contract:
        if expand not in ancestors[migration.revision]:
            problems.append(
                f"{migration.file}: contract names {expand}, which is not an earlier migration of its history"
            )
        elif released is not None and migration.revision not in released and expand not in released:
            problems.append(
                f"{migration.file}: contract step of {expand}, which the previous release does not have: "
                f"ship {expand} in a release of its own first"
            )
    return problems
