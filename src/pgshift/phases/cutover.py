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
from dataclasses import dataclass, replace
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
from pgshift.phases.columns_shape import (
    ColumnsShape,
    MovedConstraint,
    RebuiltIndex,
    ShadowColumn,
)
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


def _drop_moved(moved: Sequence[MovedConstraint]) -> list[Query]:
    return [
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
            m.owner, sql.Identifier(m.name)
        )
        for m in moved
    ]


def _add_moved(moved: Sequence[MovedConstraint]) -> list[Query]:
    """Added again NOT VALID: checked for every new write at once, without a scan inside the
    swap; `moved_validations` proves the existing rows afterwards."""
    return [
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
            m.owner, sql.Identifier(m.name), sql.SQL(m.definition)
        )
        for m in moved
    ]


def _once(moved: Sequence[MovedConstraint]) -> list[MovedConstraint]:
    """Each constraint once: a foreign key between two tables of one plan is moved for both
    (their catalogs may name its table with or without its schema)."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for m in moved:
        key = (m.name, m.table[-1], m.definition)
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


def moved_validations(ctx: CompileContext) -> list[SqlStep]:
    """VALIDATE each constraint the swap moved (one scan of its table; reads and writes go on);
    skipped when it is validated already, as it is when the swap never ran."""
    return _validations(ctx.shape.moved)


def _validations(moved: Sequence[MovedConstraint]) -> list[SqlStep]:
    return [
        SqlStep(
            description=f"validate {m.display}, moved by the swap",
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
        for m in moved
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


@dataclass(frozen=True)
class SwapPieces:
    """One table's swap (or swap back) in the pieces a swap of several tables interleaves:
    every table's moved constraints are dropped before any rename and added again after the
    last, since a foreign key between two of them names columns both renames move."""

    locked: tuple[tuple[str, ...], ...]  # the tables it locks: its own, then the others
    moved: tuple[MovedConstraint, ...]  # dropped first, added again NOT VALID after the renames
    carry: tuple[Query, ...]  # views and policies recorded and dropped
    renames: tuple[Query, ...]
    tail: tuple[Query, ...]  # the trigger turned round, the carried objects created again

    def statements(self, lock: tuple[Query, ...]) -> tuple[Query, ...]:
        """One table's swap on its own, after `lock`."""
        return (
            *lock,
            *self.carry,
            *_drop_moved(_once(self.moved)),
            *self.renames,
            *_add_moved(_once(self.moved)),
            *self.tail,
        )


def lock_statements(ctx: CompileContext) -> tuple[Query, ...]:
    return tuple(_lock_moved(ctx))


def swap_statements(ctx: CompileContext, turn_trigger: bool = True) -> tuple[Query, ...]:
    """The renames (and what follows them: constraints, NOT NULL, defaults, sequences, carried
    views and policies). With `turn_trigger`, the sync trigger then fills the old columns."""
    return swap_pieces(ctx, turn_trigger).statements(lock_statements(ctx))


def _locked(ctx: CompileContext) -> tuple[tuple[str, ...], ...]:
    shape: ColumnsShape = ctx.shape
    own = (ctx.table.schema, ctx.table.name)
    return (own, *sorted({m.table for m in shape.moved} - {own}))


def swap_pieces(ctx: CompileContext, turn_trigger: bool = True) -> SwapPieces:
    """`swap_statements` in pieces."""
    shape: ColumnsShape = ctx.shape
    # constraints over the changed columns go first: a foreign key depends on the index of
    # the key it references, which moves below
    out: list[Query] = []
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
    tail: list[Query] = []
    if turn_trigger:
        tail.append(function_ddl(shape, reverse_body(shape, errors=RowErrorSink.of(ctx))))
    tail.append(recreate())
    return SwapPieces(
        locked=_locked(ctx),
        moved=shape.moved,
        carry=tuple(_carry(ctx)),
        renames=tuple(out),
        tail=tuple(tail),
    )


def unswap_statements(ctx: CompileContext) -> tuple[Query, ...]:
    """The inverse of `swap_statements`. Constraints move back first: a column cannot lose
    NOT NULL while a primary key still stands on it."""
    return unswap_pieces(ctx).statements(lock_statements(ctx))


def unswap_pieces(ctx: CompileContext) -> SwapPieces:
    """`unswap_statements` in pieces."""
    shape: ColumnsShape = ctx.shape
    out: list[Query] = [function_ddl(shape, forward_body(shape, errors=RowErrorSink.of(ctx)))]
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
    return SwapPieces(
        locked=_locked(ctx),
        moved=shape.moved,
        carry=tuple(_carry(ctx)),
        renames=tuple(out),
        tail=(recreate(),),
    )


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


@dataclass(frozen=True)
class _Around:
    """A `columns` table's cutover around its swap: the slow steps before it, the validations
    after it, and after the swap back what rollback takes away."""

    before: tuple[SqlStep, ...]
    after: tuple[SqlStep, ...]
    undo_after: tuple[SqlStep, ...]


def _around(ctx: CompileContext) -> _Around:
    shape: ColumnsShape = ctx.shape
    table = ctx.table
    before, drop_checks = not_null_steps(ctx)
    for ix in shape.indexes:
        if ix.constraint and ix.spare is not None:
            before.append(
                index_build(
                    f"keep a unique index on the old column(s) for rollback ({ix.old})",
                    ix.spare,
                    (table.schema, ix.old),
                    done_if=swapped_query(ctx),
                )
            )
            before.append(
                index_build(
                    f"make sure {ix.shadow} exists (a rollback of cutover drops it)",
                    ix.definition,
                    (table.schema, ix.shadow),
                    done_if=swapped_query(ctx),
                    hold="nothing when backfill's index copy exists; else the index build",
                )
            )
    before.append(analyze_step(ctx))
    undo_after: list[SqlStep] = []
    if drop_checks is not None:
        undo_after.append(
            SqlStep(
                description="drop the NOT NULL checks",
                statements=(drop_checks,),
                lock="ACCESS EXCLUSIVE",
            )
        )
    for ix in shape.indexes:
        if ix.constraint:
            undo_after.append(
                index_drop(
                    f"drop the spare index {ix.old} if cutover stopped before the swap",
                    (table.schema, ix.old),
                )
            )
    return _Around(
        before=tuple(before), after=tuple(moved_validations(ctx)), undo_after=tuple(undo_after)
    )


def compile_cutover(ctx: CompileContext, index: int, spec: Any) -> Phase:
    if ctx.plan.target == "new_table":
        return _compile_swap(ctx, index)
    shape: ColumnsShape = ctx.shape
    around = _around(ctx)
    swap = SqlStep(
        description="swap: the new columns take the live names"
        f"{_carried_columns(ctx)}; the trigger now fills the old ones",
        statements=swap_statements(ctx),
        lock="ACCESS EXCLUSIVE",
        done_if=swapped_query(ctx),
        hold="milliseconds (catalog changes only)",
    )
    unswap = SqlStep(
        description="swap back: the old columns take the live names again"
        + _carried_text([([m.display for m in shape.moved], "{} moved back NOT VALID")]),
        statements=unswap_statements(ctx),
        lock="ACCESS EXCLUSIVE",
        done_if=_column_exists(ctx, shape.columns[0].shadow, True),
        hold="milliseconds (catalog changes only)",
    )
    return Phase(
        index=index,
        kind="cutover",
        name="cutover",
        forward=(*around.before, swap, *around.after),
        rollback=(unswap, *around.after, *around.undo_after),
        summary="new columns take the live names in one short transaction; old ones stay in step",
    )


def _several(pieces: Sequence[SwapPieces], reverse: bool) -> tuple[Query, ...]:
    """One transaction for the swaps (or swaps back) of several tables: every table locked
    first, in one fixed order (by name); the moved constraints dropped before any rename and
    added again after the last; each table's own renames in between."""
    tables = sorted({t for p in pieces for t in p.locked}, key=lambda t: (t[-1], t))
    moved = _once([m for p in pieces for m in p.moved])
    ordered = list(reversed(pieces)) if reverse else list(pieces)
    return (
        *(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(*t))
            for t in tables
        ),
        *_drop_moved(moved),
        *(q for p in ordered for q in (*p.carry, *p.renames, *p.tail)),
        *_add_moved(moved),
    )


@dataclass(frozen=True)
class _Part:
    """One table's share of a cutover of several: around the one swap, and its pieces."""

    around: _Around
    swap: SwapPieces
    unswap: SwapPieces
    swapped: Query  # true once the swap committed
    unswapped: Query  # true once it is undone (or never happened)


def _part(ctx: CompileContext) -> _Part:
    if ctx.plan.target == "new_table":
        shape: TableShape = ctx.shape
        done = _table_swapped(shape, True)
        return _Part(
            _Around(before=(analyze_new_table(shape, done_if=done),), after=(), undo_after=()),
            table_swap_pieces(ctx),
            table_unswap_pieces(ctx),
            done,
            _table_swapped(shape, False),
        )
    columns: ColumnsShape = ctx.shape
    return _Part(
        _around(ctx),
        swap_pieces(ctx),
        unswap_pieces(ctx),
        swapped_query(ctx),
        _column_exists(ctx, columns.columns[0].shadow, True),
    )


def compile_several_cutovers(ctxs: Sequence[CompileContext], index: int) -> Phase:
    """The cutover of several tables (each `columns` or `new_table`): each table's slow steps,
    then ONE swap transaction for all of them, then the validations; its rollback swaps all of
    them back in one transaction too."""
    parts = [_part(ctx) for ctx in ctxs]
    names = ", ".join(ctx.table.display for ctx in ctxs)
    moved = _once([m for p in parts for m in p.swap.moved])
    shown = [m.display for m in moved]

    def named(steps: Sequence[SqlStep], ctx: CompileContext) -> list[SqlStep]:
        return [replace(s, description=f"{ctx.table.display}: {s.description}") for s in steps]

    swap = SqlStep(
        description=f"swap: the new shapes of {names} take the live names in one transaction"
        + _carried_text([(shown, "{} moved onto them NOT VALID")])
        + "; the triggers now keep the old shapes in step",
        statements=_several([p.swap for p in parts], reverse=False),
        lock="ACCESS EXCLUSIVE",
        done_if=parts[0].swapped,
        hold="milliseconds (catalog changes only)",
    )
    unswap = SqlStep(
        description=f"swap back: the old shapes of {names} take the live names again in one"
        " transaction" + _carried_text([(shown, "{} moved back NOT VALID")]),
        statements=_several([p.unswap for p in parts], reverse=True),
        lock="ACCESS EXCLUSIVE",
        done_if=parts[0].unswapped,
        hold="milliseconds (catalog changes only)",
    )
    after = _validations(moved)
    return Phase(
        index=index,
        kind="cutover",
        name="cutover",
        forward=(
            *(s for p, ctx in zip(parts, ctxs, strict=True) for s in named(p.around.before, ctx)),
            swap,
            *after,
        ),
        rollback=(
            unswap,
            *after,
            *(
                s
                for p, ctx in reversed(list(zip(parts, ctxs, strict=True)))
                for s in named(p.around.undo_after, ctx)
            ),
        ),
        summary=f"the new shapes of {names} take the live names in one short transaction;"
        " the old ones stay in step",
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


def _table_moved(shape: TableShape) -> tuple[MovedConstraint, ...]:
    """Other tables' foreign keys on the live table, which follow its name: dropped before the
    renames and added again NOT VALID after them (their definitions name the table, which the
    new one then holds), then validated under a weak lock."""
    return tuple(
        MovedConstraint(
            fk.name,
            tuple(p for p in split_name(fk.referenced_table or "") if p),
            fk.definition.removesuffix(" NOT VALID"),
            "f",
            fk.validated,
        )
        for fk in shape.foreign_keys
    )


def _table_locked(shape: TableShape) -> tuple[tuple[str, ...], ...]:
    old, new = shape.old, shape.new
    own = ((old.schema, old.name), (new.schema, new.name))
    return (*own, *sorted({m.table for m in _table_moved(shape)} - set(own)))


def table_swap_pieces(ctx: CompileContext) -> SwapPieces:
    """The new table takes the live name (see `table_swap_statements`), in pieces."""
    shape: TableShape = ctx.shape
    old, new = shape.old, shape.new
    live_after = sql.Identifier(old.schema, old.name)
    old_after = sql.Identifier(old.schema, shape.old_name)
    return SwapPieces(
        locked=_table_locked(shape),
        moved=_table_moved(shape),
        carry=(
            *drop_copy_triggers(shape.forward_trigger, old.qualified),
            # views and policies follow the name, not the table: recorded and dropped here,
            # created again once the names are swapped
            drop_policies(new.qualified),
            capture_and_drop(
                old.qualified,
                ctx.view_schema,
                copy_policies=True,
                triggers=TriggerMove(old_after, drop=False),
            ),
        ),
        renames=(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                old.qualified, sql.Identifier(shape.old_name)
            ),
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(new.qualified, sql.Identifier(old.name)),
            *_feed_statements(shape, old.name, shape.old_name, forward=True),
        ),
        tail=(
            *reverse_copy(shape, live_after, old_after, errors=RowErrorSink.of(ctx)),
            recreate(),
        ),
    )


def table_unswap_pieces(ctx: CompileContext) -> SwapPieces:
    """The old table takes the live name again, in pieces."""
    shape: TableShape = ctx.shape
    old, new = shape.old, shape.new
    live_after = sql.Identifier(old.schema, old.name)
    old_after = sql.Identifier(old.schema, shape.old_name)
    # the tables as they are named after the swap: the new one live, the old one aside
    after = ((old.schema, old.name), (old.schema, shape.old_name))
    return SwapPieces(
        locked=(*after, *_table_locked(shape)[2:]),
        moved=_table_moved(shape),
        carry=(
            *drop_copy_triggers(shape.reverse_trigger, live_after),
            *_feed_statements(shape, old.name, shape.old_name, forward=False),
            # the old table kept its own policies; what reads the live name follows it back
            capture_and_drop(
                live_after,
                ctx.view_schema,
                copy_policies=False,
                triggers=TriggerMove(new.qualified, drop=True),
            ),
        ),
        renames=(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(live_after, sql.Identifier(new.name)),
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(old_after, sql.Identifier(old.name)),
        ),
        tail=(
            *forward_copy(shape, errors=RowErrorSink.of(ctx), state_schema=ctx.state_schema),
            recreate(),
        ),
    )


def _table_swapped(shape: TableShape, swapped: bool) -> Query:
    """True once the swap committed (`swapped`), or once it is undone."""
    name = _regclass_text(shape.old.schema, shape.old_name)
    test = "IS NOT NULL" if swapped else "IS NULL"
    return exists_query("SELECT 1 WHERE to_regclass({}) " + test, name)


def _compile_swap(ctx: CompileContext, index: int) -> Phase:
    shape: TableShape = ctx.shape
    old, new = shape.old, shape.new
    swap = SqlStep(
        description=f"swap: {new.display} takes the name {old.name}{_carried(shape)}; writes"
        f" now flow back to {shape.old_name}",
        statements=table_swap_pieces(ctx).statements(()),
        lock="ACCESS EXCLUSIVE",
        done_if=_table_swapped(shape, True),
        hold="milliseconds (catalog changes only)",
    )
    unswap = SqlStep(
        description=f"swap back: {shape.old_name} takes the name {old.name} again, with every"
        " write made since cutover",
        statements=table_unswap_pieces(ctx).statements(()),
        lock="ACCESS EXCLUSIVE",
        done_if=_table_swapped(shape, False),
        hold="milliseconds (catalog changes only)",
    )
    analyze = analyze_new_table(shape, done_if=_table_swapped(shape, True))
    validate = _validations(_table_moved(shape))
    return Phase(
        index=index,
        kind="cutover",
        name="cutover",
        forward=(analyze, swap, *validate),
        rollback=(unswap, *validate),
        summary=f"{new.display} takes the name {old.name} in one short transaction; the old table"
        " stays in step through the reverse trigger",
    )
