"""The state schema: migrations, their phases with checkpoints, and an append-only
event log. It lives in the migrated database so a checkpoint can commit in the same
transaction as the work it describes. The schema carries its own version; `ensure_schema`
upgrades an older one in place."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgshift.errors import PgshiftError

SCHEMA_VERSION = 4

# Each entry upgrades the state schema from the previous version; never edit a released one.
_UPGRADES: dict[int, str] = {
    1: """
    CREATE TABLE IF NOT EXISTS {s}.migrations (
        name text PRIMARY KEY,
        plan_hash text NOT NULL,
        table_name text NOT NULL,
        status text NOT NULL DEFAULT 'pending',
        snapshot jsonb,
        paused boolean NOT NULL DEFAULT false,
        throttle_reason text,
        last_error text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS {s}.phases (
        migration text NOT NULL REFERENCES {s}.migrations ON DELETE CASCADE,
        idx int NOT NULL,
        kind text NOT NULL,
        name text NOT NULL,
        status text NOT NULL DEFAULT 'pending',
        steps_done int NOT NULL DEFAULT 0,
        checkpoint jsonb,
        rows_done bigint NOT NULL DEFAULT 0,
        rows_total bigint,
        batches bigint NOT NULL DEFAULT 0,
        started_at timestamptz,
        finished_at timestamptz,
        error text,
        PRIMARY KEY (migration, idx)
    );
    CREATE TABLE IF NOT EXISTS {s}.events (
        id bigserial PRIMARY KEY,
        migration text NOT NULL,
        at timestamptz NOT NULL DEFAULT clock_timestamp(),
        actor text NOT NULL,
        phase text,
        event text NOT NULL,
        detail jsonb
    );
    CREATE INDEX IF NOT EXISTS events_migration_idx ON {s}.events (migration, id);
    """,
    # Rows a dual-write trigger could not map, one entry per row (the latest error): the
    # application's statement went on, the migration fails at its next step. The triggers run
    # as the application's roles, so they record through a SECURITY DEFINER function with a
    # pinned search_path; PUBLIC may execute it (and look the schema up to find it), nothing else.
    2: """
    CREATE TABLE IF NOT EXISTS {s}.row_errors (
        migration text NOT NULL,
        direction text NOT NULL CHECK (direction IN ('up', 'down')),
        key text NOT NULL,
        key_values text[] NOT NULL,
        sqlstate text NOT NULL,
        message text NOT NULL,
        at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (migration, direction, key)
    );
    CREATE INDEX IF NOT EXISTS row_errors_first_idx ON {s}.row_errors (migration, at);
    CREATE OR REPLACE FUNCTION {s}.record_row_error(
        migration text, direction text, key_columns text, key_values text[],
        sqlstate text, message text
    ) RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
        INSERT INTO {s}.row_errors (migration, direction, key, key_values, sqlstate, message)
        VALUES ($1, $2, $3 || '=(' || array_to_string($4, ', ') || ')', $4, $5, $6)
        ON CONFLICT (migration, direction, key) DO UPDATE
        SET sqlstate = EXCLUDED.sqlstate, message = EXCLUDED.message, at = clock_timestamp()
    $f$;
    REVOKE ALL ON FUNCTION {s}.record_row_error(text, text, text, text[], text, text) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION {s}.record_row_error(text, text, text, text[], text, text)
        TO PUBLIC;
    GRANT USAGE ON SCHEMA {s} TO PUBLIC;
    """,
    # Settings changed while the migration runs (`migrate set`), read before each batch.
    3: """
    ALTER TABLE {s}.migrations ADD COLUMN IF NOT EXISTS overrides jsonb NOT NULL DEFAULT '{{}}';
    """,
    # The delete fence of a table copy (phases/delete_fence.py): a copy trigger calls
    # copy_delete_fence before it deletes a copy (the application's role, hence SECURITY
    # DEFINER: a shared lock on the table's key and one step of the counter); after each
    # batch, copy_batch_fence takes the lock exclusively (under the caller's lock_timeout) and
    # reads the counter. 1885827946 is COPY_FENCE_CLASS.
    4: """
    CREATE SEQUENCE IF NOT EXISTS {s}.copy_deletes;
    CREATE OR REPLACE FUNCTION {s}.copy_delete_fence(relid oid)
    RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
        SELECT pg_advisory_xact_lock_shared(1885827946, relid::int4);
        SELECT nextval('{s}.copy_deletes'::regclass);
    $f$;
    REVOKE ALL ON FUNCTION {s}.copy_delete_fence(oid) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION {s}.copy_delete_fence(oid) TO PUBLIC;
    CREATE OR REPLACE FUNCTION {s}.copy_batch_fence(relid oid)
    RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $f$
        SELECT pg_advisory_xact_lock(1885827946, relid::int4);
        SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {s}.copy_deletes;
    $f$;
    REVOKE ALL ON FUNCTION {s}.copy_batch_fence(oid) FROM PUBLIC;
    """,
}


@dataclass
class PhaseState:
    idx: int
    kind: str
    name: str
    status: str  # pending | running | done | failed | rolled_back
    steps_done: int
    checkpoint: Any
    rows_done: int
    rows_total: int | None
    batches: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


@dataclass
class MigrationState:
    name: str
    plan_hash: str
    table_name: str
    status: str  # pending | running | waiting | paused | failed | rolled_back | done
    snapshot: Any
    paused: bool
    throttle_reason: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    phases: list[PhaseState]
    row_errors: int = 0  # rows a dual-write trigger could not map (see StateStore.row_errors)
    overrides: dict[str, Any] = field(default_factory=dict)  # `migrate set`, see live_settings

    def phase(self, idx: int) -> PhaseState:
        return self.phases[idx]

    @property
    def started(self) -> bool:
        """Whether anything of it is applied (so the table no longer looks as before)."""
        return any(p.status in ("running", "done", "failed") for p in self.phases)


@dataclass(frozen=True)
class RowError:
    """A row the application wrote that a dual-write trigger could not map (the latest error
    for that row): `up` towards the new shape, `down` back towards the old one."""

    direction: str
    key: str  # (id)=(42)
    key_values: list[str]
    sqlstate: str
    message: str
    at: datetime

    def describe(self) -> str:
        return f"{self.key}: {self.message} ({self.sqlstate})"


DIRECTIONS = ("up", "down")


class StateStore:
    def __init__(self, schema: str = "pgshift", actor: str = "pgshift") -> None:
        self.schema = schema
        self.actor = actor

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=sql.Identifier(self.schema))

    def exists(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute(
            "SELECT to_regclass(format('%%I.migrations', %s::text)) IS NOT NULL", (self.schema,)
        ).fetchone()
        return bool(row and row[0])

    def ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Create or upgrade the state schema; a transaction-level advisory lock makes two
        pgshift processes starting at once take turns."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))
            conn.execute(self._q("CREATE SCHEMA IF NOT EXISTS {s}"))
            conn.execute(
                self._q(
                    "CREATE TABLE IF NOT EXISTS {s}.schema_version"
                    " (version int NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                )
            )
            row = conn.execute(self._q("SELECT max(version) FROM {s}.schema_version")).fetchone()
            current = (row[0] if row else None) or 0
            if current > SCHEMA_VERSION:
                raise PgshiftError(
                    f"the state schema {self.schema} is version {current}, newer than this"
                    f" pgshift knows ({SCHEMA_VERSION}); upgrade pgshift"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                conn.execute(self._q(_UPGRADES[version]))
                conn.execute(
                    self._q("INSERT INTO {s}.schema_version (version) VALUES (%s)"), (version,)
                )

    def get(self, conn: psycopg.Connection[Any], name: str) -> MigrationState | None:
        if not self.exists(conn):
            return None
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                self._q("SELECT * FROM {s}.migrations WHERE name = %s"), (name,)
            ).fetchone()
            if row is None:
                return None
            phases = cur.execute(
                self._q(
                    "SELECT idx, kind, name, status, steps_done, checkpoint, rows_done, rows_total,"
                    " batches, started_at, finished_at, error FROM {s}.phases"
                    " WHERE migration = %s ORDER BY idx"
                ),
                (name,),
            ).fetchall()
        errors = self.row_error_count(conn, name) if self._has_row_errors(conn) else 0
        return MigrationState(phases=[PhaseState(**p) for p in phases], row_errors=errors, **row)

    def _has_row_errors(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether the schema has the row_errors table (version 2): `status` reads a schema
        an older pgshift made without upgrading it."""
        row = conn.execute(
            "SELECT to_regclass(format('%%I.row_errors', %s::text)) IS NOT NULL", (self.schema,)
        ).fetchone()
        return bool(row and row[0])

    def row_errors(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        limit: int = 1,
        directions: tuple[str, ...] = DIRECTIONS,
    ) -> list[RowError]:
        """The first `limit` rows the triggers could not map, oldest first."""
        with conn.cursor(row_factory=dict_row) as cur:
            found = cur.execute(
                self._q(
                    "SELECT direction, key, key_values, sqlstate, message, at FROM {s}.row_errors"
                    " WHERE migration = %s AND direction = ANY(%s) ORDER BY at, key LIMIT %s"
                ),
                (name, list(directions), limit),
            ).fetchall()
        return [RowError(**r) for r in found]

    def row_error_count(
        self, conn: psycopg.Connection[Any], name: str, directions: tuple[str, ...] = DIRECTIONS
    ) -> int:
        row = conn.execute(
            self._q(
                "SELECT count(*) FROM {s}.row_errors WHERE migration = %s AND direction = ANY(%s)"
            ),
            (name, list(directions)),
        ).fetchone()
        return int(row[0]) if row else 0

    def take_row_errors(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        direction: str,
        before: datetime,
        limit: int,
        table: str = "",
    ) -> list[list[str]]:
        """Delete up to `limit` of the oldest records of `direction` made before `before`, and
        return their keys' values (to give those rows another pass in the same transaction).
        `table`: only the rows of that table of a plan with several (their keys start with
        it)."""
        return [
            r[0]
            for r in conn.execute(
                self._q(
                    "DELETE FROM {s}.row_errors WHERE migration = %s AND direction = %s AND key IN"
                    " (SELECT key FROM {s}.row_errors WHERE migration = %s AND direction = %s"
                    " AND at <= %s AND (%s = '' OR starts_with(key, %s || ' ('))"
                    " ORDER BY at LIMIT %s) RETURNING key_values"
                ),
                (name, direction, name, direction, before, table, table, limit),
            )
        ]

    def clear_row_errors(
        self, conn: psycopg.Connection[Any], name: str, directions: tuple[str, ...] = DIRECTIONS
    ) -> int:
        """Forget the recorded rows: the shape they were written against is gone."""
        cur = conn.execute(
            self._q("DELETE FROM {s}.row_errors WHERE migration = %s AND direction = ANY(%s)"),
            (name, list(directions)),
        )
        return max(cur.rowcount, 0)

    def unfinished_on(
        self, conn: psycopg.Connection[Any], table: str, other_than: str
    ) -> list[tuple[str, str]]:
        """(name, status) of the other migrations of `table` that have applied something and
        are neither done nor rolled back."""
        if not self.exists(conn):
            return []
        rows = conn.execute(
            self._q(
                "SELECT m.name, m.status FROM {s}.migrations m"
                " WHERE (m.table_name = %s OR %s = ANY(string_to_array(m.table_name, ', ')))"
                " AND m.name <> %s AND m.status <> 'done'"
                " AND EXISTS (SELECT 1 FROM {s}.phases p WHERE p.migration = m.name"
                " AND p.status IN ('running', 'done', 'failed')) ORDER BY m.created_at"
            ),
            (table, table, other_than),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def names(self, conn: psycopg.Connection[Any]) -> list[str]:
        if not self.exists(conn):
            return []
        return [
            r[0]
            for r in conn.execute(self._q("SELECT name FROM {s}.migrations ORDER BY created_at"))
        ]

    def create(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        plan_hash: str,
        table_name: str,
        phases: list[tuple[str, str]],
        snapshot: Any,
        rows_total: int | None,
    ) -> None:
        """(Re)start a migration's record: used first time, and after a full rollback when
        the plan may have changed. Keeps the event log."""
        with conn.transaction():
            conn.execute(self._q("DELETE FROM {s}.migrations WHERE name = %s"), (name,))
            conn.execute(
                self._q(
                    "INSERT INTO {s}.migrations (name, plan_hash, table_name, snapshot)"
                    " VALUES (%s, %s, %s, %s)"
                ),
                (name, plan_hash, table_name, Jsonb(snapshot)),
            )
            for idx, (kind, phase_name) in enumerate(phases):
                conn.execute(
                    self._q(
                        "INSERT INTO {s}.phases (migration, idx, kind, name, rows_total)"
                        " VALUES (%s, %s, %s, %s, %s)"
                    ),
                    (name, idx, kind, phase_name, rows_total if kind == "backfill" else None),
                )
            self.event(conn, name, "created", detail={"plan_hash": plan_hash})

    def event(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        event: str,
        phase: str | None = None,
        detail: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> None:
        conn.execute(
            self._q(
                "INSERT INTO {s}.events (migration, actor, phase, event, detail) VALUES (%s, %s, %s, %s, %s)"
            ),
            (
                name,
                actor or self.actor,
                phase,
                event,
                Jsonb(detail) if detail is not None else None,
            ),
        )

    def set_status(
        self, conn: psycopg.Connection[Any], name: str, status: str, error: str | None = None
    ) -> None:
        """What the migration waited for is cleared unless it now waits at a gate (a run
        sets it again while it waits): a stopped, rolled-back or finished one waits for nothing."""
        conn.execute(
            self._q(
                "UPDATE {s}.migrations SET status = %s, last_error = %s, updated_at = now(),"
                " throttle_reason = CASE WHEN %s = 'waiting' THEN throttle_reason END"
                " WHERE name = %s"
            ),
            (status, error, status, name),
        )

    def set_phase(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        idx: int,
        status: str,
        *,
        steps_done: int | None = None,
        error: str | None = None,
        reset: bool = False,
    ) -> None:
        """Move a phase to `status`; `reset` clears its progress (after its rollback)."""
        conn.execute(
            self._q(
                """
                UPDATE {s}.phases SET status = %(status)s,
                    steps_done = CASE WHEN %(reset)s THEN 0 ELSE coalesce(%(steps)s, steps_done) END,
                    checkpoint = CASE WHEN %(reset)s THEN NULL ELSE checkpoint END,
                    rows_done = CASE WHEN %(reset)s THEN 0 ELSE rows_done END,
                    batches = CASE WHEN %(reset)s THEN 0 ELSE batches END,
                    started_at = CASE WHEN %(status)s = 'running'
                                           AND (started_at IS NULL OR status = 'rolled_back')
                                      THEN clock_timestamp() ELSE started_at END,
                    -- a rolled-back phase keeps the time its run took
                    finished_at = CASE WHEN %(status)s = 'rolled_back'
                                       THEN coalesce(finished_at, clock_timestamp())
                                       WHEN %(status)s IN ('done', 'failed')
                                       THEN clock_timestamp()
                                       WHEN %(status)s = 'running' THEN NULL ELSE finished_at END,
                    error = %(error)s
                WHERE migration = %(name)s AND idx = %(idx)s
                """
            ),
            {
                "status": status,
                "reset": reset,
                "steps": steps_done,
                "error": error,
                "name": name,
                "idx": idx,
            },
        )
        if status == "running" and reset:
            conn.execute(
                self._q(
                    "UPDATE {s}.phases SET started_at = clock_timestamp() WHERE migration = %s AND idx = %s"
                ),
                (name, idx),
            )

    def step_done(
        self, conn: psycopg.Connection[Any], name: str, idx: int, steps_done: int
    ) -> None:
        conn.execute(
            self._q("UPDATE {s}.phases SET steps_done = %s WHERE migration = %s AND idx = %s"),
            (steps_done, name, idx),
        )

    def checkpoint(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        idx: int,
        checkpoint: Any,
        rows: int,
        steps_done: int | None,
        *,
        range_index: int | None = None,
        size: int | None = None,
    ) -> None:
        """Called inside the batch's transaction: the batch and its checkpoint commit together.
        `steps_done` is set with the last batch, so a finished backfill is never run again.

        With `range_index` (backfill workers), `checkpoint` is that key range's entry and only
        it (and the batch `size`) is written: under READ COMMITTED an UPDATE that waited for
        another worker's batch recomputes jsonb_set on the row as that batch left it, so the
        workers' entries compose."""
        if range_index is not None:
            conn.execute(
                self._q(
                    """
                    UPDATE {s}.phases SET checkpoint = jsonb_set(
                            jsonb_set(checkpoint, ARRAY['ranges', %s::text], %s), '{{size}}', %s),
                        rows_done = rows_done + %s, batches = batches + 1,
                        steps_done = coalesce(%s, steps_done)
                    WHERE migration = %s AND idx = %s
                    """
                ),
                (range_index, Jsonb(checkpoint), Jsonb(size), rows, steps_done, name, idx),
            )
            return
        conn.execute(
            self._q(
                """
                UPDATE {s}.phases SET checkpoint = %s, rows_done = rows_done + %s,
                    batches = batches + 1, steps_done = coalesce(%s, steps_done)
                WHERE migration = %s AND idx = %s
                """
            ),
            (Jsonb(checkpoint), rows, steps_done, name, idx),
        )

    def set_checkpoint(
        self, conn: psycopg.Connection[Any], name: str, idx: int, checkpoint: Any
    ) -> None:
        """A phase's checkpoint before its first batch (the backfill workers' key ranges)."""
        conn.execute(
            self._q("UPDATE {s}.phases SET checkpoint = %s WHERE migration = %s AND idx = %s"),
            (Jsonb(checkpoint), name, idx),
        )

    def approve(self, conn: psycopg.Connection[Any], name: str, gate: str, by: str) -> bool:
        """Record an approval of `gate` (who and when) in the gate's checkpoint and the event
        log. False when the migration has no such gate."""
        with conn.transaction():
            cur = conn.execute(
                self._q(
                    "UPDATE {s}.phases SET checkpoint = jsonb_build_object('approved_by', %s::text,"
                    " 'approved_at', clock_timestamp()) WHERE migration = %s AND kind = 'gate' AND name = %s"
                ),
                (by, name, gate),
            )
            if cur.rowcount:
                self.event(conn, name, "approved", phase=gate, detail={"by": by}, actor=by)
        return cur.rowcount > 0

    def save_result(
        self, conn: psycopg.Connection[Any], name: str, idx: int, data: Any, rows: int
    ) -> None:
        """A check's checkpoint or result (verify, shadow read) kept with its phase."""
        conn.execute(
            self._q(
                "UPDATE {s}.phases SET checkpoint = %s, rows_done = %s"
                " WHERE migration = %s AND idx = %s"
            ),
            (Jsonb(data), rows, name, idx),
        )

    def set_plan_hash(self, conn: psycopg.Connection[Any], name: str, plan_hash: str) -> None:
        conn.execute(
            self._q("UPDATE {s}.migrations SET plan_hash = %s WHERE name = %s"), (plan_hash, name)
        )

    def set_paused(self, conn: psycopg.Connection[Any], name: str, paused: bool) -> bool:
        if not self.exists(conn):
            return False
        cur = conn.execute(
            self._q("UPDATE {s}.migrations SET paused = %s, updated_at = now() WHERE name = %s"),
            (paused, name),
        )
        if cur.rowcount:
            self.event(conn, name, "paused" if paused else "resumed")
        return cur.rowcount > 0

    def set_overrides(
        self, conn: psycopg.Connection[Any], name: str, changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge `changes` into the migration's live settings (None removes a key) and record
        the event; the settings now in force, or None when there is no such migration."""
        if not self.exists(conn):
            return None
        with conn.transaction():
            row = conn.execute(
                self._q("SELECT overrides FROM {s}.migrations WHERE name = %s FOR UPDATE"),
                (name,),
            ).fetchone()
            if row is None:
                return None
            merged = {**row[0], **changes}
            merged = {k: v for k, v in merged.items() if v is not None}
            conn.execute(
                self._q(
                    "UPDATE {s}.migrations SET overrides = %s, updated_at = now() WHERE name = %s"
                ),
                (Jsonb(merged), name),
            )
            self.event(conn, name, "settings changed", detail={"set": changes, "now": merged})
        return merged

    def live(self, conn: psycopg.Connection[Any], name: str) -> tuple[bool, dict[str, Any]]:
        """What a running migration reads before each batch: paused, and the live settings
        (read through to_jsonb so a state schema not yet upgraded, read only, has none)."""
        row = conn.execute(
            self._q(
                "SELECT paused, to_jsonb(m) -> 'overrides' FROM {s}.migrations m WHERE name = %s"
            ),
            (name,),
        ).fetchone()
        return (bool(row[0]), dict(row[1] or {})) if row else (False, {})

    def set_throttle(self, conn: psycopg.Connection[Any], name: str, reason: str | None) -> None:
        conn.execute(
            self._q("UPDATE {s}.migrations SET throttle_reason = %s WHERE name = %s"),
            (reason, name),
        )

    def forget(self, conn: psycopg.Connection[Any], name: str) -> None:
        """Take a finished migration off `status`; its event log stays (`migrate history`)."""
        with conn.transaction():
            if self._has_row_errors(conn):
                conn.execute(self._q("DELETE FROM {s}.row_errors WHERE migration = %s"), (name,))
            conn.execute(self._q("DELETE FROM {s}.migrations WHERE name = %s"), (name,))
            self.event(conn, name, "forgotten")

    def histories(self, conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
        """Every migration the event log knows, forgotten ones too: first and last event."""
        if not self.exists(conn):
            return []
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                self._q(
                    "SELECT DISTINCT ON (migration) migration, event AS last_event, at AS last_at,"
                    " min(at) OVER (PARTITION BY migration) AS first_at"
                    " FROM {s}.events ORDER BY migration, id DESC"
                )
            ).fetchall()

    def events(self, conn: psycopg.Connection[Any], name: str) -> list[dict[str, Any]]:
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                self._q(
                    "SELECT at, actor, phase, event, detail FROM {s}.events WHERE migration = %s ORDER BY id"
                ),
                (name,),
            ).fetchall()


LOCK_CLASS = 0x70677368  # "pgsh": the first key of every pgshift advisory lock
COPY_FENCE_CLASS = LOCK_CLASS + 2  # "pgsj": a table copy's delete fence, keyed by the table


def snapshot_json(value: Any) -> Any:
    """Dataclasses (and tuples, frozensets) as plain JSON values."""
    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(value)
    raise TypeError(f"cannot store {type(value).__name__} in the state")
