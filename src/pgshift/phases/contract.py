"""contract: drop the old shape and the trigger. The point of no return: it has no rollback.

The old indexes go first, CONCURRENTLY. The trigger and the old columns then go together in one
short transaction: dropped apart, an insert between the two would leave a NOT NULL old column
empty (or the trigger would write to a column that is gone).
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from pgshift.db import Query
from pgshift.phases.base import CompileContext, Phase, SqlStep, exists_query, index_drop
from pgshift.phases.columns_shape import ColumnsShape
from pgshift.phases.cutover import (
    analyze_new_table,
    analyze_step,
    foreign_keys,
    moved_validations,
    not_null_steps,
    swap_statements,
    swapped_query,
    table_swap_statements,
)
from pgshift.phases.dual_write import drop_copy_triggers
from pgshift.phases.index_names import record_index_names, take_index_names
from pgshift.phases.repoint import recreate
from pgshift.phases.table_shape import TableShape


def compile_contract(ctx: CompileContext, index: int, spec: Any) -> Phase:
    if ctx.versions:
        return _compile_end_old_version(ctx, index)
    if ctx.plan.target == "new_table":
        return _compile_drop_old(ctx, index)
    shape: ColumnsShape = ctx.shape
    table = ctx.table
    steps: list[SqlStep] = [
        index_drop(f"drop the old index {ix.old}", (table.schema, ix.old)) for ix in shape.indexes
    ]
    statements: list[Query] = [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
            sql.Identifier(shape.trigger), table.qualified
        ),
        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(ctx.view_schema)),
    ]
    statements += _drop_old_columns(ctx)
    steps.append(
        SqlStep(
            description="drop the sync trigger, the view schema and the old columns together",
            statements=tuple(statements),
            lock="ACCESS EXCLUSIVE",
            hold="milliseconds (catalog changes only)",
        )
    )
    return Phase(
        index=index,
        kind="contract",
        name="contract",
        forward=tuple(steps),
        rollback=(),
        reversible=False,
        summary="drop the old columns and the trigger: the point of no return",
    )


def _drop_old_columns(ctx: CompileContext) -> list[Query]:
    """The old columns (named as after the renames), dropped in one ALTER TABLE."""
    old = [c.old for c in ctx.shape.changed() if c.old]
    if not old:
        return []
    return [
        sql.SQL("ALTER TABLE {} {}").format(
            ctx.table.qualified,
            sql.SQL(", ").join(
                sql.SQL("DROP COLUMN IF EXISTS {}").format(sql.Identifier(c)) for c in old
            ),
        )
    ]


def _compile_drop_old(ctx: CompileContext, index: int) -> Phase:
    """new_table: the reverse trigger and the old table go together, in one transaction."""
    shape: TableShape = ctx.shape
    live = sql.Identifier(shape.old.schema, shape.old.name)
    old = sql.Identifier(shape.old.schema, shape.old_name)
    drop = SqlStep(
        description=f"drop the reverse trigger, the view schema and the old table"
        f" {shape.old_name}; the new table's matching indexes take the old index names",
        statements=(
            *drop_copy_triggers(shape.reverse_trigger, live),
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(ctx.view_schema)),
            record_index_names(old, live),
            sql.SQL("DROP TABLE IF EXISTS {}").format(old),
            # the names `create` had to choose apart give way to the old table's
            take_index_names(),
        ),
        lock="ACCESS EXCLUSIVE",
        hold="milliseconds (the old table is no longer read by anyone)",
    )
    return Phase(
        index=index,
        kind="contract",
        name="contract",
        forward=(drop,),
        rollback=(),
        reversible=False,
        summary=f"drop the old table {shape.old_name}: the point of no return",
    )


# --- versions: no cutover came before; the old shape ends here, the version view stays ------


def _compile_end_old_version(ctx: CompileContext, index: int) -> Phase:
    """Versions mode: the new shape takes the live names and the old shape is dropped in one
    short transaction, with the triggers. The version schema's view reads the new shape by
    column number (or table OID), so it stays as it is: statements the new version prepared
    keep their result types. Sessions of the old version still connected see the change (the
    gate before contract can require them gone)."""
    steps = _end_columns(ctx) if ctx.plan.target == "columns" else _end_table(ctx)
    return Phase(
        index=index,
        kind="contract",
        name="contract",
        forward=tuple(steps),
        rollback=(),
        reversible=False,
        summary=f"the new shape takes the live names, the old one is dropped: the point of no"
        f" return ({ctx.view_schema} stays for the new version)",
    )


def _end_columns(ctx: CompileContext) -> list[SqlStep]:
    shape: ColumnsShape = ctx.shape
    table = ctx.table
    steps, _ = not_null_steps(ctx)
    steps.append(analyze_step(ctx))
    statements: list[Query] = [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
            sql.Identifier(shape.trigger), table.qualified
        ),
        *swap_statements(ctx, turn_trigger=False),
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(shape.function),
    ]
    statements += _drop_old_columns(ctx)  # their indexes go with them
    steps.append(
        SqlStep(
            description="the new columns take the live names; the trigger and the old columns"
            " are dropped, together",
            statements=tuple(statements),
            lock="ACCESS EXCLUSIVE",
            done_if=swapped_query(ctx),
            hold="milliseconds (catalog changes only)",
        )
    )
    return [*steps, *moved_validations(ctx)]


def _end_table(ctx: CompileContext) -> list[SqlStep]:
    shape: TableShape = ctx.shape
    old, new = shape.old, shape.new
    live = sql.Identifier(old.schema, old.name)
    old_after = sql.Identifier(old.schema, shape.old_name)
    fk_swap, fk_validate = foreign_keys(shape)
    gone = exists_query(
        "SELECT 1 WHERE to_regclass({}) IS NULL",
        sql.Identifier(new.schema, new.name).as_string(),
    )
    analyze = analyze_new_table(shape, done_if=gone)
    swap = SqlStep(
        description=f"{new.display} takes the name {old.name}; both copy triggers and the old"
        " table are dropped, together",
        statements=(
            *drop_copy_triggers(shape.forward_trigger, old.qualified),
            *drop_copy_triggers(shape.reverse_trigger, new.qualified),
            *table_swap_statements(ctx, fk_swap),
            recreate(),
            record_index_names(old_after, live),
            sql.SQL("DROP TABLE IF EXISTS {}").format(old_after),
            take_index_names(),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(shape.forward_function),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(shape.reverse_function),
        ),
        lock="ACCESS EXCLUSIVE",
        done_if=gone,
        hold="milliseconds (catalog changes only)",
    )
    return [analyze, swap, *fk_validate]
