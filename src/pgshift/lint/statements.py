"""Facts about one statement that more than one rule needs."""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast, enums

from pgshift.lint.sqlfacts import ColumnType, column_type, option_on, range_var_name
from pgshift.lint.state import AlterCommand, State, Unit

_AT = enums.AlterTableType
_CON = enums.ConstrType


@dataclass(frozen=True)
class Maintenance:
    """A VACUUM FULL, CLUSTER or REINDEX that blocks the table while it runs."""

    label: str
    relations: list[ast.RangeVar | None]  # empty: the SQL does not say which tables
    instead: str

    @property
    def target(self) -> str:
        if not self.relations:
            return "its tables"
        return ", ".join(range_var_name(r) for r in self.relations)


def blocking_maintenance(node: object, state: State) -> Maintenance | None:
    """The maintenance statement's blocking form on a live table, or None."""
    relations: list[ast.RangeVar | None]
    if isinstance(node, ast.VacuumStmt):
        if not option_on(node.options, "full"):
            return None
        relations = [r.relation for r in node.rels or () if isinstance(r, ast.VacuumRelation)]
        found = Maintenance(
            "VACUUM FULL",
            relations,
            "instead use pg_repack or pg_squeeze (online), or plain VACUUM",
        )
    elif isinstance(node, ast.ClusterStmt):
        relations = [node.relation] if node.relation is not None else []
        found = Maintenance("CLUSTER", relations, "instead use pg_repack --order-by (online)")
    elif isinstance(node, ast.ReindexStmt):
        if option_on(node.params, "concurrently"):
            return None
        relations = []
        rv = node.relation
        if node.kind == enums.ReindexObjectType.REINDEX_OBJECT_TABLE:
            relations = [rv]
        elif (
            node.kind == enums.ReindexObjectType.REINDEX_OBJECT_INDEX
            and rv is not None
            and (rv.relname or "").lower() in state.new_indexes
        ):
            return None
        found = Maintenance(
            "REINDEX",
            relations,
            "instead REINDEX (CONCURRENTLY) ... (outside a transaction block)",
        )
    else:
        return None
    if state.all_new(found.relations):
        return None
    return found


def weak_lock(cmd: ast.AlterTableCmd) -> bool:
    """ALTER TABLE commands that take SHARE UPDATE EXCLUSIVE: reads and writes go on."""
    if cmd.subtype == _AT.AT_ValidateConstraint:
        return True
    return (
        cmd.subtype == _AT.AT_DetachPartition
        and isinstance(cmd.def_, ast.PartitionCmd)
        and bool(cmd.def_.concurrent)
    )


@dataclass(frozen=True)
class DeclaredColumn:
    """A column as a statement declares it, for the column-design rules."""

    column: ast.ColumnDef
    table: str
    primary_key: bool
    kind: ColumnType  # its declared type

    @property
    def where(self) -> str:
        return f"column {self.table}.{self.column.colname or ''}"

    @property
    def identity(self) -> bool:
        return any(
            isinstance(con, ast.Constraint) and con.contype == _CON.CONSTR_IDENTITY
            for con in self.column.constraints or ()
        )


def declared_columns(unit: Unit, state: State) -> list[DeclaredColumn]:
    """Columns a CREATE TABLE declares, or a live table gains (ADD COLUMN) or retypes
    (ALTER COLUMN ... TYPE json / timestamp). Worked out once per unit: four rules ask."""
    if state.columns_memo is not None and state.columns_memo[0] is unit:
        cached: list[DeclaredColumn] = state.columns_memo[1]
        return cached
    found = _declared_columns(unit)
    state.columns_memo = (unit, found)
    return found


def _declared_columns(unit: Unit) -> list[DeclaredColumn]:
    if isinstance(unit, ast.CreateStmt):
        table = range_var_name(unit.relation)
        primary: set[str] = set()
        columns: list[ast.ColumnDef] = []
        for element in unit.tableElts or ():
            if isinstance(element, ast.ColumnDef):
                columns.append(element)
                if _inline_primary_key(element):
                    primary.add((element.colname or "").lower())
            elif isinstance(element, ast.Constraint) and element.contype == _CON.CONSTR_PRIMARY:
                primary |= {
                    k.sval.lower()
                    for k in element.keys or ()
                    if isinstance(k, ast.String) and k.sval
                }
        return [
            DeclaredColumn(
                column,
                table,
                (column.colname or "").lower() in primary,
                column_type(column.typeName),
            )
            for column in columns
        ]
    if not isinstance(unit, AlterCommand) or unit.is_new:
        return []
    cmd = unit.cmd
    if cmd.subtype == _AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        kind = column_type(cmd.def_.typeName)
        return [DeclaredColumn(cmd.def_, unit.table, _inline_primary_key(cmd.def_), kind)]
    if cmd.subtype == _AT.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
        kind = column_type(cmd.def_.typeName)
        if kind.name in ("json", "timestamp"):
            column = ast.ColumnDef(colname=cmd.name or "", typeName=cmd.def_.typeName)
            return [DeclaredColumn(column, unit.table, False, kind)]
    return []


def _inline_primary_key(column: ast.ColumnDef) -> bool:
    return any(
        isinstance(con, ast.Constraint) and con.contype == _CON.CONSTR_PRIMARY
        for con in column.constraints or ()
    )


def in_transaction_message(what: str) -> str:
    return (
        f"{what} cannot run inside a transaction block (BEGIN ... COMMIT, a DO block, or a "
        "migration tool's per-file transaction): PostgreSQL rejects it; instead run it on its "
        "own, outside any transaction (COMMIT first, and turn off the tool's transaction for "
        "this migration)"
    )


INSTEAD_NOT_VALID = "instead add it NOT VALID, then VALIDATE CONSTRAINT in a separate transaction"
