"""PGS002 volatile-default: ADD COLUMN whose value is computed per row.

Since PostgreSQL 11, ADD COLUMN with a constant (or stable) default only records the default:
no rewrite. A value computed per row (a volatile default such as gen_random_uuid(), a serial's
nextval, GENERATED AS IDENTITY, GENERATED ... STORED) makes PostgreSQL rewrite the whole table
under an ACCESS EXCLUSIVE lock. The safe way: add the column nullable and without the default,
backfill it in batches, then SET DEFAULT (or a pgshift `columns` migration).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from pgshift.lint.model import Rule
from pgshift.lint.sqlfacts import SERIAL_TYPES, VOLATILE, column_type, possibly_volatile_call
from pgshift.lint.state import AlterCommand, State, Unit

RULE = Rule("PGS002", "volatile-default", "ADD COLUMN whose value is computed per row (rewrite)")
NODES = (AlterCommand,)


_CON = enums.ConstrType
_REWRITE = "rewrites the whole table under an ACCESS EXCLUSIVE lock"


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, AlterCommand) or unit.is_new:
        return
    column = unit.cmd.def_
    if unit.cmd.subtype != enums.AlterTableType.AT_AddColumn:
        return
    if not isinstance(column, ast.ColumnDef):
        return
    where = f"ADD COLUMN {column.colname or ''} on {unit.table}"
    declared = column_type(column.typeName)
    if declared.name in SERIAL_TYPES:
        yield (
            f"{where} as {declared.name} fills every row from a sequence and {_REWRITE}; "
            "instead add a nullable column, backfill it in batches, then SET DEFAULT nextval(...)"
        )
    defaults: list[object] = [column.raw_default] if column.raw_default is not None else []
    for con in column.constraints or ():
        if not isinstance(con, ast.Constraint):
            continue
        if con.contype == _CON.CONSTR_DEFAULT:
            defaults.append(con.raw_expr)
        elif con.contype == _CON.CONSTR_IDENTITY:
            yield (
                f"{where} GENERATED AS IDENTITY numbers every row and {_REWRITE}; instead add a "
                "nullable column, backfill it in batches, then ALTER COLUMN ... ADD GENERATED AS "
                "IDENTITY"
            )
        elif con.contype == _CON.CONSTR_GENERATED and getattr(con, "generated_kind", "s") != "v":
            yield (
                f"{where} GENERATED ... STORED computes every row and {_REWRITE}; instead add a "
                "plain column kept in step by a pgshift `columns` migration (dual_write + "
                "backfill)"
            )
    for default in defaults:
        function = possibly_volatile_call(default)
        if function is None:
            continue
        why = (
            "is volatile"
            if function.rpartition(".")[2] in VOLATILE
            else "may be volatile (not on pgshift's list of stable functions)"
        )
        yield (
            f"{where} with default {function}(), which {why}, {_REWRITE}; instead add the column "
            "without a default, backfill it in batches, then SET DEFAULT"
        )
