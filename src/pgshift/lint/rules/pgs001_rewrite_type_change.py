"""PGS001 rewrite-type-change: ALTER COLUMN ... TYPE that rewrites the table.

Changing a column's type rewrites the table and rebuilds its indexes under an ACCESS EXCLUSIVE
lock, unless PostgreSQL can keep the stored bytes (varchar(n) to a longer varchar or text, a
wider numeric of the same scale). Both types must be known from the same run to tell; else the
change is taken to rewrite. The safe way is a pgshift `columns` migration: a shadow column,
kept in step by a trigger, backfilled in batches, swapped at cutover.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from pgshift.lint.model import Rule
from pgshift.lint.sqlfacts import type_text
from pgshift.lint.state import AlterCommand, State, Unit

RULE = Rule("PGS001", "rewrite-type-change", "ALTER COLUMN ... TYPE that rewrites the table")
NODES = (AlterCommand,)


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, AlterCommand) or unit.is_new:
        return
    cmd = unit.cmd
    if cmd.subtype != enums.AlterTableType.AT_AlterColumnType:
        return
    if not isinstance(cmd.def_, ast.ColumnDef) or state.type_change_in_place(unit):
        return
    yield (
        f"ALTER COLUMN {cmd.name or ''} TYPE {type_text(cmd.def_.typeName)} on {unit.table} "
        "rewrites the whole table (and its indexes) under an ACCESS EXCLUSIVE lock; instead use "
        "a pgshift `columns` migration (shadow column + backfill)"
    )
