"""The delete fence of a table copy: how a batch copies rows without locking them, and still
never leaves behind a row the application deleted.

The race. A batch inserts into the new table the rows its snapshot shows in the live table. A
DELETE (or key-changing UPDATE) that commits after that snapshot runs the copy trigger, whose
DELETE on the new table cannot see the batch's copy while the batch is in progress: once the
batch commits, its copy of the deleted row stays, a ghost. Locking every copied row (`FOR KEY
SHARE`) closes the race, but costs a WAL record and a dirtied page per row: about 30% of the
copy's time.

The fence closes it at the end of each batch instead, for all its rows at once:

- the copy trigger, before it deletes a copy (DELETE, key-changing UPDATE), calls the state
  schema's `copy_delete_fence(table)`: a shared transaction-level advisory lock on the live
  table, then one step of the counter `copy_deletes`;
- each batch, after its INSERT and before it commits, calls `copy_batch_fence(table)`: the same
  lock exclusively, then the counter. When the counter moved since this worker's previous
  fence, the batch deletes, from its own key range of the new table, every row whose key the
  live table no longer has (the sweep), in a statement whose snapshot follows the lock.

Why no ghost is left. Take a deleter D whose delete the batch's snapshot did not see and whose
copy trigger did not see the batch's copy, so it ran before the batch committed. D took the
shared lock before that, and holds it until it ends. If D took it before the batch's fence
lock, the fence lock waited for D to end, so D's counter step is counted and the sweep sees D's
delete committed: the ghost is swept. D cannot take it after the fence lock, which the batch
holds until it commits. And D's counter step came after the worker's previous fence: that one
held the lock exclusively, so a deleter still running then took its lock (and stepped the
counter) after it. When the counter has not moved, no such D exists and the sweep is skipped:
the common case costs one function call per batch.

The fence lock is never queued: it is tried, with short sleeps, until lock_timeout, and a batch
that cannot get it rolls back and is retried like any lock wait. So a deleter never queues
behind a batch, and a deleter that itself waits on the batch (its copy trigger inserting a key
the batch has just inserted) cannot deadlock with it. Deletes wait only for a batch's last
moments: the sweep, if any, and its commit.

The sweep finds the live row by the new table's key, so the fence serves the copies whose new
key is the live key as it is (`TableShape.copies_key`). In versions mode the new version's
deletes reach the live table through the copy-back trigger, not through the copy trigger that
calls the fence. Those copies still lock their rows.
A copy trigger installed by a pgshift without the fence (a migration begun before it) does not
take the shared lock, so its backfill locks its rows too (`DeleteFence.installed`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from psycopg import sql

from pgshift.db import Query
from pgshift.phases.table_shape import TableShape


@dataclass(frozen=True)
class DeleteFence:
    installed: Query  # true when the live table's copy trigger calls the fence
    close: Query  # parameter: timeout in ms -> the deletes counter, under the exclusive lock
    sweep: Callable[[Query], Query]  # the batch's key condition -> DELETE of its ghosts


def trigger_call(state_schema: str) -> str:
    """The copy trigger's statement before it deletes a copy."""
    function = sql.Identifier(state_schema, "copy_delete_fence").as_string()
    return f"PERFORM {function}(TG_RELID);\n"


def fenced(shape: TableShape, *, versions: bool) -> bool:
    """Whether the copy into `shape.new` has a delete fence: its key is the live key, and no
    new version deletes from the live table through the copy-back trigger (versions mode),
    which the fence does not see."""
    return shape.copies_key and not versions


def delete_fence(shape: TableShape, state_schema: str, *, versions: bool) -> DeleteFence | None:
    """The fence of a copy into `shape.new`, or None when it has none (see `fenced`)."""
    if not fenced(shape, versions=versions):
        return None
    live = sql.Literal(shape.old.qualified.as_string())
    copy, row = sql.Identifier("pgshift_copy"), sql.Identifier("pgshift_live")
    match = sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(row, sql.Identifier(c), copy, sql.Identifier(c))
        for c in shape.new_key
    )

    def sweep(condition: Query) -> Query:
        # the condition's bare key columns are the new table's: the only table in scope
        return sql.SQL(
            "DELETE FROM {new} AS {copy} WHERE {condition}"
            " AND NOT EXISTS (SELECT FROM {old} AS {row} WHERE {match})"
        ).format(
            new=shape.new.qualified,
            copy=copy,
            condition=condition,
            old=shape.old.qualified,
            row=row,
            match=match,
        )

    return DeleteFence(
        installed=sql.SQL(
            "SELECT coalesce((SELECT p.prosrc LIKE '%copy_delete_fence%' FROM pg_proc p"
            " WHERE p.oid = to_regprocedure({})), false)"
        ).format(sql.Literal(shape.forward_function.as_string() + "()")),
        close=sql.SQL("SELECT {}({}::regclass, %s)").format(
            sql.Identifier(state_schema, "copy_batch_fence"), live
        ),
        sweep=sweep,
    )
