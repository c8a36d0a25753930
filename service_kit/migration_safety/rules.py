"""Which schema changes break the previous release: a pure function over parsed migration operations.

During a rolling release the old code runs against the new schema: it still selects, inserts and updates
every table and column it knew. So a change breaks it when, after the new migrations, something the old
schema had is gone (dropped or renamed table or column), narrower (a type whose values the old code writes
may not fit), or stricter (NOT NULL, or a NOT NULL column that lost its server default, where the old code
leaves the value out). A new NOT NULL column without a server default on an existing table breaks the old
code's inserts too. Indexes never break it (a dropped index only slows a query).

The comparison is of the net effect: a column dropped and re-created under the same name (SQLite's way to
relax a NOT NULL, tickets_0004) breaks nothing if the new one is as wide and as lax as the old. No I/O: the
operations come from ``parse``, the previous schema from replaying the earlier migrations with ``replay``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# A value of the key type always fits in each of these (Python's sqlalchemy type names, see parse.TYPE_NAMES).
WIDER_TYPES = {
    "SmallInteger": {"Integer", "BigInteger", "Numeric", "Float", "Double"},
    "Integer": {"BigInteger", "Numeric", "Double"},
    "BigInteger": {"Numeric"},
    "Float": {"Double"},
    "String": {"Text"},
    "Boolean": {"SmallInteger", "Integer", "BigInteger"},
}


@dataclass(frozen=True)
class ColumnType:
    """A column's type family and length (``String(20)`` is ``ColumnType("String", 20)``)."""

    name: str
    length: int | None = None

    def __str__(self) -> str:
        return self.name if self.length is None else f"{self.name}({self.length})"


def fits(old: ColumnType | None, new: ColumnType | None) -> bool:
    """Whether every value of the old type fits the new one; an unreadable type never counts as fitting."""
    if old is None or new is None:
        return old == new
    if old.name == new.name:
        return new.length is None or (old.length is not None and new.length >= old.length)
    return new.name in WIDER_TYPES.get(old.name, set())


@dataclass(frozen=True)
class Column:
    type: ColumnType | None  # None: the migration builds it in a way the parser cannot read
    nullable: bool = True
    server_default: bool = False


Schema = dict[str, dict[str, Column]]  # table -> column -> definition


@dataclass(frozen=True)
class Op:
    """One schema operation of a migration's upgrade(), with where it was written.

    ``kind``: create_table, drop_table, rename_table, add_column, drop_column or alter_column (a column
    rename is an alter_column with ``new_name``). A name the parser could not read as a literal is None.
    ``changes`` of an alter_column are only the fields of ``Column`` the call sets; the rest stay as they were.
    """

    kind: str
    file: str
    line: int
    call: str  # as written, for the message: "op.drop_column", "batch.alter_column", "op.execute(DROP TABLE)"
    table: str | None
    column: str | None = None
    new_name: str | None = None  # rename_table, alter_column(new_column_name=...), RENAME COLUMN
    column_def: Column | None = None  # add_column
    columns: tuple[tuple[str, Column], ...] = ()  # create_table
    changes: tuple[tuple[str, object], ...] = ()  # alter_column: ("nullable", False), ("type", ColumnType)...

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


DESTRUCTIVE_KINDS = {"drop_table", "rename_table", "drop_column", "alter_column"}

# Breakages a contract step may make: what the expand step's release already stopped using or now fills.
# A new NOT NULL column without a server default is never one: the expand release's inserts leave it out.
CONTRACT_KINDS = {"dropped_table", "renamed_table", "dropped_column", "renamed_column", "narrowed", "stricter"}


@dataclass(frozen=True)
class Breakage:
    """Something the previous release's code uses that the new schema no longer gives it."""

    kind: str  # dropped_table, renamed_table, dropped_column, renamed_column, narrowed, stricter, new_required
    op: Op
    table: str | None
    column: str | None
    detail: str


def replay(schema: Schema, ops: Iterable[Op]) -> Schema:
    """The schema after the operations (a new dict; names that are not literals change nothing)."""
    state = {table: dict(columns) for table, columns in schema.items()}
    for op in ops:
        _apply(state, op)
    return state


def _apply(state: Schema, op: Op) -> None:
    table = state.get(op.table or "")
    if op.kind == "create_table" and op.table:
        state[op.table] = dict(op.columns)
    elif op.kind == "drop_table":
        state.pop(op.table or "", None)
    elif op.kind == "rename_table":
        renamed = state.pop(op.table or "", None)
        if renamed is not None and op.new_name:
            state[op.new_name] = renamed
    elif table is None or not op.column:
        return
    elif op.kind == "add_column" and op.column_def:
        table[op.column] = op.column_def
    elif op.kind == "drop_column":
        table.pop(op.column, None)
    elif op.kind == "alter_column" and op.column in table:
        changed = dataclasses.replace(table[op.column], **dict(op.changes))  # type: ignore[arg-type]
        if op.new_name:
            del table[op.column]
        table[op.new_name or op.column] = changed


def breakages(old: Schema, ops: Sequence[Op]) -> list[Breakage]:
    """What of ``old`` (the schema the previous release's code knows) ``ops`` break, each with its op."""
    found = [_unreadable(op) for op in ops]
    new = replay(old, ops)
    for table, old_columns in old.items():
        if table not in new:
            found.append(_table_gone(table, ops))
            continue
        for name, before in old_columns.items():
            after = new[table].get(name)
            cause = _last_touch(ops, table, name)
            if after is None:
                found.append(_column_gone(table, name, ops))
            elif cause is not None:
                found.extend(_column_changed(table, name, before, after, cause))
    for op in ops:
        if op.kind == "add_column" and op.table in old and op.column not in old[op.table or ""]:
            column = op.column_def
            if column is not None and not column.nullable and not column.server_default:
                found.append(
                    Breakage(
                        "new_required", op, op.table, op.column,
                        f"adds {op.table}.{op.column} NOT NULL without a server_default: the previous release's "
                        "inserts leave it out",
                    )
                )  # fmt: skip
    return [b for b in found if b is not None]


def _unreadable(op: Op) -> Breakage | None:
    """A destructive operation on a name the parser could not read could be on anything: flagged."""
    on_column = op.kind in {"drop_column", "alter_column"}
    if op.kind in DESTRUCTIVE_KINDS and (op.table is None or (on_column and op.column is None)):
        return Breakage("unreadable", op, op.table, op.column, "on a table or column name that is not a literal")
    return None


def _touches(op: Op, table: str, column: str) -> bool:
    return op.table == table and (op.column == column or op.new_name == column or op.kind == "create_table")


def _last_touch(ops: Sequence[Op], table: str, column: str) -> Op | None:
    return next((op for op in reversed(ops) if _touches(op, table, column)), None)


def _table_gone(table: str, ops: Sequence[Op]) -> Breakage:
    op = next(o for o in reversed(ops) if o.table == table and o.kind in {"drop_table", "rename_table"})
    if op.kind == "rename_table":
        detail = f"renames table {table} to {op.new_name}: the previous release still uses {table}"
        return Breakage("renamed_table", op, table, None, detail)
    return Breakage("dropped_table", op, table, None, f"drops table {table}, which the previous release still uses")


def _column_gone(table: str, column: str, ops: Sequence[Op]) -> Breakage:
    op = next(o for o in reversed(ops) if o.table == table and (o.column == column or o.kind == "create_table"))
    if op.kind == "create_table":
        detail = f"re-creates table {table} without {column}, which the previous release uses"
        return Breakage("dropped_column", op, table, column, detail)
    if op.new_name:
        detail = f"renames {table}.{column} to {op.new_name}: the previous release still uses {table}.{column}"
        return Breakage("renamed_column", op, table, column, detail)
    return Breakage("dropped_column", op, table, column, f"drops {table}.{column}, which the previous release uses")


def _column_changed(table: str, name: str, before: Column, after: Column, op: Op) -> list[Breakage]:
    return [Breakage(kind, op, table, name, detail) for kind, detail in column_problems(table, name, before, after)]


def column_problems(table: str, name: str, before: Column, after: Column) -> list[tuple[str, str]]:
    """(kind, detail) of each way ``after`` is narrower or stricter than ``before`` for the old code."""
    found = []
    if not fits(before.type, after.type):
        found.append(
            (
                "narrowed",
                f"changes {table}.{name} from {before.type or 'an unreadable type'} to "
                f"{after.type or 'an unreadable type'}: values the previous release writes may not fit",
            )
        )
    if not after.nullable and not after.server_default and (before.nullable or before.server_default):
        was = "nullable" if before.nullable else "given a server default"
        found.append(
            (
                "stricter",
                f"makes {table}.{name} NOT NULL without a server_default (it was {was}): the previous release's "
                "inserts may leave it out",
            )
        )
    return found


@dataclass(frozen=True)
class Loss:
    """What the previous release used that a later schema lacks, found by comparing the two (no operations)."""

    kind: str  # as Breakage.kind; a rename is a dropped table or column here
    table: str
    column: str | None
    detail: str


def losses(old: Schema, new: Schema) -> list[Loss]:
    """What of ``old`` (what the previous release's code knows) ``new`` no longer gives it."""
    found = []
    for table, old_columns in old.items():
        if table not in new:
            found.append(Loss("dropped_table", table, None, f"drops table {table}, which the previous release uses"))
            continue
        for name, before in old_columns.items():
            after = new[table].get(name)
            if after is None:
                found.append(
                    Loss("dropped_column", table, name, f"drops {table}.{name}, which the previous release uses")
                )
            else:
                found.extend(Loss(kind, table, name, d) for kind, d in column_problems(table, name, before, after))
        for name, added in new[table].items():
            if name not in old_columns and not added.nullable and not added.server_default:
                detail = f"adds {table}.{name} NOT NULL without a server_default: the previous release's inserts"
                detail += " leave it out"
                found.append(Loss("new_required", table, name, detail))
    return found


def excused(breakage: Breakage | Loss, contract_ok: bool) -> bool:
    """Whether a breakage is the planned removal of a contract step whose expand step has shipped."""
    return contract_ok and breakage.kind in CONTRACT_KINDS
