"""contract: drop the old shape and the trigger. The point of no return: it has no rollback.

The old indexes go first, CONCURRENTLY. The trigger and the old columns then go together in one
short transaction: dropped apart, an insert between the two would leave a NOT NULL old column
empty (or the trigger would write to a column that is gone).
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from pgshift.db import Query
from pgshift.phases.base import CompileContext, Phase, SqlStep, index_drop
from pgshift.phases.columns_shape import ColumnsShape
from pgshift.phases.dual_write import drop_copy_triggers
from pgshift.phases.index_names import record_index_names, take_index_names
from pgshift.phases.table_shape import TableShape


def compile_contract(ctx: CompileContext, index: int, spec: Any) -> Phase:
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
    old = [c.old for c in shape.changed() if c.old]
    if old:
        statements.append(
            sql.SQL("ALTER TABLE {} {}").format(
                table.qualified,
                sql.SQL(", ").join(
                    sql.SQL("DROP COLUMN IF EXISTS {}").format(sql.Identifier(c)) for c in old
                ),
            )
        )
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
