"""cutover: the new shape takes the live names in one short ACCESS EXCLUSIVE transaction.

Everything slow happens before that transaction, under weak locks: NOT NULL is proven by a
CHECK ... NOT VALID that is then VALIDATEd (so SET NOT NULL inside the swap needs no scan),
spare unique indexes on the old columns are built CONCURRENTLY (so a constraint's old index,
which DROP CONSTRAINT destroys, exists again for rollback), and the shadow columns get
statistics. The swap itself only renames, moves constraints onto ready indexes, moves defaults
and sequence ownership, and turns the trigger around so the old columns follow the new ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql

from pgshift.db import Query, split_name
from pgshift.phases.base import (
    CompileContext,
    Phase,
    SqlStep,
    exists_query,
    index_build,
    index_drop,
)
from pgshift.phases.columns_shape import ColumnsShape, RebuiltIndex, ShadowColumn
from pgshift.phases.dual_write import (
    RowErrorSink,
    drop_copy_triggers,
    forward_body,
    forward_copy,
    function_ddl,
    reverse_body,
    reverse_copy,
)
from pgshift.phases.repoint import TriggerMove, capture_and_drop, drop_policies, recreate
from pgshift.phases.table_shape import KeyFeed, TableShape

INTEGER_TYPES = ("smallint", "integer", "bigint")
CONSTRAINT_KINDS = {"p": "PRIMARY KEY", "u": "UNIQUE"}


def _alter(ctx: CompileContext, action: Query) -> Query:
    return sql.SQL("ALTER TABLE {} {}").format(ctx.table.qualified, action)


def _index(ctx: CompileContext, name: str) -> sql.Identifier:
    return sql.Identifier(ctx.table.schema, name)


def _column_exists(ctx: CompileContext, column: str, present: bool) -> Query:
    query = (
        "SELECT 1 WHERE {} = EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {}::regclass"
        " AND attname = {} AND NOT attisdropped)"
    )
    return exists_query(query, present, ctx.table.regclass, column)


def swapped_query(ctx: CompileContext) -> Query:
    """True once the swap committed: the first shadow column no longer exists by that name."""
    shape: ColumnsShape = ctx.shape
    return _column_exists(ctx, shape.columns[0].shadow, False)


def _sequence_moves(col: ShadowColumn) -> bool:
    return col.sequence is not None


def _sequence_widens(col: ShadowColumn) -> bool:
    return (
        col.sequence is not None
        and col.type in INTEGER_TYPES
        and col.sequence_type in INTEGER_TYPES
        and INTEGER_TYPES.index(col.type) > INTEGER_TYPES.index(col.sequence_type)
    )


def _carry(ctx: CompileContext) -> list[Query]:
    """Views reading a changed column, and the table's policies, hold column numbers: they
    are recorded and dropped before the renames, created again after them (`recreate`)."""
    shape: ColumnsShape = ctx.shape
    changed = tuple(c.name for c in shape.changed())
    return [
        capture_and_drop(ctx.table.qualified, ctx.view_schema, copy_policies=True, columns=changed),
        drop_policies(ctx.table.qualified),
    ]


def _lock_moved(ctx: CompileContext) -> list[Query]:
    """With constraints of other tables to move, the swap takes its locks in a fixed order
    (the table, then the others by name), so two swaps never wait for each other crosswise."""
    shape: ColumnsShape = ctx.shape
    others = sorted({m.table for m in shape.moved} - {(ctx.table.schema, ctx.table.name)})
    if not others:
        return []
    return [
        sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(t)
        for t in (ctx.table.qualified, *(sql.Identifier(*o) for o in others))
    ]


def _drop_moved(shape: ColumnsShape) -> list[Query]:
    return [
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
            m.owner, sql.Identifier(m.name)
        )
        for m in shape.moved
    ]


def _add_moved(shape: ColumnsShape) -> list[Query]:
    """Added again NOT VALID: checked for every new write at once, without a scan inside the
    swap; `moved_validations` proves the existing rows afterwards."""
    return [
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
            m.owner, sql.Identifier(m.name), sql.SQL(m.definition)
        )
        for m in shape.moved
    ]


def moved_validations(ctx: CompileContext) -> list[SqlStep]:
    """VALIDATE each constraint the swap moved (one scan of its table; reads and writes go on);
    skipped when it is validated already, as it is when the swap never ran."""
    shape: ColumnsShape = ctx.shape
    return [
        SqlStep(
            description=f"validate {m.display} on the columns holding the live names",
            statements=(
                sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                    m.owner, sql.Identifier(m.name)
                ),
            ),
            lock="SHARE UPDATE EXCLUSIVE",
            scans=True,
            done_if=exists_query(
                "SELECT 1 FROM pg_constraint WHERE conname = {} AND conrelid = {}::regclass"
                " AND convalidated",
                m.name,
                m.owner.as_string(),
            ),
            hold=f"one scan of {'.'.join(m.table)} (reads and writes continue)",
        )
        for m in shape.moved
        if m.validated
    ]


def _carried_columns(ctx: CompileContext) -> str:
    """The views and policies the columns swap creates again, for the plan's step list (views
    over those views are carried too, and not listed)."""
    changed = {c.name for c in ctx.shape.changed()}
    views = [
        d.name
        for d in ctx.table.dependents
        if d.kind == "view"
        and changed & set(d.columns)
        and not d.name.startswith(ctx.view_schema + ".")
    ]
    policies = [d.name for d in ctx.table.dependents if d.kind == "policy"]
    moved = [m.display for m in ctx.shape.moved]
    return _carried_text(
        [
            (views, "view(s) {} created again on them"),
            (policies, "row security policy(ies) {} created again"),
            (moved, "{} moved onto them NOT VALID (their other tables locked too)"),
        ]
    )


def _carried_text(parts: list[tuple[Sequence[str], str]]) -> str:
    """` (what; what)` for a swap step's description: each template gets its names, when any."""
    said = [template.format(", ".join(names)) for names, template in parts if names]
    return f" ({'; '.join(said)})" if said else ""


def swap_statements(ctx: CompileContext, turn_trigger: bool = True) -> tuple[Query, ...]:
    """The renames (and what follows them: constraints, NOT NULL, defaults, sequences, carried
    views and policies). With `turn_trigger`, the sync trigger then fills the old columns."""
    shape: ColumnsShape = ctx.shape
    # constraints over the changed columns go first: a foreign key depends on the index of
    # the key it references, which moves below
    out: list[Query] = [
        *_lock_moved(ctx),
        *_carry(ctx),
        *_drop_moved(shape),
    ]
    for ix in shape.indexes:
        if ix.constraint:
            out.append(
                _alter(ctx, sql.SQL("DROP CONSTRAINT {}").format(sql.Identifier(ix.constraint)))
            )
        else:
            out.append(_rename_index(ctx, ix.original.name, ix.old))
        out.append(_rename_index(ctx, ix.shadow, ix.original.name))
        if ix.constraint:
            out.append(_add_constraint(ctx, ix, ix.original.name))
    for col in shape.columns:
        if not col.is_new:
            assert col.old is not None
            if col.old_default is not None:
                out.append(
                    _alter(
                        ctx,
                        sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(sql.Identifier(col.name)),
                    )
                )
            out.append(_rename_column(ctx, col.name, col.old))
        out.append(_rename_column(ctx, col.shadow, col.name))
        if col.not_null:
            out.append(
                _alter(
                    ctx, sql.SQL("ALTER COLUMN {} SET NOT NULL").format(sql.Identifier(col.name))
                )
            )
            out.append(
                _alter(
                    ctx,
                    sql.SQL("DROP CONSTRAINT IF EXISTS {}").format(sql.Identifier(col.check_name)),
                )
            )
        if col.default is not None:
            out.append(
                _alter(
                    ctx,
                    sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(
                        sql.Identifier(col.name), sql.SQL(col.default)
                    ),
                )
            )
        if _sequence_widens(col):
            out.append(
                sql.SQL("ALTER SEQUENCE {} AS {}").format(
                    sql.Identifier(*(col.sequence or ())), sql.SQL(col.type)
                )
            )
        if _sequence_moves(col):
            out.append(
                sql.SQL("ALTER SEQUENCE {} OWNED BY {}").format(
                    sql.Identifier(*(col.sequence or ())),
                    sql.Identifier(ctx.table.schema, ctx.table.name, col.name),
                )
            )
    out += _add_moved(shape)
    if turn_trigger:
        out.append(function_ddl(shape, reverse_body(shape, errors=RowErrorSink.of(ctx))))
    out.append(recreate())
    return tuple(out)


def unswap_statements(ctx: CompileContext) -> tuple[Query, ...]:
    """The inverse of `swap_statements`. Constraints move back first: a column cannot lose
    NOT NULL while a primary key still stands on it."""
    shape: ColumnsShape = ctx.shape
    out: list[Query] = [
        *_lock_moved(ctx),
        *_carry(ctx),
        *_drop_moved(shape),
        function_ddl(shape, forward_body(shape, errors=RowErrorSink.of(ctx))),
    ]
    for ix in reversed(shape.indexes):
        if ix.constraint:
            # the constraint's index on the new column goes with it; backfill's copy is rebuilt
            # by the next cutover if the migration is applied again
            out.append(
                _alter(ctx, sql.SQL("DROP CONSTRAINT {}").format(sql.Identifier(ix.constraint)))
            )
            out.append(_rename_index(ctx, ix.old, ix.original.name))
            out.append(_add_constraint(ctx, ix, ix.original.name))
        else:
            out.append(_rename_index(ctx, ix.original.name, ix.shadow))
            out.append(_rename_index(ctx, ix.old, ix.original.name))
    for col in reversed(shape.columns):
        if _sequence_moves(col):
            assert col.old is not None
            out.append(
                sql.SQL("ALTER SEQUENCE {} OWNED BY {}").format(
                    sql.Identifier(*(col.sequence or ())),
                    sql.Identifier(ctx.table.schema, ctx.table.name, col.old),
                )
            )
        if _sequence_widens(col):
            out.append(
                sql.SQL("ALTER SEQUENCE {} AS {}").format(
                    sql.Identifier(*(col.sequence or ())), sql.SQL(col.sequence_type or "")
                )
            )
        if col.default is not None:
            out.append(
                _alter(
                    ctx, sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(sql.Identifier(col.name))
                )
            )
        if col.not_null:
            out.append(
                _alter(
                    ctx, sql.SQL("ALTER COLUMN {} DROP NOT NULL").format(sql.Identifier(col.name))
                )
            )
        out.append(_rename_column(ctx, col.name, col.shadow))
        if not col.is_new:
            assert col.old is not None
            out.append(_rename_column(ctx, col.old, col.name))
            if col.old_default is not None:
                out.append(
                    _alter(
                        ctx,
                        sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(
                            sql.Identifier(col.name), sql.SQL(col.old_default)
                        ),
                    )
                )
    out += _add_moved(shape)
    out.append(recreate())
    return tuple(out)


def _rename_index(ctx: CompileContext, old: str, new: str) -> Query:
    return sql.SQL("ALTER INDEX {} RENAME TO {}").format(_index(ctx, old), sql.Identifier(new))


def _rename_column(ctx: CompileContext, old: str, new: str) -> Query:
    return _alter(
        ctx, sql.SQL("RENAME COLUMN {} TO {}").format(sql.Identifier(old), sql.Identifier(new))
    )


def _add_constraint(ctx: CompileContext, ix: RebuiltIndex, index_name: str) -> Query:
    assert ix.constraint is not None and ix.original.constraint_type is not None
    return _alter(
        ctx,
        sql.SQL("ADD CONSTRAINT {} {} USING INDEX {}").format(
            sql.Identifier(ix.constraint),
            sql.SQL(CONSTRAINT_KINDS[ix.original.constraint_type]),
            sql.Identifier(index_name),
        ),
    )


def not_null_steps(ctx: CompileContext) -> tuple[list[SqlStep], Query | None]:
    """NOT NULL proven without a long lock: CHECK (... IS NOT NULL) NOT VALID, then VALIDATE
    under a weak lock; the swap then sets NOT NULL without a scan. Also returns the statement
    dropping those checks (None when no column ends NOT NULL)."""
    shape: ColumnsShape = ctx.shape
    not_null = [c for c in shape.columns if c.not_null]
    if not not_null:
        return [], None
    drop_checks = _alter(
        ctx,
        sql.SQL(", ").join(
            sql.SQL("DROP CONSTRAINT IF EXISTS {}").format(sql.Identifier(c.check_name))
            for c in not_null
        ),
    )
    add = SqlStep(
        description="prove NOT NULL without a long lock: CHECK (... IS NOT NULL) NOT VALID",
        statements=tuple(
            _alter(
                ctx,
                sql.SQL("ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID").format(
                    sql.Identifier(c.check_name), sql.Identifier(c.shadow)
                ),
            )
            for c in not_null
        ),
        lock="ACCESS EXCLUSIVE",
        done_if=exists_query(
            "SELECT 1 FROM pg_constraint WHERE conrelid = {}::regclass AND conname = {}",
            ctx.table.regclass,
            not_null[0].check_name,
        ),
    )
    validate = SqlStep(
        description="validate the NOT NULL checks (scans; writes continue)",
        statements=tuple(
            _alter(ctx, sql.SQL("VALIDATE CONSTRAINT {}").format(sql.Identifier(c.check_name)))
            for c in not_null
        ),
        lock="SHARE UPDATE EXCLUSIVE",
        scans=True,
        done_if=swapped_query(ctx),
        hold="one scan of the table (writes continue)",
        # a check left NOT VALID would reject every write whose new value is NULL
        undo_on_failure=(drop_checks,),
    )
    return [add, validate], drop_checks


def analyze_step(ctx: CompileContext) -> SqlStep:
    shape: ColumnsShape = ctx.shape
    return SqlStep(
        description="collect statistics for the new columns",
        statements=(
            sql.SQL("ANALYZE {} ({})").format(
                ctx.table.qualified,
                sql.SQL(", ").join(sql.Identifier(c.shadow) for c in shape.columns),
            ),
        ),
        lock="SHARE UPDATE EXCLUSIVE",
        scans=True,
        done_if=swapped_query(ctx),
        hold="a sample of the table (writes continue)",
    )


def compile_cutover(ctx: CompileContext, index: int, spec: Any) -> Phase:
    if ctx.plan.target == "new_table":
        return _compile_swap(ctx, index)
    shape: ColumnsShape = ctx.shape
    table = ctx.table
    forward, drop_checks = not_null_steps(ctx)
    for ix in shape.indexes:
        if ix.constraint and ix.spare is not None:
            forward.append(
                index_build(
                    f"keep a unique index on the old column(s) for rollback ({ix.old})",
                    ix.spare,
                    (table.schema, ix.old),
                    done_if=swapped_query(ctx),
                )
            )
            forward.append(
                index_build(
                    f"make sure {ix.shadow} exists (a rollback of cutover drops it)",
                    ix.definition,
                    (table.schema, ix.shadow),
                    done_if=swapped_query(ctx),
                    hold="nothing when backfill's index copy exists; else the index build",
                )
            )
    forward.append(analyze_step(ctx))
    forward.append(
        SqlStep(
            description="swap: the new columns take the live names"
            f"{_carried_columns(ctx)}; the trigger now fills the old ones",
            statements=swap_statements(ctx),
            lock="ACCESS EXCLUSIVE",
            done_if=swapped_query(ctx),
            hold="milliseconds (catalog changes only)",
        )
    )
    forward += moved_validations(ctx)
    rollback = [
        SqlStep(
            description="swap back: the old columns take the live names again"
            + _carried_text([([m.display for m in shape.moved], "{} moved back NOT VALID")]),
            statements=unswap_statements(ctx),
            lock="ACCESS EXCLUSIVE",
            done_if=_column_exists(ctx, shape.columns[0].shadow, True),
            hold="milliseconds (catalog changes only)",
        ),
        *moved_validations(ctx),
    ]
    if drop_checks is not None:
        rollback.append(
            SqlStep(
                description="drop the NOT NULL checks",
                statements=(drop_checks,),
                lock="ACCESS EXCLUSIVE",
            )
        )
    for ix in shape.indexes:
        if ix.constraint:
            rollback.append(
                index_drop(
                    f"drop the spare index {ix.old} if cutover stopped before the swap",
                    (table.schema, ix.old),
                )
            )
    return Phase(
        index=index,
        kind="cutover",
        name="cutover",
        forward=tuple(forward),
        rollback=tuple(rollback),
        summary="new columns take the live names in one short transaction; old ones stay in step",
    )


# --- new_table: the new table takes the live name --------------------------------------------


def _regclass_text(schema: str, name: str) -> str:
    return sql.Identifier(schema, name).as_string()


def _feed_statements(shape: TableShape, live: str, old: str, forward: bool) -> list[Query]:
    """Keep the key's sequence feeding whichever table becomes live, so no key is ever reused.
    Serial on both sides: the default and the sequence's ownership move over. An identity on
    the receiving side: its own sequence is moved past the giving one. `live` and `old` name
    the new and the old table at the moment these statements run."""
    schema = shape.old.schema
    out: list[Query] = []
    for feed in shape.feeds:
        column = sql.Identifier(feed.column)

        def sequence_of(on_old: bool, feed: KeyFeed = feed) -> Query:
            identity = feed.live_identity if on_old else feed.new_identity
            if identity:
                table = _regclass_text(schema, old if on_old else live)
                return sql.SQL("pg_get_serial_sequence({}, {})::regclass").format(
                    sql.Literal(table), sql.Literal(feed.column)
                )
            assert feed.sequence is not None
            return sql.SQL("{}::regclass").format(sql.Literal(_regclass_text(*feed.sequence)))

        if feed.new_identity:
            giver, taker = sequence_of(on_old=forward), sequence_of(on_old=not forward)
            out.append(sql.SQL("SELECT setval({}, nextval({}))").format(taker, giver))
            continue
        assert feed.sequence is not None and feed.old_default is not None
        giver_table, taker_table = (old, live) if forward else (live, old)
        sequence = sql.Identifier(*feed.sequence)
        out += [
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(
                sql.Identifier(schema, giver_table), column
            ),
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                sql.Identifier(schema, taker_table), column, sql.SQL(feed.old_default)
            ),
            sql.SQL("ALTER SEQUENCE {} OWNED BY {}").format(
                sequence, sql.Identifier(schema, taker_table, feed.column)
            ),
        ]
        if feed.widen_to:
            narrow = shape.old.columns[feed.column].sequence_type or "integer"
            out.append(
                sql.SQL("ALTER SEQUENCE {} AS {}").format(
                    sequence, sql.SQL(feed.widen_to if forward else narrow)
                )
            )
    return out


def foreign_keys(shape: TableShape) -> tuple[list[Query], list[SqlStep]]:
    """Foreign keys of other tables follow the live name: dropped and added again NOT VALID
    inside the swap (their definitions name the table, which the new one now holds), then
    validated after it under a weak lock."""
    swap: list[Query] = []
    validate: list[SqlStep] = []
    for fk in shape.foreign_keys:
        assert fk.referenced_table is not None  # for these, the table holding the key
        child = sql.Identifier(*(p for p in split_name(fk.referenced_table) if p))
        swap += [
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(child, sql.Identifier(fk.name)),
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
                child, sql.Identifier(fk.name), sql.SQL(fk.definition)
            ),
        ]
        validate.append(
            SqlStep(
                description=f"validate foreign key {fk.name} on {fk.referenced_table}",
                # nothing to do when the swap never happened (or validation already ran)
                done_if=exists_query(
                    "SELECT 1 FROM pg_constraint WHERE conname = {} AND conrelid = {}::regclass"
                    " AND convalidated",
                    fk.name,
                    child.as_string(),
                ),
                statements=(
                    sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                        child, sql.Identifier(fk.name)
                    ),
                ),
                lock="SHARE UPDATE EXCLUSIVE",
                scans=True,
                hold="one scan of the referencing table (writes continue)",
            )
        )
    return swap, validate


def _carried(shape: TableShape) -> str:
    """What the swap carries over besides the table, for the plan's step list."""
    return _carried_text(
        [
            (shape.views, "view(s) {} created again on it"),
            (shape.policies, "row security policy(ies) {} carried over"),
            (shape.old.own_triggers, f"trigger(s) {{}} moved to it (disabled on {shape.old_name})"),
        ]
    )


def analyze_new_table(shape: TableShape, done_if: Query) -> SqlStep:
    return SqlStep(
        description=f"collect statistics for {shape.new.display}",
        statements=(sql.SQL("ANALYZE {}").format(shape.new.qualified),),
        lock="SHARE UPDATE EXCLUSIVE",
        scans=True,
        done_if=done_if,
        hold="a sample of the table (writes continue)",
    )


def table_swap_statements(ctx: CompileContext, fk_swap: list[Query]) -> list[Query]:
    """The new table takes the live name, the old one `old_name`; what reads the live name
    (views, policies, the table's own triggers, other tables' foreign keys) and the key's
    sequence follow. The caller ends the transaction with `recreate()`."""
    shape: TableShape = ctx.shape
    old, new = shape.old, shape.new
    return [
        # views and policies follow the name, not the table: recorded and dropped here,
        # created again once the names are swapped
        drop_policies(new.qualified),
        capture_and_drop(
            old.qualified,
            ctx.view_schema,
            copy_policies=True,
            triggers=TriggerMove(sql.Identifier(old.schema, shape.old_name), drop=False),
        ),
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            old.qualified, sql.Identifier(shape.old_name)
        ),
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(new.qualified, sql.Identifier(old.name)),
        *_feed_statements(shape, old.name, shape.old_name, forward=True),
        *fk_swap,
    ]


def _compile_swap(ctx: CompileContext, index: int) -> Phase:
    shape: TableShape = ctx.shape
    old, new = shape.old, shape.new
    schema = old.schema
    fk_swap, fk_validate = foreign_keys(shape)
    live_after = sql.Identifier(schema, old.name)
    old_after = sql.Identifier(schema, shape.old_name)
    old_exists = exists_query(
        "SELECT 1 WHERE to_regclass({}) IS NOT NULL", _regclass_text(schema, shape.old_name)
    )
    old_gone = exists_query(
        "SELECT 1 WHERE to_regclass({}) IS NULL", _regclass_text(schema, shape.old_name)
    )
    swap = SqlStep(
        description=f"swap: {new.display} takes the name {old.name}{_carried(shape)}; writes"
        f" now flow back to {shape.old_name}",
        statements=(
            *drop_copy_triggers(shape.forward_trigger, old.qualified),
            *table_swap_statements(ctx, fk_swap),
            *reverse_copy(shape, live_after, old_after, errors=RowErrorSink.of(ctx)),
            recreate(),
        ),
        lock="ACCESS EXCLUSIVE",
        done_if=old_exists,
        hold="milliseconds (catalog changes only)",
    )
    unswap = SqlStep(
        description=f"swap back: {shape.old_name} takes the name {old.name} again, with every"
        " write made since cutover",
        statements=(
            *drop_copy_triggers(shape.reverse_trigger, live_after),
            *_feed_statements(shape, old.name, shape.old_name, forward=False),
            # the old table kept its own policies; what reads the live name follows it back
            capture_and_drop(
                live_after,
                ctx.view_schema,
                copy_policies=False,
                triggers=TriggerMove(new.qualified, drop=True),
            ),
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(live_after, sql.Identifier(new.name)),
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(old_after, sql.Identifier(old.name)),
            *fk_swap,
            *forward_copy(shape, errors=RowErrorSink.of(ctx)),
            recreate(),
        ),
        lock="ACCESS EXCLUSIVE",
        done_if=old_gone,
        hold="milliseconds (catalog changes only)",
    )
    analyze = analyze_new_table(shape, done_if=old_exists)
    return Phase(
        index=index,
        kind="cutover",
        name="cutover",
        forward=(analyze, swap, *fk_validate),
        rollback=(unswap, *fk_validate),
        summary=f"{new.display} takes the name {old.name} in one short transaction; the old table"
        " stays in step through the reverse trigger",
    )
