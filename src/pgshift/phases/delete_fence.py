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
  `copy_batch_fence(table)`: the same lock exclusively, then the counter. When the counter
  moved since this walk's previous fence, it deletes, from the batch's key range of the new
  table, every row whose key the live table no longer has (the sweep), in a statement whose
  snapshot follows the lock.

Why no ghost is left. Take a deleter D whose delete the batch's snapshot did not see and whose
copy trigger did not see the batch's copy, so it ran before the batch committed. D took the
shared lock before that, so before the fence's lock, and holds it until it ends: the fence's
lock waited for D to end, and the sweep sees D's delete committed. D's counter step came after
the walk's previous fence (which ended before the batch's snapshot): that fence held the lock
exclusively, so a deleter still running then took its lock, and stepped the counter, after it.
When the counter has not moved, no such D exists and the sweep is skipped: a table nobody
deletes from pays one short transaction per batch.

Between the batch's commit and its fence the ghosts are committed, but nothing reads the new
table before the backfill has ended. A crash in between leaves the fence to do: the batch's
checkpoint names its key range as unswept, and a resumed walk sweeps that range first, whatever
the counter says (after a server crash its value may go back).

The fence waits for its lock holding nothing else, and the batch it closes has committed, so
a writer waiting on the batch's rows is never in a cycle with it (a writer asking for the shared
lock while the fence waits is queued behind it, an order PostgreSQL changes when it would
deadlock). Once it has the lock, its sweep can wait for a writer inserting a swept key again;
if that writer then asks for the shared lock, each waits for the other, and the fence's
lock_timeout (below deadlock_timeout) ends the fence's wait first, unless its sweep had run for
longer than their difference before it met the row: the fence rolls back and is retried.
Writers wait for the fence only when they delete, and only while it runs (its sweep, if any,
and its commit). The batches themselves lock no row of the live table.

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
        close=sql.SQL("SELECT {}({}::regclass)").format(
            sql.Identifier(state_schema, "copy_batch_fence"), live
        ),
        sweep=sweep,
    )
