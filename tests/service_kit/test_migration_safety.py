"""vibelux-migrations check: a migration the previous release cannot run on is flagged, naming the file, the
operation, the table and the column; the contract step of an expand/contract pair passes; the repository's
own migrations pass; and what the check reads statically is what real SQLite and PostgreSQL end up with."""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import inspect

from service_kit.db import make_engine, upgrade
from service_kit.migration_safety import check_repository
from service_kit.migration_safety.check import find_histories, load_history
from service_kit.migration_safety.cli import main
from service_kit.migration_safety.rules import Column, ColumnType, breakages, fits, losses, replay
from tests.servers import PostgresServer

REPO = Path(__file__).resolve().parents[2]
VERSIONS = "desk/migrations/versions"
FIRST = """
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("plan", sa.String(20), nullable=False, server_default="free"),
    )
    op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("body", sa.Text, nullable=False))
"""


def write_migration(root: Path, number: int, upgrade_body: str, header: str = "") -> Path:
    """desk_000<number>, after the one before it; ``header`` goes at module level (a contract marker)."""
    down = f'"desk_{number - 1:04d}"' if number > 1 else "None"
    path = root / VERSIONS / f"desk_{number:04d}_change.py"
    path.write_text(
        f'"""Test migration {number}."""\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f'revision = "desk_{number:04d}"\ndown_revision = {down}\n{header}\n\n'
        f"def upgrade() -> None:\n{textwrap.indent(textwrap.dedent(upgrade_body).strip(), '    ')}\n"
    )
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one service, ``desk``, whose first migration creates accounts and notes."""
    versions = tmp_path / VERSIONS
    versions.mkdir(parents=True)
    (versions.parent / "env.py").write_text((REPO / "tickets_app" / "migrations" / "env.py").read_text())
    write_migration(tmp_path, 1, FIRST)
    return tmp_path


def run_check(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", "--root", str(root), *args])
    out, err = capsys.readouterr()
    return code, out, err


BATCH = 'with op.batch_alter_table("accounts") as batch:\n    batch'  # SQLite alters columns in batch mode only
USES = "which the previous release uses"
DESTRUCTIVE = {
    "drop_column": ('op.drop_column("accounts", "email")', f"op.drop_column drops accounts.email, {USES}"),
    "batch_drop_column": (
        'with op.batch_alter_table("accounts") as batch:\n    batch.drop_column("email")',
        f"batch.drop_column drops accounts.email, {USES}",
    ),
    "raw_sql_drop_column": (
        'op.execute("ALTER TABLE accounts DROP COLUMN email")',
        f"op.execute(ALTER TABLE accounts DROP …) drops accounts.email, {USES}",
    ),
    "rename_column": (
        'op.alter_column("accounts", "email", new_column_name="email_address")',
        "op.alter_column renames accounts.email to email_address: the previous release still uses accounts.email",
    ),
    "shorter_string": (
        f'{BATCH}.alter_column("name", type_=sa.String(50), existing_type=sa.String(200))',
        "batch.alter_column changes accounts.name from String(200) to String(50): values the previous release writes",
    ),
    "text_to_integer": (
        'with op.batch_alter_table("notes") as batch:\n    batch.alter_column("body", type_=sa.Integer())',
        "batch.alter_column changes notes.body from Text to Integer",
    ),
    "not_null_on_a_nullable_column": (
        f'{BATCH}.alter_column("email", nullable=False)',
        "batch.alter_column makes accounts.email NOT NULL without a server_default (it was nullable)",
    ),
    "server_default_of_a_not_null_column_taken": (
        f'{BATCH}.alter_column("plan", server_default=None)',
        "batch.alter_column makes accounts.plan NOT NULL without a server_default (it was given a server default)",
    ),
    "drop_table": ('op.drop_table("notes")', "op.drop_table drops table notes, which the previous release still uses"),
    "rename_table": (
        'op.rename_table("notes", "account_notes")',
        "op.rename_table renames table notes to account_notes: the previous release still uses notes",
    ),
    "new_not_null_column_without_a_default": (
        'op.add_column("accounts", sa.Column("region", sa.String(10), nullable=False))',
        "op.add_column adds accounts.region NOT NULL without a server_default: the previous release's inserts",
    ),
    "column_name_not_a_literal": (
        'gone = ["email"]\nop.drop_column("accounts", gone[0])',
        "op.drop_column on a table or column name that is not a literal",
    ),
}


@pytest.mark.parametrize(("body", "message"), DESTRUCTIVE.values(), ids=DESTRUCTIVE.keys())
def test_a_change_the_previous_release_cannot_run_on_is_flagged_naming_file_line_operation_table_and_column(
    repo: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    path = write_migration(repo, 2, body)
    line = next(
        i for i, text in enumerate(path.read_text().splitlines(), 1) if text.strip().startswith(("op.", "batch."))
    )
    code, out, err = run_check(repo, capsys)
    assert code == 1
    assert f"{VERSIONS}/desk_0002_change.py:{line}: {message}" in err
    assert "1 problem(s) for the previous release" in err and "contract = (" in err
    assert out == ""


SAFE = {
    "add_nullable_column": 'op.add_column("accounts", sa.Column("region", sa.String(10), nullable=True))',
    "add_not_null_column_with_a_server_default": (
        'op.add_column("accounts", sa.Column("region", sa.String(10), nullable=False, server_default="eu"))'
    ),
    "widen_a_string": f'{BATCH}.alter_column("name", type_=sa.String(400))',
    "widen_an_integer": f'{BATCH}.alter_column("id", type_=sa.BigInteger())',
    "relax_not_null": f'{BATCH}.alter_column("name", nullable=True)',
    "indexes": 'op.create_index("ix_accounts_email", "accounts", ["email"])\nop.drop_index("ix_accounts_email")',
    "new_table_dropped_again": 'op.create_table("scratch", sa.Column("id", sa.Integer))\nop.drop_table("scratch")',
    # SQLite cannot relax a NOT NULL in place: a new column takes the values and the old name (tickets_0004)
    "sqlite_rebuild_of_a_column_as_lax": """
        if op.get_bind().dialect.name == "sqlite":
            op.execute("ALTER TABLE accounts ADD COLUMN name_new VARCHAR(200)")
            op.execute("UPDATE accounts SET name_new = name")
            op.execute("ALTER TABLE accounts DROP COLUMN name")
            op.execute("ALTER TABLE accounts RENAME COLUMN name_new TO name")
        else:
            op.alter_column("accounts", "name", existing_type=sa.String(200), nullable=True)
    """,
}


@pytest.mark.parametrize("body", SAFE.values(), ids=SAFE.keys())
def test_a_change_the_previous_release_runs_on_passes(
    repo: Path, capsys: pytest.CaptureFixture[str], body: str
) -> None:
    write_migration(repo, 2, body)
    code, out, err = run_check(repo, capsys)
    assert (code, err) == (0, "")
    assert out == (
        "migrations: 2 in 1 histories, read and upgraded on SQLite, checked against the schema before each: safe\n"
    )


FITS = [
    (ColumnType("String", 20), ColumnType("String", 20), True),
    (ColumnType("String", 20), ColumnType("String", 40), True),
    (ColumnType("String", 20), ColumnType("String"), True),  # no length: unbounded
    (ColumnType("String", 40), ColumnType("String", 20), False),
    (ColumnType("String"), ColumnType("String", 20), False),
    (ColumnType("String", 20), ColumnType("Text"), True),
    (ColumnType("Text"), ColumnType("String", 4000), False),
    (ColumnType("Integer"), ColumnType("BigInteger"), True),
    (ColumnType("BigInteger"), ColumnType("Integer"), False),
    (ColumnType("Boolean"), ColumnType("Integer"), True),
    (ColumnType("DateTime"), ColumnType("String", 40), False),  # a change of family is never assumed safe
    (ColumnType("String", 20), None, False),  # a type the reading cannot tell
]


@pytest.mark.parametrize(("old", "new", "expected"), FITS, ids=[f"{o}->{n}" for o, n, _ in FITS])
def test_a_type_fits_only_when_every_old_value_does(old: ColumnType, new: ColumnType | None, expected: bool) -> None:
    assert fits(old, new) is expected


def test_comparing_two_schemas_finds_what_the_old_code_loses_and_nothing_else() -> None:
    """The rule the SQLite pass applies, pure: schemas in, losses out."""
    text, tight = Column(ColumnType("Text")), Column(ColumnType("Text"), nullable=False)
    old = {"accounts": {"id": tight, "email": text, "name": text}, "notes": {"body": text}}
    new = {"accounts": {"id": tight, "name": tight, "region": tight, "nick": text}, "archive": {"body": text}}
    assert [(loss.kind, loss.table, loss.column) for loss in losses(old, new)] == [
        ("dropped_column", "accounts", "email"),
        ("stricter", "accounts", "name"),
        ("new_required", "accounts", "region"),
        ("dropped_table", "notes", None),
    ]


def write_expand_and_contract(repo: Path, contract_body: str = 'op.drop_column("accounts", "email")') -> None:
    """Expand: a new column the next release writes and reads; contract: the old one goes."""
    write_migration(repo, 2, 'op.add_column("accounts", sa.Column("email_address", sa.String(254), nullable=True))')
    write_migration(repo, 3, contract_body, header='contract = ("desk_0002",)  # email_address replaces email')


def test_the_contract_step_of_an_expand_contract_pair_passes_and_is_named(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_expand_and_contract(repo)
    code, out, err = run_check(repo, capsys)
    assert (code, err) == (0, "")
    assert re.search(
        rf"{VERSIONS}/desk_0003_change.py:\d+: \(contract step of desk_0002, allowed\) op.drop_column drops "
        "accounts.email",
        out,
    )


def test_a_contract_marker_does_not_excuse_a_new_not_null_column_without_a_default(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The expand release's inserts know nothing of the new column."""
    write_expand_and_contract(
        repo,
        'op.drop_column("accounts", "email")\nop.add_column("accounts", sa.Column("region", sa.Text, nullable=False))',
    )
    code, _, err = run_check(repo, capsys)
    assert code == 1
    assert "op.add_column adds accounts.region NOT NULL" in err and "drops accounts.email" not in err


def test_a_contract_marker_naming_no_earlier_migration_is_flagged(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_migration(repo, 2, 'op.drop_column("accounts", "email")', header='contract = ("desk_0009",)')
    code, _, err = run_check(repo, capsys)
    assert code == 1
    assert f"{VERSIONS}/desk_0002_change.py: contract names desk_0009, which is not an earlier migration" in err
    assert "op.drop_column drops accounts.email" in err  # a bad marker excuses nothing


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True
    )


def release(root: Path, tag: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", tag)
    git(root, "tag", tag)


def test_since_a_release_the_contract_step_must_not_ship_with_its_expand_step(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shipped together, the release that still reads accounts.email would run on a schema without it."""
    git(repo, "init", "-q")
    release(repo, "v1")
    write_expand_and_contract(repo)
    code, _, err = run_check(repo, capsys, "--since", "v1")
    assert code == 1
    assert (
        f"{VERSIONS}/desk_0003_change.py: contract step of desk_0002, which the previous release does not have" in err
    )
    assert "op.drop_column drops accounts.email" in err


def test_since_a_release_that_had_the_expand_step_the_contract_step_passes(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    git(repo, "init", "-q")
    write_expand_and_contract(repo)
    contract = repo / VERSIONS / "desk_0003_change.py"
    text = contract.read_text()
    contract.unlink()
    release(repo, "v2")  # desk_0001 and the expand step desk_0002
    contract.write_text(text)
    code, out, err = run_check(repo, capsys, "--since", "v2")
    assert (code, err) == (0, "")
    assert "(contract step of desk_0002, allowed) op.drop_column drops accounts.email" in out
    assert out.endswith("checked against the release at v2: safe\n")


def test_since_a_release_a_column_added_and_dropped_within_the_new_release_passes(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old code never knew it; checked one migration at a time, the drop is flagged."""
    git(repo, "init", "-q")
    release(repo, "v1")
    write_migration(repo, 2, 'op.add_column("accounts", sa.Column("draft", sa.Text, nullable=True))')
    write_migration(repo, 3, 'op.drop_column("accounts", "draft")')
    assert run_check(repo, capsys, "--since", "v1")[0] == 0
    code, _, err = run_check(repo, capsys)
    assert code == 1 and "op.drop_column drops accounts.draft" in err


BAD_INPUT = [
    ("not_python", "def upgrade(:\n", "desk_0002_change.py: not Python: "),
    ("bad_contract", 'revision = "desk_0002"\ndown_revision = "desk_0001"\ncontract = 5\n\ndef upgrade():\n    pass\n',
     "desk_0002_change.py: contract must be a revision name or a tuple of them, got 5"),
    ("unknown_parent", 'revision = "desk_0002"\ndown_revision = "desk_0042"\n\ndef upgrade():\n    pass\n',
     "desk_0002_change.py: down_revision desk_0042 names no migration of this history"),
    ("no_revision", "def upgrade():\n    pass\n", 'desk_0002_change.py: no module-level `revision = "..."`'),
]  # fmt: skip


@pytest.mark.parametrize(("source", "message"), [case[1:] for case in BAD_INPUT], ids=[case[0] for case in BAD_INPUT])
def test_a_migration_it_cannot_read_is_one_line_naming_the_file(
    repo: Path, capsys: pytest.CaptureFixture[str], source: str, message: str
) -> None:
    (repo / VERSIONS / "desk_0002_change.py").write_text(source)
    code, out, err = run_check(repo, capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"vibelux-migrations: {VERSIONS}/{message}") and err.count("\n") == 1


def test_an_unknown_ref_is_one_line(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    git(repo, "init", "-q")
    release(repo, "v1")
    code, _, err = run_check(repo, capsys, "--since", "v9")
    assert code == 2
    assert err.startswith(f"vibelux-migrations: git ls-tree -r in {repo}: ") and err.count("\n") == 1


def test_the_repository_migrations_pass_and_every_service_history_is_checked() -> None:
    report = check_repository(REPO)
    assert report.problems == []
    assert set(report.histories) == {"service_kit", "tickets_app", "flags_service", "reports_service", "backups"}
    assert report.migrations >= 11


def test_tickets_0004_is_read_as_customer_tier_dropped_and_recreated_as_wide_and_nullable() -> None:
    """The one destructive-looking migration today: on SQLite it drops customer_tier and renames a nullable
    copy into its place, which the previous release runs on (it always writes a tier)."""
    history = {m.revision: m for m in load_history(REPO, REPO / "tickets_app" / "migrations" / "versions")}
    before = replay(
        {}, [op for rev in ("tickets_0001", "tickets_0002", "tickets_0003") for op in history[rev].paths[0]]
    )
    sqlite_path, postgres_path = history["tickets_0004"].paths
    assert [op.kind for op in sqlite_path] == ["add_column", "drop_column", "alter_column"]
    assert breakages(before, sqlite_path) == [] and breakages(before, postgres_path) == []
    assert replay(before, sqlite_path)["tickets"]["customer_tier"].nullable is True


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'schema.sqlite3'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.fresh_database("migration_safety")


@pytest.mark.parametrize("history", sorted(find_histories(REPO)))
def test_what_the_check_reads_is_what_a_real_database_gets(database_url: str, history: str) -> None:
    """Every table the static reading builds exists, with exactly its columns, nullability and lengths."""
    versions = find_histories(REPO)[history]
    expected = replay({}, [op for migration in load_history(REPO, versions) for op in migration.paths[0]])
    engine = make_engine(database_url)
    upgrade(engine, None if history == "service_kit" else versions.parent)
    inspector = inspect(engine)
    for table, columns in expected.items():
        real = {column["name"]: column for column in inspector.get_columns(table)}
        assert set(real) == set(columns), table
        for name, column in columns.items():
            assert real[name]["nullable"] == column.nullable, f"{table}.{name}"
            length = getattr(real[name]["type"], "length", None)
            if column.type is not None and column.type.length is not None:
                assert length == column.type.length, f"{table}.{name}"
    engine.dispose()


def test_a_flagged_drop_really_breaks_the_previous_release(
    repo: Path, capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    """Not a style rule: the insert the previous release makes works before the flagged migration, fails after."""
    engine = make_engine(database_url)
    old_insert = sa.text("INSERT INTO accounts (name, email) VALUES ('Ada', 'ada@example.com')")
    upgrade(engine, repo / "desk" / "migrations")
    with engine.begin() as connection:
        connection.execute(old_insert)
    write_migration(repo, 2, 'op.drop_column("accounts", "email")')
    assert run_check(repo, capsys)[0] == 1
    upgrade(engine, repo / "desk" / "migrations")
    with pytest.raises(sa.exc.DBAPIError, match="email"), engine.begin() as connection:
        connection.execute(old_insert)
    engine.dispose()


HIDDEN_DROP = 'op.get_bind().execute(sa.text("ALTER TABLE accounts DROP COLUMN email"))'


def test_the_sqlite_upgrade_finds_a_drop_the_static_reading_cannot_see(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQL run on op.get_bind() is no op.* call; upgraded for real, the column is gone all the same."""
    write_migration(repo, 2, HIDDEN_DROP)
    code, _, err = run_check(repo, capsys)
    assert code == 1
    assert err.startswith(
        f"{VERSIONS}/desk_0002_change.py: upgrade() on SQLite drops accounts.email, which the previous release uses "
        "(DDL its op.* calls do not show)\n"
    )


def test_a_hidden_drop_marked_as_a_contract_step_passes(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_expand_and_contract(repo, HIDDEN_DROP)
    code, out, err = run_check(repo, capsys)
    assert (code, err) == (0, "")
    assert f"{VERSIONS}/desk_0003_change.py: (contract step of desk_0002, allowed) upgrade() on SQLite drops" in out


def test_a_migration_that_fails_on_sqlite_is_a_finding_and_the_static_ones_still_show(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite alters a column's type only in batch mode: the services run on SQLite, so this one could not."""
    write_migration(repo, 2, 'op.alter_column("accounts", "name", type_=sa.String(50))')
    code, _, err = run_check(repo, capsys)
    assert code == 1
    assert "op.alter_column changes accounts.name from String(200) to String(50)" in err
    assert f'{VERSIONS}/desk_0002_change.py: upgrade() fails on SQLite: (sqlite3.OperationalError) near "ALTER"' in err
