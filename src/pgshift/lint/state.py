"""What earlier statements of a run established, which the rules read: the tables, indexes and
types it created, the timeouts in force, whether a transaction block is open, and the column
types and NOT NULL proofs its ALTER TABLEs left behind."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pglast import ast, enums

from pgshift.lint.sqlfacts import (
    ColumnType,
    TableSet,
    binary_coercible,
    column_type,
    is_zero_timeout,
    not_null_columns,
    range_var_name,
    strings,
)

_AT = enums.AlterTableType
_CON = enums.ConstrType
_OBJ = enums.ObjectType
_TX = enums.TransactionStmtKind
_TIMEOUTS = ("lock_timeout", "statement_timeout")


@dataclass(frozen=True)
class AlterCommand:
    """One command of an ALTER TABLE, with the table it changes: rules see each in turn, so a
    CHECK added by one command proves NOT NULL for a later one."""

    statement: ast.AlterTableStmt
    cmd: ast.AlterTableCmd
    table: str  # as written, with its schema
    key: str  # the table's name, lowercased
    is_new: bool  # created earlier in the run: nobody uses it yet


Unit = ast.Node | AlterCommand


class State:
    """The facts one run of the linter has gathered so far, statement after statement."""

    def __init__(
        self,
        *,
        new_tables: TableSet,
        new_indexes: set[str],
        new_types: set[str],
        new_views: TableSet,
        in_cutover: bool,
        require_lock_timeout: bool,
    ) -> None:
        self.new_tables = new_tables
        self.new_indexes = new_indexes
        self.new_types = new_types
        self.new_views = new_views
        self.views_in_text = TableSet()  # views the whole text creates, before or after
        self.in_cutover = in_cutover
        self.require_lock_timeout = require_lock_timeout
        self.in_transaction = False  # between BEGIN and COMMIT / ROLLBACK
        self.in_do = False  # checking a statement of a DO block
        # per setting: the session's value, and SET LOCAL's until the transaction ends
        self.session: dict[str, bool] = dict.fromkeys(_TIMEOUTS, False)
        self.local: dict[str, bool | None] = dict.fromkeys(_TIMEOUTS)
        # enum labels ADD VALUE added in this text (its transaction): label -> type
        self.added_enum_values: dict[str, str] = {}
        self.added_types: dict[tuple[str, str], ColumnType] = {}
        self.pending_not_null: dict[tuple[str, str], set[str]] = {}  # (table, constraint)
        self.proven_not_null: set[tuple[str, str]] = set()  # (table, column)
        self.columns_memo: tuple[Unit, Any] | None = None  # statements.declared_columns

    # what the rules ask

    def timeout_set(self, name: str) -> bool:
        local = self.local[name]
        return local if local is not None else self.session[name]

    @property
    def in_transaction_block(self) -> bool:
        """BEGIN ... COMMIT or a DO block: where CONCURRENTLY is refused."""
        return self.in_transaction or self.in_do

    def all_new(self, relations: Iterable[ast.RangeVar | None]) -> bool:
        listed = list(relations)
        return bool(listed) and all(self.new_tables.contains_range_var(r) for r in listed)

    # what statements change, before the rules see them

    def before(self, node: ast.Node) -> None:
        if isinstance(node, ast.VariableSetStmt):
            self._set(node)
        elif isinstance(node, ast.TransactionStmt):
            if node.kind in (_TX.TRANS_STMT_BEGIN, _TX.TRANS_STMT_START):
                self.in_transaction = True
            elif node.kind not in (
                _TX.TRANS_STMT_SAVEPOINT,
                _TX.TRANS_STMT_RELEASE,
                _TX.TRANS_STMT_ROLLBACK_TO,
            ):
                self.local = dict.fromkeys(_TIMEOUTS)
                self.in_transaction = False
                self.added_enum_values.clear()  # committed (or gone): usable from here
        elif isinstance(node, ast.CreateStmt):
            self.new_tables.add_range_var(node.relation)
        elif isinstance(node, ast.CreateTableAsStmt):
            if node.into is not None:
                self.new_tables.add_range_var(node.into.rel)
                if node.objtype == _OBJ.OBJECT_MATVIEW:
                    self.new_views.add_range_var(node.into.rel)
        elif isinstance(node, ast.ViewStmt):
            self.new_views.add_range_var(node.view)
        elif isinstance(node, ast.AlterEnumStmt):
            if node.oldVal is None and node.newVal:
                self.added_enum_values[node.newVal] = ".".join(strings(node.typeName or ()))
        elif isinstance(node, ast.CreateEnumStmt):
            names = strings(node.typeName or ())
            if names:
                self.new_types.add(names[-1].lower())

    def _set(self, node: ast.VariableSetStmt) -> None:
        if node.kind == enums.VariableSetKind.VAR_RESET_ALL:
            self.session = dict.fromkeys(_TIMEOUTS, False)
            self.local = dict.fromkeys(_TIMEOUTS)
            return
        name = (node.name or "").lower()
        if name not in _TIMEOUTS:
            return
        active = node.kind == enums.VariableSetKind.VAR_SET_VALUE and not is_zero_timeout(node.args)
        if node.is_local:
            self.local[name] = active
        else:
            self.session[name] = active
            self.local[name] = None

    # what statements change, after the rules saw them

    def after(self, node: ast.Node) -> None:
        if isinstance(node, ast.IndexStmt):
            if self.new_tables.contains_range_var(node.relation) and node.idxname:
                self.new_indexes.add(node.idxname.lower())
        elif isinstance(node, ast.RenameStmt):
            rv = node.relation
            if (
                node.renameType == _OBJ.OBJECT_TABLE
                and self.new_tables.contains_range_var(rv)
                and rv is not None
                and node.newname
            ):
                self.new_tables.add(rv.schemaname, node.newname)
        elif isinstance(node, ast.AlterObjectSchemaStmt):
            rv = node.relation
            if (
                node.objectType == _OBJ.OBJECT_TABLE
                and self.new_tables.contains_range_var(rv)
                and rv is not None
                and rv.relname
            ):
                self.new_tables.add(node.newschema, rv.relname)

    def after_command(self, unit: AlterCommand) -> None:
        cmd, key = unit.cmd, unit.key
        if cmd.subtype == _AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            self.added_types[(key, cmd.def_.colname or "")] = column_type(cmd.def_.typeName)
        elif cmd.subtype == _AT.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
            if self.type_change_in_place(unit):
                self.added_types[(key, cmd.name or "")] = column_type(cmd.def_.typeName)
        elif cmd.subtype == _AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
            self._constraint_added(cmd.def_, key)
        elif cmd.subtype == _AT.AT_ValidateConstraint:
            columns = self.pending_not_null.pop((key, (cmd.name or "").lower()), set())
            self.proven_not_null |= {(key, column) for column in columns}

    def type_change_in_place(self, unit: AlterCommand) -> bool:
        """An ALTER COLUMN ... TYPE PostgreSQL makes without a rewrite: both types known from
        this run and binary coercible."""
        column = unit.cmd.def_
        assert isinstance(column, ast.ColumnDef)
        old = self.added_types.get((unit.key, unit.cmd.name or ""))
        plain = column.raw_default is None and column.collClause is None
        return plain and old is not None and binary_coercible(old, column_type(column.typeName))

    def _constraint_added(self, con: ast.Constraint, key: str) -> None:
        validated = not con.skip_validation
        name = (con.conname or "").lower()
        if con.contype == _CON.CONSTR_CHECK:
            columns = not_null_columns(con.raw_expr)
            if validated:
                self.proven_not_null |= {(key, column) for column in columns}
            elif columns:
                # Unnamed: PostgreSQL names it <table>_<first column>_check.
                name = name or f"{key}_{sorted(columns)[0]}_check"
                self.pending_not_null[(key, name)] = columns
        elif con.contype == _CON.CONSTR_NOTNULL:
            columns = set(strings(con.keys or ()))
            if validated:
                self.proven_not_null |= {(key, column) for column in columns}
            elif name:
                self.pending_not_null[(key, name)] = columns


def created_views(raws: Iterable[ast.RawStmt]) -> TableSet:
    """The views (and materialized views) a text creates, wherever in it."""
    views = TableSet()
    for raw in raws:
        node = raw.stmt
        if isinstance(node, ast.ViewStmt):
            views.add_range_var(node.view)
        elif (
            isinstance(node, ast.CreateTableAsStmt)
            and node.objtype == _OBJ.OBJECT_MATVIEW
            and node.into is not None
        ):
            views.add_range_var(node.into.rel)
    return views


def alter_commands(node: ast.AlterTableStmt, state: State) -> list[AlterCommand]:
    """The commands of an ALTER TABLE on a table (not an index, view or sequence)."""
    if node.objtype != _OBJ.OBJECT_TABLE:
        return []
    rv = node.relation
    table = range_var_name(rv)
    key = (rv.relname or "").lower() if rv is not None else ""
    is_new = state.new_tables.contains_range_var(rv)
    return [
        AlterCommand(node, cmd, table, key, is_new)
        for cmd in node.cmds or ()
        if isinstance(cmd, ast.AlterTableCmd)
    ]
