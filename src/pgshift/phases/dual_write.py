"""dual_write: a BEFORE INSERT OR UPDATE row trigger keeps the new shape in step inside the
writer's own transaction.

The trigger evaluates the plan's expressions against NEW through `(SELECT NEW.*) AS r`: plain,
cached SQL in PL/pgSQL, no dynamic SQL per row. Before cutover it fills the shadow columns from
`up`; cutover swaps its body so it fills the old columns from `down` (see `reverse_body`).
The backfill sets `pgshift.backfill` in its own transactions and computes the same expressions
in its UPDATE, so the trigger's WHEN clause skips it there instead of computing them twice.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from pgshift.db import Query
from pgshift.phases.base import CompileContext, Phase, SqlStep
from pgshift.phases.columns_shape import ColumnsShape, ShadowColumn

BACKFILL_SETTING = "pgshift.backfill"


def _assign(targets: list[tuple[str, str]]) -> str:
    """`SELECT e1, e2 INTO NEW.c1, NEW.c2 FROM (SELECT NEW.*) AS r;` for (column, expr) pairs."""
    if not targets:
        return ""
    return (
        sql.SQL("  SELECT {} INTO {} FROM (SELECT NEW.*) AS r;\n")
        .format(
            sql.SQL(", ").join(sql.SQL(expr) for _, expr in targets),
            sql.SQL(", ").join(sql.SQL("NEW.{}").format(sql.Identifier(c)) for c, _ in targets),
        )
        .as_string()
    )


def forward_body(shape: ColumnsShape) -> str:
    return (
        "#variable_conflict use_column\nBEGIN\n"
        + _assign([(c.shadow, c.up) for c in shape.columns])
        + "  RETURN NEW;\nEND"
    )


def reverse_body(shape: ColumnsShape) -> str:
    """After cutover: old columns follow the new ones through `down`; new columns stay filled
    from `up` for writers that do not set them yet (they keep a value a writer sets)."""
    lines = ["#variable_conflict use_column\nBEGIN\n"]
    for col in (c for c in shape.columns if c.is_new):
        name = sql.Identifier(col.name).as_string()
        fill = _assign([(col.name, col.up)]).strip()
        lines.append(
            f"  IF (TG_OP = 'INSERT' AND NEW.{name} IS NULL)"
            f" OR (TG_OP = 'UPDATE' AND NEW.{name} IS NOT DISTINCT FROM OLD.{name}) THEN\n"
            f"    {fill}\n  END IF;\n"
        )
    lines.append(_assign([(_old(c), c.down or "") for c in shape.changed()]))
    lines.append("  RETURN NEW;\nEND")
    return "".join(lines)


def _old(col: ShadowColumn) -> str:
    assert col.old is not None
    return col.old


def function_ddl(shape: ColumnsShape, body: str) -> Query:
    return sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
        shape.function, sql.Literal(body)
    )


def compile_dual_write(ctx: CompileContext, index: int, spec: Any) -> Phase:
    shape: ColumnsShape = ctx.shape
    install = SqlStep(
        description="install the sync trigger (new shape computed in the writer's transaction)",
        statements=(
            function_ddl(shape, forward_body(shape)),
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {} BEFORE INSERT OR UPDATE ON {} FOR EACH ROW"
                " WHEN (current_setting({}, true) IS DISTINCT FROM 'on') EXECUTE FUNCTION {}()"
            ).format(
                sql.Identifier(shape.trigger),
                ctx.table.qualified,
                sql.Literal(BACKFILL_SETTING),
                shape.function,
            ),
        ),
        lock="SHARE ROW EXCLUSIVE",
        hold="milliseconds, after in-flight writes finish",
    )
    remove = SqlStep(
        description="drop the sync trigger and its function",
        statements=(
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                sql.Identifier(shape.trigger), ctx.table.qualified
            ),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(shape.function),
        ),
        lock="ACCESS EXCLUSIVE",
    )
    return Phase(
        index=index,
        kind="dual_write",
        name="dual_write",
        forward=(install,),
        rollback=(remove,),
        summary=f"trigger {shape.trigger} fills {len(shape.columns)} shadow column(s) on every write",
    )
