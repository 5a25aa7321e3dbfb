"""dual_write: a BEFORE INSERT OR UPDATE row trigger keeps the new shape in step inside the
writer's own transaction.

The trigger evaluates the plan's expressions against NEW through `(SELECT NEW.*) AS r`: plain,
cached SQL in PL/pgSQL, no dynamic SQL per row. Before cutover it fills the shadow columns from
`up`; cutover swaps its body so it fills the old columns from `down` (see `reverse_body`).
The backfill sets `pgshift.backfill` in its own transactions and computes the same expressions
in its UPDATE, so the trigger's WHEN clause skips it there instead of computing them twice.

Every expression runs in a `guarded` block: a row the plan cannot map is recorded, never the
application's write failed. In versions mode the sync trigger has a second branch for the new
version's writes (`VersionWriter`: old columns from `down`), and `new_table` gets copy triggers
both ways at once, kept from copying a copied write back by COPYING_SETTING.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from pgshift.db import Query, derived_name
from pgshift.phases.base import CompileContext, Phase, SqlStep, Step
from pgshift.phases.columns_shape import ColumnsShape, ShadowColumn
from pgshift.phases.data_check import data_check_step
from pgshift.phases.delete_fence import fenced, trigger_call
from pgshift.phases.table_shape import TableShape

BACKFILL_SETTING = "pgshift.backfill"
# set by a copy trigger while it writes the other table (versions mode, triggers both ways)
COPYING_SETTING = "pgshift.copying"


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string()


@dataclass(frozen=True)
class RowErrorSink:
    """Where a trigger records a row it could not map: the state schema's `record_row_error`
    (SECURITY DEFINER, so the application's roles need no rights on pgshift's tables), under
    the migration's name. Direction `up` maps towards the new shape, `down` back to the old."""

    function: sql.Identifier
    migration: str
    label: str = ""  # the table, for one of several tables of a plan

    @classmethod
    def of(cls, ctx: CompileContext) -> RowErrorSink:
        return cls(sql.Identifier(ctx.state_schema, "record_row_error"), ctx.plan.name, ctx.label)

    def record(self, direction: str, row: str, key: tuple[str, ...]) -> str:
        """`PERFORM <state>.record_row_error(...)`: `row` (NEW or OLD) named by its `key`
        columns, with the error being handled (only valid in an exception handler)."""
        named = f"{self.label} ({', '.join(key)})" if self.label else f"({', '.join(key)})"
        literals = (self.migration, direction, named)
        args = ", ".join(sql.Literal(v).as_string() for v in literals)
        # JSON's text of a value does not depend on the session's DateStyle or IntervalStyle
        values = ", ".join(f"to_jsonb({row}.{_ident(k)}) #>> '{{}}'" for k in key)
        return f"PERFORM {self.function.as_string()}({args}, ARRAY[{values}], SQLSTATE, SQLERRM);\n"


def guarded(assignments: str, on_error: str) -> str:
    """A block that computes, and a handler that records: how every pgshift trigger keeps a
    row it cannot map from failing the application's statement.

    `assignments` only computes (SELECT ... INTO variables or NEW's fields, never a write), so
    the block's subtransaction is never given a transaction ID: no subtransaction slot used,
    however many rows one transaction writes. When it fails, the block is rolled back and
    `on_error` runs in the writer's own transaction, where it may write (record the row).
    Variables keep what they were given before the failure (a SELECT INTO several targets may
    have assigned the first ones), so `on_error` resets whatever must not keep a value."""
    return (
        "  BEGIN\n"
        + textwrap.indent(textwrap.dedent(assignments).strip("\n") + "\n", "    ")
        + "  EXCEPTION WHEN OTHERS THEN\n"
        + textwrap.indent(textwrap.dedent(on_error).strip("\n") + "\n", "    ")
        + "  END;\n"
    )


def _assign(targets: list[tuple[str, str]], source: str = "(SELECT NEW.*) AS r") -> str:
    """`SELECT e1, e2 INTO NEW.c1, NEW.c2 FROM (SELECT NEW.*) AS r;` for (column, expr) pairs."""
    if not targets:
        return ""
    return (
        sql.SQL("  SELECT {} INTO {} FROM {};\n")
        .format(
            sql.SQL(", ").join(sql.SQL(expr) for _, expr in targets),
            sql.SQL(", ").join(sql.SQL("NEW.{}").format(sql.Identifier(c)) for c, _ in targets),
            sql.SQL(source),
        )
        .as_string()
    )


def forward_body(
    shape: ColumnsShape, version: VersionWriter | None = None, *, errors: RowErrorSink
) -> str:
    """Before cutover: the shadow columns from `up`; a row `up` fails on gets them NULL and is
    recorded, and the write goes on. In versions mode (`version`), a write of
    the new version (through its view) sets the shadow columns itself, and the old columns
    follow through `down`, evaluated over the row as the new version sees it."""
    forward = guarded(
        _assign([(c.shadow, c.up) for c in shape.columns]),
        "".join(f"NEW.{_ident(c.shadow)} := NULL;\n" for c in shape.columns)
        + errors.record("up", "NEW", shape.key),
    )
    if version is None:
        return "#variable_conflict use_column\nBEGIN\n" + forward + "  RETURN NEW;\nEND"
    changed = shape.changed()
    backward = (
        guarded(
            _assign([(c.name, c.down or "") for c in changed], source=version.new_row),
            _keep_previous([_ident(c.name) for c in changed])
            + errors.record("down", "NEW", shape.key),
        )
        if changed
        else "  NULL;\n"
    )
    return (
        "#variable_conflict use_column\nBEGIN\n"
        f"  IF {version.test} THEN\n"
        + textwrap.indent(backward, "  ")
        + "  ELSE\n"
        + textwrap.indent(forward, "  ")
        + "  END IF;\n  RETURN NEW;\nEND"
    )


def _keep_previous(columns: list[str]) -> str:
    """A handler's part for old columns `down` failed on: an UPDATE keeps their previous
    values, an INSERT leaves them NULL."""
    return (
        "IF TG_OP = 'UPDATE' THEN\n"
        + "".join(f"  NEW.{c} := OLD.{c};\n" for c in columns)
        + "ELSE\n"
        + "".join(f"  NEW.{c} := NULL;\n" for c in columns)
        + "END IF;\n"
    )


@dataclass(frozen=True)
class VersionWriter:
    """How the trigger tells a write of the new application version: its session has the
    version schema ahead of the table's schema on search_path (the table's name then means
    the version's view), and the row as that version sees it."""

    test: str  # a boolean SQL expression
    new_row: str  # a FROM item: the new shape's columns of NEW, named as the new version names them

    @classmethod
    def of(
        cls, view_schema: str, table_schema: str, columns: list[tuple[str, str]]
    ) -> VersionWriter:
        path = "current_schemas(false)"
        mine = f"array_position({path}, {sql.Literal(view_schema).as_string()}::name)"
        table = f"array_position({path}, {sql.Literal(table_schema).as_string()}::name)"
        select = ", ".join(
            f"NEW.{sql.Identifier(source).as_string()} AS {sql.Identifier(name).as_string()}"
            for name, source in columns
        )
        return cls(
            test=f"{mine} < coalesce({table}, 2147483647)", new_row=f"(SELECT {select}) AS r"
        )


def reverse_body(shape: ColumnsShape, *, errors: RowErrorSink) -> str:
    """After cutover: old columns follow the new ones through `down`; new columns stay filled
    from `up` for writers that do not set them yet (they keep a value a writer sets). A row
    `down` fails on keeps its old columns' previous values (NULL on INSERT), one `up` fails on
    keeps its new column as written; either is recorded, and the write goes on."""
    lines = ["#variable_conflict use_column\nBEGIN\n"]
    for col in (c for c in shape.columns if c.is_new):
        name = _ident(col.name)
        fill = guarded(_assign([(col.name, col.up)]), errors.record("up", "NEW", shape.key))
        lines.append(
            f"  IF (TG_OP = 'INSERT' AND NEW.{name} IS NULL)"
            f" OR (TG_OP = 'UPDATE' AND NEW.{name} IS NOT DISTINCT FROM OLD.{name}) THEN\n"
            + textwrap.indent(fill, "  ")
            + "  END IF;\n"
        )
    changed = shape.changed()
    if changed:
        olds = [_ident(_old(c)) for c in changed]
        lines.append(
            guarded(
                _assign([(_old(c), c.down or "") for c in changed]),
                _keep_previous(olds) + errors.record("down", "NEW", shape.key),
            )
        )
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
    version = (
        VersionWriter.of(ctx.view_schema, ctx.table.schema, shape.new_shape(ctx.table))
        if ctx.versions
        else None
    )
    install = SqlStep(
        description="install the sync trigger (new shape computed in the writer's transaction"
        + ("; the new version's writes fill the old columns through `down`)" if version else ")"),
        statements=(
            function_ddl(shape, forward_body(shape, version, errors=RowErrorSink.of(ctx))),
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
        forward=(data_check_step(ctx), install),
        rollback=(drop_trigger_step((shape.trigger,), ctx.table.qualified, shape.function),),
        summary=f"trigger {shape.trigger} fills {len(shape.columns)} shadow column(s) on every write",
    )


# --- new_table: AFTER row triggers copy every write into the other table -------------------


def copy_body(
    target: sql.Identifier,
    mapping: dict[str, str],
    target_key: tuple[str, ...],
    overriding: bool,
    guard: bool = False,
    *,
    errors: RowErrorSink,
    direction: str,
    source_key: tuple[str, ...],
    taken: frozenset[str] = frozenset(),
    fence: str = "",
) -> str:
    """AFTER INSERT/UPDATE/DELETE: upsert the mapped row into `target`, delete it there when the
    row goes away or its key changes; AFTER TRUNCATE (a statement trigger on the same
    function): truncate `target` too. Expressions see the source row as `r`; no dynamic SQL,
    so PL/pgSQL caches every plan. With `guard` (copy triggers both ways at once, versions
    mode) the writes are made with COPYING_SETTING on, which the other trigger's WHEN skips:
    a copied write is not copied back.

    Every value (and the old row's key) is computed into a variable of the target column's
    own type (`%TYPE`: assignment coercion, typmod included, happens there) in a `guarded`
    block; the DELETE and the upsert use the variables after it. A row the mapping fails on is
    recorded by its `source_key` and nothing is written for it (a DELETE still deletes the copy
    when the old key is computable). Variable names avoid the columns in `taken`, which
    `#variable_conflict use_column` would otherwise prefer. `fence` runs before a copy is
    deleted (the table copy's delete fence, phases/delete_fence.py)."""
    prefix = "pgshift_"
    while any(n.startswith(prefix) for n in taken):
        prefix = "_" + prefix
    value = {c: f"{prefix}{i}" for i, c in enumerate(mapping, 1)}
    old_value = {k: f"{prefix}old_{i}" for i, k in enumerate(target_key, 1)}
    mapped, old_mapped = f"{prefix}new", f"{prefix}old"
    table = target.as_string()
    declare = (
        "".join(f"  {value[c]} {table}.{_ident(c)}%TYPE;\n" for c in mapping)
        + "".join(f"  {old_value[k]} {table}.{_ident(k)}%TYPE;\n" for k in target_key)
        + f"  {mapped} boolean := false;\n  {old_mapped} boolean := false;\n"
    )
    compute = (
        "IF TG_OP <> 'INSERT' THEN\n"
        f"  SELECT {', '.join(mapping[k] for k in target_key)}"
        f" INTO {', '.join(old_value.values())} FROM (SELECT OLD.*) AS r;\n"
        f"  {old_mapped} := true;\n"
        "END IF;\n"
        "IF TG_OP <> 'DELETE' THEN\n"
        f"  SELECT {', '.join(mapping.values())} INTO {', '.join(value.values())}"
        " FROM (SELECT NEW.*) AS r;\n"
        f"  {mapped} := true;\n"
        "END IF;\n"
    )
    on_error = (
        "IF TG_OP = 'DELETE' THEN\n  "
        + errors.record(direction, "OLD", source_key)
        + "ELSE\n  "
        + errors.record(direction, "NEW", source_key)
        + "END IF;\n"
    )
    key_cols = ", ".join(_ident(k) for k in target_key)
    old_key = ", ".join(old_value.values())
    new_key = ", ".join(value[k] for k in target_key)
    columns = ", ".join(_ident(c) for c in mapping)
    others = [c for c in mapping if c not in target_key]
    action = (
        "DO UPDATE SET " + ", ".join(f"{_ident(c)} = EXCLUDED.{_ident(c)}" for c in others)
        if others
        else "DO NOTHING"
    )
    on, off = (_copying("on"), _copying("off")) if guard else ("", "")
    return (
        "#variable_conflict use_column\nDECLARE\n"
        + declare
        + "BEGIN\n"
        + on
        + "  IF TG_OP = 'TRUNCATE' THEN\n"
        f"    TRUNCATE {table};\n  {off}  RETURN NULL;\n  END IF;\n"
        + guarded(compute, on_error)
        + f"  IF {old_mapped} AND (TG_OP = 'DELETE'"
        f" OR ({mapped} AND ROW({old_key}) IS DISTINCT FROM ROW({new_key}))) THEN\n"
        + textwrap.indent(fence, "    ")
        + f"    DELETE FROM {table} WHERE ({key_cols}) = ({old_key});\n"
        "  END IF;\n"
        f"  IF {mapped} THEN\n"
        f"    INSERT INTO {table} ({columns}){' OVERRIDING SYSTEM VALUE' if overriding else ''}\n"
        f"      VALUES ({', '.join(value.values())})\n"
        f"      ON CONFLICT ({key_cols}) {action};\n"
        "  END IF;\n" + off + "  RETURN NULL;\nEND"
    )


def _copying(value: str) -> str:
    return f"  PERFORM set_config({sql.Literal(COPYING_SETTING).as_string()}, '{value}', true);\n"


def truncate_trigger(trigger: str) -> str:
    """The statement trigger beside a copy trigger that carries TRUNCATE over."""
    return derived_name(trigger, "_truncate")


def copy_trigger(
    function: sql.Identifier,
    body: str,
    trigger: str,
    table: sql.Identifier,
    guard: bool = False,
) -> tuple[Query, ...]:
    """The function and both triggers running it. With `guard`, the triggers skip writes made
    by the other copy trigger and by the backfill (versions mode: both directions at once)."""
    when = (
        sql.SQL(" WHEN (current_setting({}, true) IS DISTINCT FROM 'on'").format(
            sql.Literal(COPYING_SETTING)
        )
        + sql.SQL(" AND current_setting({}, true) IS DISTINCT FROM 'on')").format(
            sql.Literal(BACKFILL_SETTING)
        )
        if guard
        else sql.SQL("")
    )
    return (
        sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
            function, sql.Literal(body)
        ),
        sql.SQL(
            "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {}"
            " FOR EACH ROW{} EXECUTE FUNCTION {}()"
        ).format(sql.Identifier(trigger), table, when, function),
        sql.SQL(
            "CREATE OR REPLACE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT{}"
            " EXECUTE FUNCTION {}()"
        ).format(sql.Identifier(truncate_trigger(trigger)), table, when, function),
    )


def copy_triggers(trigger: str) -> tuple[str, ...]:
    """Both triggers `copy_trigger` creates."""
    return trigger, truncate_trigger(trigger)


def drop_copy_triggers(trigger: str, table: sql.Identifier) -> tuple[Query, ...]:
    return drop_triggers(copy_triggers(trigger), table)


def _columns(shape: TableShape) -> frozenset[str]:
    return frozenset(shape.old.columns) | frozenset(shape.new.columns)


def forward_copy(
    shape: TableShape, guard: bool = False, *, errors: RowErrorSink, state_schema: str
) -> tuple[Query, ...]:
    """Live table -> new table, before cutover; it calls the delete fence of the state schema
    when the copy has one (phases/delete_fence.py; `guard` is versions mode)."""
    body = copy_body(
        shape.new.qualified,
        shape.forward,
        shape.new_key,
        shape.overriding,
        guard,
        errors=errors,
        direction="up",
        source_key=shape.key,
        taken=_columns(shape),
        fence=trigger_call(state_schema) if fenced(shape, versions=guard) else "",
    )
    return copy_trigger(
        shape.forward_function, body, shape.forward_trigger, shape.old.qualified, guard
    )


def reverse_copy(
    shape: TableShape,
    live: sql.Identifier,
    old: sql.Identifier,
    guard: bool = False,
    *,
    errors: RowErrorSink,
) -> tuple[Query, ...]:
    """New table (live after cutover; the new version's, in versions mode) -> old table, so a
    rollback loses no write."""
    body = copy_body(
        old,
        shape.reverse,
        shape.old.primary_key or (),
        shape.old_overriding,
        guard,
        errors=errors,
        direction="down",
        source_key=shape.new_key,
        taken=_columns(shape),
    )
    return copy_trigger(shape.reverse_function, body, shape.reverse_trigger, live, guard)


def _compile_copy(ctx: CompileContext, index: int) -> Phase:
    shape: TableShape = ctx.shape
    old, new = shape.old, shape.new
    install = SqlStep(
        description=f"install the copy trigger: every write to {old.display} is applied to"
        f" {new.display} in the writer's transaction",
        statements=forward_copy(
            shape,
            guard=ctx.versions,
            errors=RowErrorSink.of(ctx),
            state_schema=ctx.state_schema,
        ),
        lock="SHARE ROW EXCLUSIVE",
        hold="milliseconds, after in-flight writes finish",
    )
    forward: list[Step] = [data_check_step(ctx), install]
    rollback = [
        drop_trigger_step(
            copy_triggers(shape.forward_trigger), old.qualified, shape.forward_function
        )
    ]
    summary = (
        f"trigger {shape.forward_trigger} copies every write (and TRUNCATE) into {new.display}"
    )
    if ctx.versions:
        # the new version writes the new table (through its view): copied back at once
        forward.append(
            SqlStep(
                description=f"install the copy-back trigger: every write of the new version to"
                f" {new.display} is applied to {old.display} in the writer's transaction",
                statements=reverse_copy(
                    shape, new.qualified, old.qualified, guard=True, errors=RowErrorSink.of(ctx)
                ),
                lock="SHARE ROW EXCLUSIVE",
                hold="milliseconds (on the new table only)",
            )
        )
        rollback.insert(
            0,
            drop_trigger_step(
                copy_triggers(shape.reverse_trigger), new.qualified, shape.reverse_function
            ),
        )
        summary += f"; trigger {shape.reverse_trigger} copies the new version's writes back"
    return Phase(
        index=index,
        kind="dual_write",
        name="dual_write",
        forward=tuple(forward),
        rollback=tuple(rollback),
        summary=summary,
    )
