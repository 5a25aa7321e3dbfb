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

from pgshift.db import Query, derived_name
from pgshift.phases.base import CompileContext, Phase, SqlStep
from pgshift.phases.columns_shape import ColumnsShape, ShadowColumn
from pgshift.phases.table_shape import TableShape

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


def drop_triggers(names: tuple[str, ...], table: sql.Identifier) -> tuple[Query, ...]:
    return tuple(
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), table)
        for name in names
    )


def drop_trigger_step(
    triggers: tuple[str, ...], table: sql.Identifier, function: sql.Identifier
) -> SqlStep:
    """The triggers and then the function they run, in one transaction."""
    return SqlStep(
        description=f"drop the trigger(s) {', '.join(triggers)} and their function",
        statements=(
            *drop_triggers(triggers, table),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(function),
        ),
        lock="ACCESS EXCLUSIVE",
    )


def compile_dual_write(ctx: CompileContext, index: int, spec: Any) -> Phase:
    if ctx.plan.target == "new_table":
        return _compile_copy(ctx, index)
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
    return Phase(
        index=index,
        kind="dual_write",
        name="dual_write",
        forward=(install,),
        rollback=(drop_trigger_step((shape.trigger,), ctx.table.qualified, shape.function),),
        summary=f"trigger {shape.trigger} fills {len(shape.columns)} shadow column(s) on every write",
    )


# --- new_table: AFTER row triggers copy every write into the other table -------------------


def copy_body(
    target: sql.Identifier,
    mapping: dict[str, str],
    target_key: tuple[str, ...],
    overriding: bool,
) -> str:
    """AFTER INSERT/UPDATE/DELETE: upsert the mapped row into `target`, delete it there when the
    row goes away or its key changes; AFTER TRUNCATE (a statement trigger on the same
    function): truncate `target` too. Expressions see the source row as `r`; no dynamic SQL,
    so PL/pgSQL caches every plan."""

    def select(row: str, exprs: list[str]) -> str:
        return f"(SELECT {', '.join(exprs)} FROM (SELECT {row}.*) AS r)"

    key_exprs = [mapping[k] for k in target_key]
    key_cols = ", ".join(sql.Identifier(k).as_string() for k in target_key)
    old_key = select("OLD", [f"ROW({', '.join(key_exprs)})"])
    new_key = select("NEW", [f"ROW({', '.join(key_exprs)})"])
    columns = ", ".join(sql.Identifier(c).as_string() for c in mapping)
    others = [c for c in mapping if c not in target_key]
    action = (
        "DO UPDATE SET "
        + ", ".join(
            f"{sql.Identifier(c).as_string()} = EXCLUDED.{sql.Identifier(c).as_string()}"
            for c in others
        )
        if others
        else "DO NOTHING"
    )
    table = target.as_string()
    return (
        "#variable_conflict use_column\nBEGIN\n"
        f"  IF TG_OP = 'TRUNCATE' THEN\n    TRUNCATE {table};\n    RETURN NULL;\n  END IF;\n"
        f"  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND {old_key} IS DISTINCT FROM {new_key}) THEN\n"
        f"    DELETE FROM {table} WHERE ({key_cols}) = {select('OLD', key_exprs)};\n"
        "  END IF;\n"
        "  IF TG_OP <> 'DELETE' THEN\n"
        f"    INSERT INTO {table} ({columns}){' OVERRIDING SYSTEM VALUE' if overriding else ''}\n"
        f"      SELECT {', '.join(mapping.values())} FROM (SELECT NEW.*) AS r\n"
        f"      ON CONFLICT ({key_cols}) {action};\n"
        "  END IF;\n"
        "  RETURN NULL;\nEND"
    )


def truncate_trigger(trigger: str) -> str:
    """The statement trigger beside a copy trigger that carries TRUNCATE over."""
    return derived_name(trigger, "_truncate")


def copy_trigger(
    function: sql.Identifier, body: str, trigger: str, table: sql.Identifier
) -> tuple[Query, ...]:
    return (
        sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
            function, sql.Literal(body)
        ),
        sql.SQL(
            "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {}"
            " FOR EACH ROW EXECUTE FUNCTION {}()"
        ).format(sql.Identifier(trigger), table, function),
        sql.SQL(
            "CREATE OR REPLACE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT"
            " EXECUTE FUNCTION {}()"
        ).format(sql.Identifier(truncate_trigger(trigger)), table, function),
    )


def copy_triggers(trigger: str) -> tuple[str, ...]:
    """Both triggers `copy_trigger` creates."""
    return trigger, truncate_trigger(trigger)


def drop_copy_triggers(trigger: str, table: sql.Identifier) -> tuple[Query, ...]:
    return drop_triggers(copy_triggers(trigger), table)


def forward_copy(shape: TableShape) -> tuple[Query, ...]:
    """Live table -> new table, before cutover."""
    body = copy_body(shape.new.qualified, shape.forward, shape.new_key, shape.overriding)
    return copy_trigger(shape.forward_function, body, shape.forward_trigger, shape.old.qualified)


def reverse_copy(shape: TableShape, live: sql.Identifier, old: sql.Identifier) -> tuple[Query, ...]:
    """New table (live after cutover) -> old table, so a rollback loses no write."""
    body = copy_body(old, shape.reverse, shape.old.primary_key or (), shape.old_overriding)
    return copy_trigger(shape.reverse_function, body, shape.reverse_trigger, live)


def _compile_copy(ctx: CompileContext, index: int) -> Phase:
    shape: TableShape = ctx.shape
    install = SqlStep(
        description=f"install the copy trigger: every write to {shape.old.display} is applied to"
        f" {shape.new.display} in the writer's transaction",
        statements=forward_copy(shape),
        lock="SHARE ROW EXCLUSIVE",
        hold="milliseconds, after in-flight writes finish",
    )
    return Phase(
        index=index,
        kind="dual_write",
        name="dual_write",
        forward=(install,),
        rollback=(
            drop_trigger_step(
                copy_triggers(shape.forward_trigger), shape.old.qualified, shape.forward_function
            ),
        ),
        summary=f"trigger {shape.forward_trigger} copies every write (and TRUNCATE) into"
        f" {shape.new.display}",
    )
