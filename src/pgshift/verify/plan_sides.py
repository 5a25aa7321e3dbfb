"""What `verify` compares for a compiled plan, read off the table as it is now.

Before cutover the new shape is the shadow columns, and the truth is `up` applied to the live
row. After cutover the new columns are live and the old ones follow them through `down`, so
the old shape is what is checked: `down` of the live row against the old columns. After
contract there is nothing left to compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgshift.compile import CompiledPlan
from pgshift.errors import UsageError
from pgshift.phases.columns_shape import ColumnsShape
from pgshift.verify.side import ColumnSpec, Side


@dataclass(frozen=True)
class Comparison:
    left: Side  # the truth, computed from the live row
    right: Side  # what is stored
    stage: str  # "before cutover" | "after cutover"
    columns: tuple[str, ...]


def _live_columns(conn: psycopg.Connection[Any], compiled: CompiledPlan) -> set[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped",
        (compiled.table.regclass,),
    ).fetchall()
    return {r[0] for r in rows}


def comparison(conn: psycopg.Connection[Any], compiled: CompiledPlan) -> Comparison:
    shape: ColumnsShape = compiled.context.shape
    table = compiled.table.qualified
    live = _live_columns(conn, compiled)
    key = list(compiled.key)
    if all(c.shadow in live for c in shape.columns):
        truth: list[ColumnSpec] = [
            (c.name, sql.SQL("({})::{}").format(sql.SQL(c.up), sql.SQL(c.type)))
            for c in shape.columns
        ]
        stored: list[ColumnSpec] = [(c.name, sql.Identifier(c.shadow)) for c in shape.columns]
        return Comparison(
            Side(table, key, truth),
            Side(table, key, stored),
            "before cutover",
            tuple(c.name for c in shape.columns),
        )
    changed = [c for c in shape.changed() if c.old in live]
    if changed and len(changed) == len(shape.changed()):
        truth = [
            (c.name, sql.SQL("({})::{}").format(sql.SQL(c.down or ""), sql.SQL(c.old_type or "")))
            for c in changed
        ]
        stored = [(c.name, sql.Identifier(c.old or "")) for c in changed]
        return Comparison(
            Side(table, key, truth),
            Side(table, key, stored),
            "after cutover",
            tuple(c.name for c in changed),
        )
    if not any(c.shadow in live for c in shape.columns) and not changed:
        if all(c.name in live for c in shape.columns) and not shape.changed():
            raise UsageError(
                "after cutover a new column has no old shape to compare with: nothing to verify"
            )
        raise UsageError(
            "nothing to verify: the shadow columns do not exist (run expand, dual_write and"
            " backfill first) or contract has dropped the old shape"
        )
    raise UsageError("the table is half-way between shapes; run `migrate apply` to finish a step")
