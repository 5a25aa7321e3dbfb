"""backfill: fill the new shape for the rows that existed before dual-write, in key order.

Keyset batches: the batch's upper key is found with a bounded index walk from the previous
batch's last key, then one UPDATE covers exactly that key range. The batch and its checkpoint
commit in one transaction (engine/backfill_runner.py), so a crash never loses or repeats a row.
Rows written by the application meanwhile are already right: the dual-write trigger fills them,
and the batch's UPDATE waits for, then re-reads, any row a writer holds.

Then the indexes that were left until the rows are in are built CONCURRENTLY, one step each:
the shadow columns' index copies (`columns`), the plain indexes of `create` (`new_table`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from psycopg import sql

from pgshift.db import Query
from pgshift.phases.base import (
    BackfillStep,
    CompileContext,
    Phase,
    SqlStep,
    exists_query,
    index_build,
)
from pgshift.phases.columns_shape import ColumnsShape
from pgshift.phases.delete_fence import DeleteFence, delete_fence
from pgshift.phases.dual_write import BACKFILL_SETTING
from pgshift.phases.keys import bounds_queries, key_range
from pgshift.phases.table_shape import TableShape
from pgshift.plan.check import deferred_indexes


@dataclass(frozen=True)
class CopyStep(BackfillStep):
    """A table copy's batches: `statement` is the fast form, without ON CONFLICT; a batch it
    fails on with a unique violation runs again, whole, as `on_conflict` (the runner). With a
    `fence` the forms read the live rows without locking them and the fence runs after each
    batch has committed (phases/delete_fence.py); `unfenced` is the step with row locks
    instead, for a copy trigger installed without the fence and for the batches run while
    deletes keep the fence's sweeps costly."""

    on_conflict: Callable[[Query], Query] | None = None
    fence: DeleteFence | None = None
    unfenced: CopyStep | None = None


def _copy_step(ctx: CompileContext) -> CopyStep:
    """new_table: INSERT ... SELECT per key range, closed by the delete fence.

    The delete race (a row the application deletes while a batch copies it) is closed by the
    fence: phases/delete_fence.py. A copy whose new key is not the live key as it is has no
    fence; its batches lock the rows they copy (FOR KEY SHARE) instead: a concurrent DELETE of
    a row being copied waits for the batch and its trigger then deletes the copy, or it
    committed first and the locking read skips the row.

    A copy the trigger wrote is always newer and must win. The safe form says so with ON
    CONFLICT DO NOTHING, but speculative insertion costs about as much per row as the insert
    itself, and conflicts are rare: the trigger only writes rows the application changes. So
    each batch first runs the fast form: a plain INSERT that skips, by NOT EXISTS, the copies
    committed before its snapshot. A copy committed after that, or still in progress, meets the
    plain insert in the new key's unique index: the insert waits for its writer and, if that
    commits, fails with a unique violation; the batch's transaction (its checkpoint with it)
    rolls back and the runner runs the same range again in the safe form. So no copy is ever
    overwritten, and no row is written twice. The safe form's conflict target is the new
    table's key, the only conflict that means "copied already": a row that breaks another unique
    index of the new table fails the fast form, then the safe one, and stops the backfill
    instead of being skipped."""
    shape: TableShape = ctx.shape
    fence = delete_fence(shape, ctx.state_schema, versions=ctx.versions)
    locked = _copy_forms(ctx, lock=True)
    if fence is None:
        return locked
    return replace(
        _copy_forms(ctx, lock=False),
        fence=fence,
        unfenced=locked,
        lock="ACCESS SHARE",
        hold="one batch (batch_time); the copied rows stay updatable and deletable (deletes"
        " wait only while the delete fence after a batch runs)",
    )


def _copy_forms(ctx: CompileContext, *, lock: bool) -> CopyStep:
    """The copy's batches, reading the live rows FOR KEY SHARE when `lock`."""
    shape: TableShape = ctx.shape
    table = ctx.table
    k = key_range(table, shape.key)
    after, first = bounds_queries(table, shape.key)
    locking = sql.SQL(" FOR KEY SHARE" if lock else "")
    common = {
        "new": shape.new.qualified,
        "columns": shape.forward_columns(),
        "overriding": sql.SQL(" OVERRIDING SYSTEM VALUE" if shape.overriding else ""),
        "old": table.qualified,
        "locking": locking,
    }

    def safe(condition: Query) -> Query:
        return sql.SQL(
            "INSERT INTO {new} ({columns}){overriding} SELECT {values} FROM {old} WHERE {condition}"
            "{locking} ON CONFLICT ({key}) DO NOTHING"
        ).format(
            key=sql.SQL(", ").join(sql.Identifier(c) for c in shape.new_key),
            values=shape.forward_select(),
            condition=condition,
            **common,
        )

    # The fast form needs the new key to be the live key copied as it is (the usual case):
    # then the NOT EXISTS looks only at the batch's own key range of the new table, as the same
    # condition in the subquery names the new table's key columns (the inner scope comes first).
    # Otherwise every batch runs in the safe form.
    # The mapped rows as a derived table, so the NOT EXISTS compares the new table's key with
    # the copied one: the plan's expressions use bare column names, which inside a subquery
    # over the new table would mean its columns.
    row, copy = sql.Identifier("pgshift_row"), sql.Identifier("pgshift_copy")
    named = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(sql.SQL(e), sql.Identifier(c)) for c, e in shape.forward.items()
    )
    match = sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(copy, sql.Identifier(c), row, sql.Identifier(c))
        for c in shape.new_key
    )

    def fast(condition: Query) -> Query:
        return sql.SQL(
            "INSERT INTO {new} ({columns}){overriding} SELECT {picked} FROM"
            " (SELECT {named} FROM {old} WHERE {condition}{locking}) AS {row}"
            " WHERE NOT EXISTS (SELECT FROM {new} AS {copy} WHERE {condition} AND {match})"
        ).format(
            picked=sql.SQL(", ").join(
                sql.SQL("{}.{}").format(row, sql.Identifier(c)) for c in shape.forward
            ),
            named=named,
            condition=condition,
            row=row,
            copy=copy,
            match=match,
            **common,
        )

    return CopyStep(
        description=f"copy the rows into {shape.new.display}, one key range per batch",
        table=table.qualified,
        key=shape.key,
        statement=fast if shape.copies_key else safe,
        on_conflict=safe if shape.copies_key else None,
        key_columns=k["cols"],
        key_params=k["params"],
        key_types=tuple(table.columns[c].type for c in shape.key),
        bounds=after,
        first_bounds=first,
        # a copy-back trigger on the new table (versions mode) skips the copy's own rows
        session_settings=((BACKFILL_SETTING, "on"),),
        # the live table is only read, its rows key-share locked (ROW EXCLUSIVE is on the new one)
        lock="ROW SHARE",
        hold="one batch (batch_time); the copied rows stay updatable, not deletable",
    )


def _index_builds(ctx: CompileContext) -> list[SqlStep]:
    """new_table: the plain indexes of `create` that expand left out, each built CONCURRENTLY
    now that the rows are in: one sort each, instead of one index insertion per copied row.
    The writes the copy trigger makes meanwhile go on (SHARE UPDATE EXCLUSIVE on the new table
    only). An interrupted build's INVALID leftover is dropped and built again; a finished one,
    valid under its name on the new table, is not built twice."""
    shape: TableShape = ctx.shape
    new = shape.new
    return [
        index_build(
            f"build {deferred.name} on {new.display} from `create`, now that the rows are in",
            sql.SQL(deferred.definition),  # the plan's own DDL, as expand would have run it
            (new.schema, deferred.name),
            done_if=exists_query(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE i.indrelid = to_regclass({}) AND c.relname = {} AND i.indisvalid",
                new.regclass,
                deferred.name,
            ),
            hold="the index build, on the new table only (writes continue)",
        )
        for deferred in deferred_indexes(ctx.plan)
    ]


def _workers(ctx: CompileContext, spec: Any) -> str:
    """How the batches are spread, for the phase's summary."""
    workers = spec.workers or ctx.plan.settings.workers
    return f" by {workers} workers (key ranges split up front)" if workers > 1 else ""


def compile_backfill(ctx: CompileContext, index: int, spec: Any) -> Phase:
    options = {k: v for k, v in spec.model_dump().items() if k != "kind" and v is not None}
    if ctx.plan.target == "new_table":
        builds = _index_builds(ctx)
        summary = (
            f"copy ~{max(ctx.table.row_estimate, 0):,} rows in key order, in batches"
            + _workers(ctx, spec)
        )
        if builds:
            summary += f", then build {len(builds)} index(es) of `create` concurrently"
        return Phase(
            index=index,
            kind="backfill",
            name="backfill",
            forward=(_copy_step(ctx), *builds),
            rollback=(),
            summary=summary,
            options=options,
        )
    shape: ColumnsShape = ctx.shape
    table = ctx.table
    k = key_range(table, shape.key)
    update = sql.SQL("UPDATE {} SET {}").format(
        table.qualified,
        sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(c.shadow), sql.SQL(c.up))
            for c in shape.columns
        ),
    )
    after, first = bounds_queries(table, shape.key)
    step = BackfillStep(
        description="fill the shadow columns from `up`, one key range per batch",
        table=table.qualified,
        key=shape.key,
        statement=lambda condition: sql.SQL("{} WHERE {}").format(update, condition),
        key_columns=k["cols"],
        key_params=k["params"],
        key_types=tuple(table.columns[c].type for c in shape.key),
        bounds=after,
        first_bounds=first,
        session_settings=((BACKFILL_SETTING, "on"),),
    )
    rows = table.row_estimate
    return Phase(
        index=index,
        kind="backfill",
        name="backfill",
        forward=(
            step,
            # built once the rows are filled: one sort each, instead of one index insertion per
            # backfilled row; in place before verify, shadow reads and cutover need them
            *(
                index_build(
                    f"build {rebuilt.original.name} again on the shadow columns",
                    rebuilt.definition,
                    (table.schema, rebuilt.shadow),
                )
                for rebuilt in shape.indexes
            ),
        ),
        rollback=(),
        summary=f"update ~{max(rows, 0):,} rows in key order, in batches{_workers(ctx, spec)},"
        " then build"
        f" {len(shape.indexes)} index copy(ies) on the shadow columns concurrently",
        options={k: v for k, v in spec.model_dump().items() if k != "kind" and v is not None},
    )
