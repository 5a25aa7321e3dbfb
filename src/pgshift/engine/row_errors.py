"""Rows the application wrote that a dual-write trigger could not map.

The triggers never fail the application's statement for a value the plan cannot map: they
record the row (its key, SQLSTATE and message, in the state schema's `row_errors`) and the
write goes on (phases/dual_write.py, `guarded`). Here the executor turns those records into
the migration's failure: `check` before every step, between backfill batches and inside every
step's own transaction (so a swap never commits over a row it would carry wrongly); `remap`
gives each recorded row another pass through the trigger now in force, at the start of `apply`
and `rollback` (the application or a `--force`d plan may have fixed it); `refresh` installs a
`--force`d plan's expressions into that trigger.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.types.json import Jsonb

from pgshift.compile import CompiledPlan
from pgshift.engine.locks import set_timeouts, with_lock_retries
from pgshift.engine.state import DIRECTIONS, RowError, StateStore
from pgshift.errors import MigrationFailed
from pgshift.phases.base import SqlStep
from pgshift.phases.columns_shape import ColumnsShape
from pgshift.phases.table_shape import TableShape
from pgshift.plan.model import Settings

log = structlog.get_logger("pgshift.row_errors")

REMAP_CHUNK = 1_000  # recorded rows given another pass per transaction


class RowErrorsFound(MigrationFailed):
    """Rows written since dual_write (or cutover) that the plan could not map."""


def through(target: str, direction: str) -> str:
    """What the plan calls the expressions of `direction`."""
    if target == "new_table":
        return "new_table.columns" if direction == "up" else "new_table.reverse"
    return direction


def found(
    conn: psycopg.Connection[Any],
    store: StateStore,
    name: str,
    directions: tuple[str, ...] = DIRECTIONS,
) -> tuple[int, RowError] | None:
    """How many rows are recorded, and the first; None when none is (one indexed query)."""
    first = store.row_errors(conn, name, 1, directions)
    if not first:
        return None
    return store.row_error_count(conn, name, directions), first[0]


def _since(direction: str, versions: bool) -> str:
    if direction == "up":
        return "since dual_write"
    return "by the new version" if versions else "since cutover"


def check(
    conn: psycopg.Connection[Any],
    store: StateStore,
    name: str,
    target: str,
    versions: bool = False,
) -> None:
    """Fail when any row is recorded (the executor's on_failure then applies): `3 row(s)
    written since dual_write could not be mapped through up, first (id)=(42): integer out of
    range (22003); ...`."""
    recorded = found(conn, store, name)
    if recorded is not None:
        count, error = recorded
        since = _since(error.direction, versions)
        what = through(target, error.direction)
        raise RowErrorsFound(
            f"{count} row(s) written {since} could not be mapped through {what}, first"
            f" {error.describe()}; fix the plan's {what} (apply --force) or those rows"
        )


def refuse_losing(
    conn: psycopg.Connection[Any],
    store: StateStore,
    name: str,
    target: str,
    versions: bool = False,
) -> str | None:
    """The refusal of a rollback of cutover (in versions mode: of dual_write) while rows written
    since cutover (by the new version) could not be mapped back (the old shape lacks them);
    None when there are none."""
    recorded = found(conn, store, name, ("down",))
    if recorded is None:
        return None
    count, error = recorded
    return (
        f"rollback would lose {count} row(s) written {_since('down', versions)} that could not be"
        " mapped"
        f" through {through(target, 'down')}, first {error.describe()}; fix those rows (a write"
        " that maps them puts them back), or pass --force to roll back without them"
    )


def _sources(compiled: CompiledPlan) -> list[tuple[str, str, tuple[str, ...]]]:
    """(direction, trigger recording it, the key it records rows by) for each direction."""
    shape = compiled.context.shape
    if isinstance(shape, TableShape):
        return [
            ("up", shape.forward_trigger, shape.key),
            ("down", shape.reverse_trigger, shape.new_key),
        ]
    assert isinstance(shape, ColumnsShape)
    return [("up", shape.trigger, shape.key), ("down", shape.trigger, shape.key)]


def remap(
    conn: psycopg.Connection[Any],
    store: StateStore,
    compiled: CompiledPlan,
    settings: Settings,
    directions: tuple[str, ...] = DIRECTIONS,
) -> int:
    """Give every recorded row another pass through the trigger that recorded it, if that
    trigger is still in force: the record is deleted and the row touched (`UPDATE ... SET key =
    key`) in one transaction, so the trigger maps it as it is now and records it again only if
    it still cannot. Rows written since are not touched twice (records newer than the start
    are left alone). The table's own UPDATE triggers fire for the touched rows. Returns how
    many records were taken; versions mode is left to a rollback (a pgshift session writes
    through the old version's branch of the trigger)."""
    name = compiled.plan.name
    if compiled.plan.versions or not store.row_errors(conn, name, 1, directions):
        return 0
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    started: datetime = row[0]
    taken = 0
    sources = [
        (part, direction, trigger, key)
        for part in compiled.each()
        for direction, trigger, key in _sources(part)
    ]
    for part, direction, trigger, key in sources:
        if direction not in directions:
            continue
        table = _trigger_table(conn, trigger, part.table.schema)
        if table is None:  # that trigger is gone: only a rollback clears these
            continue
        touch = _touch(conn, table, key)
        label = part.context.label

        def chunk_of(
            direction: str = direction, touch: sql.Composed = touch, label: str = label
        ) -> int:
            with conn.transaction():
                set_timeouts(conn, settings.lock_timeout, settings.statement_timeout or None, True)
                keys = store.take_row_errors(
                    conn, name, direction, started, REMAP_CHUNK, table=label
                )
                if keys:
                    conn.execute(touch, (Jsonb(keys),))
            return len(keys)

        while True:
            try:
                chunk = with_lock_retries(
                    chunk_of,
                    attempts=settings.lock_retries,
                    what="map the recorded rows again",
                    lock_timeout=settings.lock_timeout,
                )
            except psycopg.Error as error:  # the records stay, and the check names them
                message = error.diag.message_primary or str(error)
                log.warning("could not map the recorded rows again", migration=name, error=message)
                break
            taken += chunk
            if chunk < REMAP_CHUNK:
                break
    if taken:
        left = store.row_error_count(conn, name, directions)
        log.info("recorded rows mapped again", migration=name, rows=taken, still_failing=left)
    return taken


def _trigger_table(
    conn: psycopg.Connection[Any], trigger: str, schema: str
) -> tuple[str, str] | None:
    """The table in `schema` the trigger named so is on now (the live table, or after a
    new_table swap, the new one for the reverse trigger)."""
    row = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.tgname = %s AND n.nspname = %s",
        (trigger, schema),
    ).fetchone()
    return (row[0], row[1]) if row else None


def _touch(
    conn: psycopg.Connection[Any], table: tuple[str, str], key: tuple[str, ...]
) -> sql.Composed:
    """`UPDATE t SET k1 = k1 WHERE (k1, k2) IN (keys)`, keys given as one JSON array of text
    arrays and cast to the key columns' types as they are now. The column set to itself is the
    first key column that may be (not GENERATED ALWAYS, not generated), else the table's first
    such column."""
    regclass = sql.Identifier(*table).as_string(conn)
    types = dict(
        conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attname = ANY(%s) AND NOT attisdropped",
            (regclass, list(key)),
        ).fetchall()
    )
    row = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped AND attidentity <> 'a' AND attgenerated = ''"
        " ORDER BY attname = ANY(%s) DESC, attnum LIMIT 1",
        (regclass, list(key)),
    ).fetchone()
    assert row is not None, f"{regclass} has no column an UPDATE may set"
    columns = sql.SQL(", ").join(sql.Identifier(k) for k in key)
    values = sql.SQL(", ").join(
        sql.SQL("(pgshift_keys.k ->> {})::{}").format(sql.Literal(i), sql.SQL(types[k]))
        for i, k in enumerate(key)
    )
    return sql.SQL(
        "UPDATE {table} SET {first} = {first} WHERE ({columns}) IN"
        " (SELECT {values} FROM jsonb_array_elements(%s) AS pgshift_keys (k))"
    ).format(
        table=sql.Identifier(*table),
        first=sql.Identifier(row[0]),
        columns=columns,
        values=values,
    )


def refresh(conn: psycopg.Connection[Any], compiled: CompiledPlan) -> int:
    """After a `--force`d change of the plan: the trigger functions in force are created
    again from it, so the application's writes (and `remap`) use the changed expressions.
    Those of the dual_write phase before the swap, those of the swap after it; a function not
    there (dual_write not run yet, contract done) is left to its phase. Returns how many."""
    kind = "cutover" if swapped(conn, compiled) else "dual_write"
    done = 0
    for phase in (p for p in compiled.phases if p.kind == kind):
        for step in phase.forward:
            if not isinstance(step, SqlStep):
                continue
            for statement in step.statements:
                text = statement.as_string(conn)
                if not text.startswith("CREATE OR REPLACE FUNCTION "):
                    continue
                function = text.removeprefix("CREATE OR REPLACE FUNCTION ").split("(", 1)[0]
                row = conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (function + "()",))
                found = row.fetchone()
                if found and found[0]:
                    conn.execute(statement)
                    done += 1
    return done


def swapped(conn: psycopg.Connection[Any], compiled: CompiledPlan) -> bool:
    """Whether cutover's swap has committed (the reverse trigger is in force)."""
    shape = compiled.context.shape
    table = compiled.table
    if isinstance(shape, TableShape):
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL",
            (sql.Identifier(table.schema, shape.old_name).as_string(conn),),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass"
            " AND attname = %s AND NOT attisdropped)",
            (table.qualified.as_string(conn), shape.columns[0].shadow),
        ).fetchone()
    return bool(row and row[0])
