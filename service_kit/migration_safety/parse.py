"""Read an Alembic migration's source (never run it): its revision, its contract marker, and its upgrade() as
lists of ``rules.Op``.

Read statically, so a check needs no database and runs the same in CI and before a release. What it reads:
``op.<name>(...)`` and ``<batch>.<name>(...)`` inside ``with op.batch_alter_table(...) as batch``, the DDL in
``op.execute("...")`` / ``op.execute(sa.text("..."))`` string literals (DROP/RENAME/ADD/ALTER COLUMN, DROP and
RENAME TABLE), ``for`` loops over literal tuples, names bound to string constants at module level, and
module-level functions upgrade() calls. Each branch of an ``if`` is a separate path (a migration runs one per
dialect), so ``paths`` is a list of operation lists. Not seen: SQL built at run time, SQL run on
``op.get_bind()`` instead of ``op.execute``, and DDL run by helpers imported from elsewhere (the desk's
search index).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import partial
from itertools import product

from service_kit.migration_safety.rules import Column, ColumnType, Op

# sqlalchemy's and SQL's spellings of one type family, as rules.WIDER_TYPES names them.
TYPE_NAMES = {
    "VARCHAR": "String", "NVARCHAR": "String", "Unicode": "String", "CHAR": "String", "CHARACTER VARYING": "String",
    "TEXT": "Text", "UnicodeText": "Text", "CLOB": "Text",
    "INTEGER": "Integer", "INT": "Integer", "SMALLINT": "SmallInteger", "BIGINT": "BigInteger",
    "BOOLEAN": "Boolean", "BOOL": "Boolean",
    "FLOAT": "Float", "REAL": "Float", "DOUBLE": "Double", "DOUBLE_PRECISION": "Double",
    "DOUBLE PRECISION": "Double", "NUMERIC": "Numeric", "DECIMAL": "Numeric",
    "DATETIME": "DateTime", "TIMESTAMP": "DateTime", "DATE": "Date", "TIME": "Time",
    "BLOB": "LargeBinary", "BYTEA": "LargeBinary",
}  # fmt: skip
MAX_PATHS = 256  # a migration with more if-branches than this is not one a person can review either


class MigrationSyntaxError(Exception):
    """A migration file the check cannot read; ``str()`` is one line naming the file and what is wrong."""

    def __init__(self, file: str, problem: str) -> None:
        super().__init__(f"{file}: {problem}")


@dataclass(frozen=True)
class Migration:
    file: str
    revision: str
    down_revisions: tuple[str, ...]
    contract: tuple[str, ...]  # the expand revisions this migration is the contract step of
    paths: tuple[tuple[Op, ...], ...]


def parse_migration(file: str, source: str) -> Migration:
    """The migration in ``source`` (file is only for messages)."""
    try:
        module = ast.parse(source, filename=file)
    except SyntaxError as error:
        raise MigrationSyntaxError(file, f"not Python: {error.msg} (line {error.lineno})") from error
    constants = _module_constants(module)
    revision = constants.get("revision")
    if not isinstance(revision, str):
        raise MigrationSyntaxError(file, 'no module-level `revision = "..."`')
    functions = {node.name: node for node in module.body if isinstance(node, ast.FunctionDef)}
    if "upgrade" not in functions:
        raise MigrationSyntaxError(file, "no upgrade() function")
    reader = _UpgradeReader(file, {k: v for k, v in constants.items() if isinstance(v, str)}, functions)
    paths = reader.paths(functions["upgrade"].body)
    return Migration(
        file=file,
        revision=revision,
        down_revisions=_revisions(file, "down_revision", constants.get("down_revision")),
        contract=_revisions(file, "contract", constants.get("contract", ())),
        paths=tuple(dict.fromkeys(tuple(path) for path in paths)),  # branches that do the same are one path
    )


def _module_constants(module: ast.Module) -> dict[str, object]:
    """Module-level ``NAME = <literal>`` assignments (revision, down_revision, contract, table names)."""
    constants: dict[str, object] = {}
    for node in module.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, TypeError):
                continue
            for target in targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = value
    return constants


def _revisions(file: str, name: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, tuple | list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise MigrationSyntaxError(file, f"{name} must be a revision name or a tuple of them, got {value!r}")


@dataclass
class _UpgradeReader:
    file: str
    names: dict[str, str]  # names bound to strings: module constants, loop variables
    functions: dict[str, ast.FunctionDef]
    batches: dict[str, str | None] = field(default_factory=dict)  # `as` name -> its table
    calling: set[str] = field(default_factory=set)  # module functions being read (no recursion)

    def paths(self, body: list[ast.stmt]) -> list[list[Op]]:
        paths: list[list[Op]] = [[]]
        for statement in body:
            branches = self._statement(statement)
            paths = [[*path, *branch] for path, branch in product(paths, branches)]
            if len(paths) > MAX_PATHS:
                raise MigrationSyntaxError(self.file, f"more than {MAX_PATHS} paths through upgrade()")
        return paths

    def _statement(self, statement: ast.stmt) -> list[list[Op]]:
        if isinstance(statement, ast.If):
            return self.paths(statement.body) + self.paths(statement.orelse)
        if isinstance(statement, ast.With):
            for item in statement.items:
                call = item.context_expr
                if isinstance(item.optional_vars, ast.Name) and _is_op_call(call, "batch_alter_table"):
                    assert isinstance(call, ast.Call)
                    self.batches[item.optional_vars.id] = self._string(_argument(call, 0, "table_name"))
            return self.paths(statement.body)
        if isinstance(statement, ast.For) and isinstance(statement.target, ast.Name):
            return self._loop(statement.target.id, statement)
        if isinstance(statement, ast.Try):
            return self.paths(statement.body)
        if isinstance(statement, ast.Expr | ast.Assign) and isinstance(statement.value, ast.Call):
            return self._call(statement.value)
        return [[]]

    def _loop(self, variable: str, statement: ast.For) -> list[list[Op]]:
        """A loop over a literal tuple is read once per value; any other loop once, its variable unknown."""
        try:
            values = ast.literal_eval(statement.iter)
        except (ValueError, TypeError):
            values = [None]
        paths: list[list[Op]] = [[]]
        for value in values if isinstance(values, list | tuple) else [None]:
            names = {name: text for name, text in self.names.items() if name != variable}
            if isinstance(value, str):
                names[variable] = value
            reader = _UpgradeReader(self.file, names, self.functions, dict(self.batches), self.calling)
            paths = [[*path, *branch] for path, branch in product(paths, reader.paths(statement.body))]
        return paths

    def _call(self, call: ast.Call) -> list[list[Op]]:
        function = call.func
        if isinstance(function, ast.Name) and function.id in self.functions and function.id not in self.calling:
            self.calling.add(function.id)
            try:
                return self.paths(self.functions[function.id].body)
            finally:
                self.calling.discard(function.id)
        if not isinstance(function, ast.Attribute) or not isinstance(function.value, ast.Name):
            return [[]]
        receiver, name = function.value.id, function.attr
        if receiver == "op":
            ops = self._op(call, name, f"op.{name}", table_given=True, table=None)
        elif receiver in self.batches:
            ops = self._op(call, name, f"{receiver}.{name}", table_given=False, table=self.batches[receiver])
        else:
            return [[]]
        return [ops]

    def _op(self, call: ast.Call, name: str, spelled: str, table_given: bool, table: str | None) -> list[Op]:
        """The operations of one call (several for an op.execute of many statements; none for the rest)."""
        shift = 1 if table_given else 0
        if table_given:
            table = self._string(_argument(call, 0, "table_name"))
        make = partial(Op, file=self.file, line=call.lineno, call=spelled, table=table)
        if name == "execute":
            sql = self._sql(_argument(call, 0, "sqltext"))
            return sql_operations(sql, self.file, call.lineno) if sql else []
        if name == "create_table":
            columns = tuple(named for argument in call.args[1:] if (named := self._column(argument)) is not None)
            return [make("create_table", columns=columns)]
        if name == "drop_table":
            return [make("drop_table")]
        if name == "rename_table":
            new_name = self._string(_argument(call, 1, "new_table_name"))
            return [make("rename_table", new_name=new_name)]
        if name == "add_column":
            named = self._column(_argument(call, shift, "column"))
            added, definition = named if named else (None, None)
            return [make("add_column", column=added, column_def=definition)]
        if name == "drop_column":
            column = self._string(_argument(call, shift, "column_name"))
            return [make("drop_column", column=column)]
        if name == "alter_column":
            column = self._string(_argument(call, shift, "column_name"))
            keywords = {keyword.arg: keyword.value for keyword in call.keywords if keyword.arg}
            changes: list[tuple[str, object]] = []
            if "nullable" in keywords:
                changes.append(("nullable", _truth(keywords["nullable"])))
            if "type_" in keywords:
                changes.append(("type", _column_type(keywords["type_"])))
            if "server_default" in keywords:
                changes.append(("server_default", not _is_none(keywords["server_default"])))
            new_name = self._string(keywords["new_column_name"]) if "new_column_name" in keywords else None
            rename_unreadable = "new_column_name" in keywords and new_name is None
            return [
                make(
                    "alter_column", column=column,
                    new_name="<not a literal>" if rename_unreadable else new_name, changes=tuple(changes),
                )
            ]  # fmt: skip
        return []

    def _string(self, node: ast.expr | None) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        return None

    def _sql(self, node: ast.expr | None) -> str | None:
        """The text of ``"..."`` or ``sa.text("...")``; None for SQL built at run time or SQLAlchemy constructs."""
        if isinstance(node, ast.Call) and node.args and _callee(node) == "text":
            node = node.args[0]
        return self._string(node)

    def _column(self, node: ast.expr | None) -> tuple[str, Column] | None:
        """``sa.Column("name", type, ..., nullable=..., server_default=...)`` as (name, Column)."""
        if not isinstance(node, ast.Call) or _callee(node) != "Column" or not node.args:
            return None
        name = self._string(node.args[0])
        if name is None:
            return None
        keywords = {keyword.arg: keyword.value for keyword in node.keywords if keyword.arg}
        primary_key = "primary_key" in keywords and _truth(keywords["primary_key"])
        type_node = node.args[1] if len(node.args) > 1 else keywords.get("type_")
        nullable = _truth(keywords["nullable"]) if "nullable" in keywords else not primary_key
        default = "server_default" in keywords and not _is_none(keywords["server_default"])
        return name, Column(_column_type(type_node) if type_node is not None else None, nullable, default)


def _is_op_call(node: ast.expr, name: str) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "op"
        and node.func.attr == name
    )


def _argument(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    if len(call.args) > position and not isinstance(call.args[position], ast.Starred):
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return call.func.id if isinstance(call.func, ast.Name) else None


def _truth(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and bool(node.value)


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _column_type(node: ast.expr) -> ColumnType:
    """``sa.String(length=20)``, ``sa.String(20)``, ``sa.Integer`` or ``Integer()``; anything else by its text."""
    call = node if isinstance(node, ast.Call) else None
    target = call.func if call else node
    if isinstance(target, ast.Attribute):
        name = target.attr
    elif isinstance(target, ast.Name):
        name = target.id
    else:
        return ColumnType(ast.unparse(node))
    length_node = None
    if call is not None:
        length_node = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "length"), None)
    length = length_node.value if isinstance(length_node, ast.Constant) and isinstance(length_node.value, int) else None
    return ColumnType(TYPE_NAMES.get(name, name), length)


# The DDL op.execute strings are read for. Identifiers may be quoted ("name"); statements split on ';'.
NAME = r'"?(\w+)"?'
ALTER_TABLE = rf"ALTER\s+TABLE\s+(?:ONLY\s+)?{NAME}\s+"
ALTER_COLUMN = rf"{ALTER_TABLE}ALTER\s+(?:COLUMN\s+)?{NAME}\s+"
SQL_PATTERNS = [
    ("drop_table", re.compile(rf"DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?{NAME}", re.I)),
    ("rename_column", re.compile(rf"{ALTER_TABLE}RENAME\s+(?:COLUMN\s+)?{NAME}\s+TO\s+{NAME}", re.I)),
    ("rename_table", re.compile(rf"{ALTER_TABLE}RENAME\s+TO\s+{NAME}", re.I)),
    ("drop_column", re.compile(rf"{ALTER_TABLE}DROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?{NAME}", re.I)),
    ("add_column", re.compile(rf"{ALTER_TABLE}ADD\s+(?:COLUMN\s+)?{NAME}\s+(.*)", re.I | re.S)),
    ("set_not_null", re.compile(rf"{ALTER_COLUMN}SET\s+NOT\s+NULL", re.I)),
    ("drop_default", re.compile(rf"{ALTER_COLUMN}DROP\s+DEFAULT", re.I)),
    ("set_type", re.compile(rf"{ALTER_COLUMN}(?:SET\s+DATA\s+)?TYPE\s+(.*)", re.I | re.S)),
]
SQL_TYPE = re.compile(r"\s*((?:DOUBLE\s+PRECISION|CHARACTER\s+VARYING|\w+))\s*(?:\(\s*(\d+)[^)]*\))?", re.I)


def sql_operations(sql: str, file: str, line: int) -> list[Op]:
    """The schema operations in a string of SQL statements, in order; statements of other kinds are left out."""
    found = []
    for statement in filter(None, (part.strip() for part in sql.split(";"))):
        for kind, pattern in SQL_PATTERNS:
            match = pattern.match(statement)
            if match:
                found.append(_sql_op(kind, match, file, line))
                break
    return found


def _sql_op(kind: str, match: re.Match[str], file: str, line: int) -> Op:
    table, *rest = match.groups()
    call = f"op.execute({' '.join(match.group(0).split()[:4])} …)"
    make = partial(Op, file=file, line=line, call=call, table=table)
    if kind == "drop_table":
        return make("drop_table")
    if kind == "rename_table":
        return make("rename_table", new_name=rest[0])
    if kind == "rename_column":
        return make("alter_column", column=rest[0], new_name=rest[1])
    if kind == "drop_column":
        return make("drop_column", column=rest[0])
    if kind == "add_column":
        definition = rest[1]
        column = Column(
            sql_type(definition),
            nullable=not re.search(r"\bNOT\s+NULL\b|\bPRIMARY\s+KEY\b", definition, re.I),
            server_default=bool(re.search(r"\bDEFAULT\b", definition, re.I)),
        )
        return make("add_column", column=rest[0], column_def=column)
    changes = {"set_not_null": ("nullable", False), "drop_default": ("server_default", False)}.get(kind)
    change = changes if changes else ("type", sql_type(rest[1]))
    return make("alter_column", column=rest[0], changes=(change,))


def sql_type(definition: str) -> ColumnType | None:
    """The type a column definition starts with: ``VARCHAR(20) NOT NULL`` is String(20)."""
    match = SQL_TYPE.match(definition)
    if not match:
        return None
    name = " ".join(match.group(1).upper().split())
    return ColumnType(TYPE_NAMES.get(name, name), int(match.group(2)) if match.group(2) else None)
