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
from pgshift.phases.table_shape import TableShape
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


def _exists(conn: psycopg.Connection[Any], schema: str, name: str) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(schema, name).as_string(),)
    ).fetchone()
    return bool(row and row[0])


def _mapped(mapping: dict[str, str], key: tuple[str, ...], source: sql.Composable) -> Side:
    """The mapping applied to every row of `source`, as a side keyed like the target."""
    select = sql.SQL("(SELECT {} FROM {}) AS s").format(
        sql.SQL(", ").join(
            sql.SQL("({}) AS {}").format(sql.SQL(expr), sql.Identifier(column))
            for column, expr in mapping.items()
        ),
        source,
    )
    return Side(select, list(key), [c for c in mapping if c not in key])


def _table_comparison(conn: psycopg.Connection[Any], compiled: CompiledPlan) -> Comparison:
    """new_table: the mapping of the live table against the new one; after cutover, the
    reverse mapping of the (now live) new table against the old one."""
    shape: TableShape = compiled.context.shape
    schema = shape.old.schema
    if _exists(conn, schema, shape.old_name):
        live = sql.Identifier(schema, shape.old.name)
        key = shape.old.primary_key or ()
        left = _mapped(shape.reverse, key, live)
        right = Side(sql.Identifier(schema, shape.old_name), list(key), left.column_names)
        return Comparison(left, right, "after cutover", left.column_names)
    if _exists(conn, schema, shape.new.name):
        left = _mapped(shape.forward, shape.new_key, shape.old.qualified)
        right = Side(shape.new.qualified, list(shape.new_key), left.column_names)
        return Comparison(left, right, "before cutover", left.column_names)
    raise UsageError(
        f"nothing to verify: {shape.new.display} does not exist (run expand, dual_write and"
        " backfill first) or contract has dropped the old table"
    )


def comparison(conn: psycopg.Connection[Any], compiled: CompiledPlan) -> Comparison:
    if compiled.plan.target == "new_table":
        return _table_comparison(conn, compiled)
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
