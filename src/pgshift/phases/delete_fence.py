"""The delete fence of a table copy: how a batch copies rows without locking them, and still
never leaves behind a row the application deleted.

The race. A batch inserts into the new table the rows its snapshot shows in the live table. A
DELETE (or key-changing UPDATE) that commits after that snapshot runs the copy trigger, whose
DELETE on the new table cannot see the batch's copy while the batch is in progress: once the
batch commits, its copy of the deleted row stays, a ghost. Locking every copied row (`FOR KEY
SHARE`) closes the race, but costs a WAL record and a dirtied page per row: about 30% of the
copy's time.

The fence closes it once each batch has committed, for all its rows at once:

- the copy trigger, before it deletes a copy (DELETE, key-changing UPDATE), calls the state
  schema's `copy_delete_fence(table)`: a shared transaction-level advisory lock on the live
  table, then one step of the counter `copy_deletes`;
- after each batch commits, a transaction of its own (the fence) calls
  `copy_batch_fence(table)`: the same lock exclusively, then the counter, and commits, so the
  lock is held for an instant. When the counter moved since this walk's previous fence, the
  sweep, a transaction after it, deletes from the batch's key range of the new table every row
  whose key the live table no longer has.

The sweep takes two statements: the first locks the candidates (copies whose live row its
snapshot does not show) FOR UPDATE, waiting for a writer that holds one; the second, with a
snapshot taken after those waits, deletes the locked candidates that still have no live row.
In one statement a copy that a writer inserting the key again had just updated would be
re-checked against the old snapshot of the live table after that writer committed, and
deleted; a writer that reaches a locked candidate later waits for the sweep, and its copy
trigger then inserts the copy again.

Why no ghost is left. Take a deleter D whose delete the batch's snapshot did not see and whose
copy trigger did not see the batch's copy, so it ran before the batch committed. D took the
shared lock before that, so before the fence's lock, and holds it until it ends: the fence's
lock waited for D to end, and the sweep, after it, sees D's delete committed. A deleter that
takes the shared lock after the fence's lock needs no sweep: the batch had committed, and its
copy trigger deletes the batch's copy itself. D's counter step came after
the walk's previous fence (which ended before the batch's snapshot): that fence held the lock
exclusively, so a deleter still running then took its lock, and stepped the counter, after it.
When the counter has not moved, no such D exists and the sweep is skipped: a table nobody
deletes from pays one short transaction per batch.

Between the batch's commit and its fence the ghosts are committed, but nothing reads the new
table before the backfill has ended. A crash in between leaves the fence to do: the batch's
checkpoint names its key range as unswept, and a resumed walk sweeps that range first, whatever
the counter says (after a server crash its value may go back).

The fence waits for its lock holding nothing else and holds it for an instant, and the batch
it closes has committed: a writer waiting on the batch's rows is never in a cycle with it (a
writer asking for the shared lock while the fence waits is queued behind it, an order
PostgreSQL changes when it would deadlock), and deleters wait for the fence only while earlier
deleters finish. The sweep holds no fence lock; it can wait for a writer holding a candidate,
under lock_timeout, below deadlock_timeout, so that of two waiting for each other the sweep,
which started waiting within its statement's run, gives up first and is retried. The batches
themselves lock no row of the live table.

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
    close: Query  # the deletes counter, read under the exclusive lock
    # the batch's key condition -> (tableoid, ctid) of the copies whose live row is gone,
    # locked FOR UPDATE (waiting for a writer that has one, re-checked after it)
    ghosts: Callable[[Query], Query]
    # parameters: tableoids, ctids -> DELETE of those still without a live row
    sweep: Query


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

    gone = sql.SQL("NOT EXISTS (SELECT FROM {old} AS {row} WHERE {match})").format(
        old=shape.old.qualified, row=row, match=match
    )

    def ghosts(condition: Query) -> Query:
        # the condition's bare key columns are the new table's: the only table in scope
        return sql.SQL(
            "SELECT {copy}.tableoid, {copy}.ctid FROM {new} AS {copy} WHERE {condition}"
            " AND {gone} FOR UPDATE OF {copy}"
        ).format(new=shape.new.qualified, copy=copy, condition=condition, gone=gone)

    return DeleteFence(
        installed=sql.SQL(
            "SELECT coalesce((SELECT p.prosrc LIKE '%copy_delete_fence%' FROM pg_proc p"
            " WHERE p.oid = to_regprocedure({})), false)"
        ).format(sql.Literal(shape.forward_function.as_string() + "()")),
        close=sql.SQL("SELECT {}({}::regclass)").format(
            sql.Identifier(state_schema, "copy_batch_fence"), live
        ),
        ghosts=ghosts,
        # a statement of its own, so its snapshot sees a writer that held a ghost commit
        sweep=sql.SQL(
            "DELETE FROM {new} AS {copy} WHERE ({copy}.tableoid, {copy}.ctid) IN"
            " (SELECT * FROM unnest(%s::oid[], %s::tid[])) AND {gone}"
        ).format(new=shape.new.qualified, copy=copy, gone=gone),
    )
