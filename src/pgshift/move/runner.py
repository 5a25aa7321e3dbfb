"""Runs a move's typed steps: the ones that need both servers, wait, or run a command.

Every one of them is safe to run again after a crash: a subscription that exists is not made
again, one that is gone is not dropped again, a wait waits again, sequences only ever move
forward, and a fence is dropped and created in one transaction.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgshift.db import redact
from pgshift.engine.failpoints import failpoint
from pgshift.engine.hooks import run_hook
from pgshift.engine.progress import BatchReport, Reporter
from pgshift.engine.state import StateStore
from pgshift.engine.steps import run_sql_step
from pgshift.errors import MigrationFailed
from pgshift.move.catalog import Name, display
from pgshift.move.names import Direction, MoveNames, publisher, subscriber
from pgshift.move.steps import (
    CatchUp,
    CompiledMove,
    Fence,
    Hook,
    Subscribe,
    SyncSequences,
    Unsubscribe,
    WaitCopy,
)
from pgshift.phases.base import Server, SqlStep
from pgshift.plan.durations import format_duration
from pgshift.plan.model import Settings

log = structlog.get_logger("pgshift.move")

Connection = psycopg.Connection[Any]
# a table sync that keeps failing (rows that cannot go in) fails the copy after this many
WORKER_ERRORS_LIMIT = 10
PROGRESS_SECONDS = 1.0


@dataclass
class Servers:
    """pgshift's connections to both servers (autocommit), and how the servers reach each
    other: the connection parameters pgshift itself used, password included."""

    source: Connection
    destination: Connection

    def conn(self, server: Server) -> Connection:
        return self.source if server == "source" else self.destination

    def conninfo(self, server: Server) -> str:
        """What pgshift connects to `server` with."""
        return conninfo_for(self.conn(server))

    def subscription_conninfo(self, server: Server) -> str:
        """What a subscription on the other server connects to `server` with: as pgshift does,
        unless $PGSHIFT_MOVE_SOURCE_CONNINFO / $PGSHIFT_MOVE_DESTINATION_CONNINFO says how that
        server reaches this one (another address inside a private network, say)."""
        return os.environ.get(CONNINFO_ENV[server]) or self.conninfo(server)

    def shown(self, server: Server) -> str:
        return redact(self.subscription_conninfo(server))


CONNINFO_ENV: dict[Server, str] = {
    "source": "PGSHIFT_MOVE_SOURCE_CONNINFO",
    "destination": "PGSHIFT_MOVE_DESTINATION_CONNINFO",
}


def conninfo_for(conn: Connection) -> str:
    """The parameters `conn` connected with, password included: what pg_dump and a
    subscription on the other server connect with (libpq's PG* variables and service files
    resolved, which the other server would not see)."""
    info = conn.info
    params: dict[str, Any] = {k: v for k, v in info.get_parameters().items() if k in CONNINFO_KEYS}
    if info.password:
        params["password"] = info.password
    params.setdefault("connect_timeout", "10")
    return make_conninfo("", **params)


# what another server's libpq (as old as PostgreSQL 11's) understands; pgshift's own session
# settings and application_name stay out (a subscription is named after itself)
CONNINFO_KEYS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "passfile",
        "connect_timeout",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
        "sslpassword",
        "gssencmode",
        "krbsrvname",
        "target_session_attrs",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
    }
)


def subscription_oid(conn: Connection, name: str) -> int | None:
    row = conn.execute(
        "SELECT s.oid FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
        " WHERE s.subname = %s AND d.datname = current_database()",
        (name,),
    ).fetchone()
    return None if row is None else int(row[0])


def drop_slots(conn: Connection, names: list[str], like: str | None = None) -> list[str]:
    """Drop this database's replication slots named `names` (or LIKE `like`) on the server of
    `conn`, ending the walsender of an active one first. Returns the dropped slots."""
    dropped: list[str] = []
    for attempt in range(50):
        rows = conn.execute(
            "SELECT slot_name, active_pid FROM pg_replication_slots"
            " WHERE database = current_database() AND (slot_name = ANY(%s)"
            " OR slot_name LIKE %s)",
            (names, like or ""),
        ).fetchall()
        if not rows:
            return dropped
        for slot, pid in rows:
            try:
                if pid is not None:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    continue  # dropped on the next pass, once its walsender is gone
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                dropped.append(slot)
            except (psycopg.errors.ObjectInUse, psycopg.errors.UndefinedObject):
                pass  # taken again (retried), or gone meanwhile
        time.sleep(min(0.02 * (attempt + 1), 0.5))
    left = ", ".join(r[0] for r in rows)
    raise MigrationFailed(
        f"replication slot(s) {left} stay in use; end their walsenders and drop them:"
        f" SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE"
        f" slot_name IN ({', '.join(sql.Literal(r[0]).as_string() for r in rows)})"
    )


class MoveRunner:
    def __init__(
        self,
        servers: Servers,
        compiled: CompiledMove,
        store: StateStore,
        settings: Settings,
        reporter: Reporter,
        check_ddl: Callable[[], None],
    ) -> None:
        self.servers = servers
        self.compiled = compiled
        self.names = compiled.names
        self.name = compiled.plan.name
        self.store = store
        self.settings = settings
        self.reporter = reporter
        self.check_ddl = check_ddl

    # ------------------------------------------------------------ subscriptions

    def subscribe(self, step: Subscribe, label: str) -> bool:
        """True when it already existed."""
        name = self.names.channel(step.direction)
        here = self.servers.conn(step.server)
        there = self.servers.conn(publisher(step.direction))
        if subscription_oid(here, name) is not None:
            return True
        # a slot of that name without its subscription: an interrupted CREATE SUBSCRIPTION
        rows = there.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s"
            " AND database = current_database()",
            (name,),
        ).fetchall()
        if rows and rows[0][0] is not None:
            raise MigrationFailed(
                f"replication slot {name} on the {publisher(step.direction)} is in use by"
                f" process {rows[0][0]}, not by this migration's subscription: stop that"
                " process, or rename the migration"
            )
        if rows:
            drop_slots(there, [name])
        here.execute(
            sql.SQL(
                "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (copy_data = {})"
            ).format(
                sql.Identifier(name),
                sql.Literal(self.servers.subscription_conninfo(publisher(step.direction))),
                sql.Identifier(name),
                sql.SQL("true" if step.copy_data else "false"),
            )
        )
        failpoint(f"{label}:in-transaction")
        return False

    def unsubscribe(self, step: Unsubscribe) -> bool:
        """True when there was nothing to drop."""
        name = self.names.channel(step.direction)
        here = self.servers.conn(step.server)
        there = self.servers.conn(publisher(step.direction))
        oid = subscription_oid(here, name)
        ident = sql.Identifier(name)
        if oid is not None:
            try:
                here.execute("SET statement_timeout = '60s'")
                here.execute(sql.SQL("DROP SUBSCRIPTION IF EXISTS {}").format(ident))
            except psycopg.Error as error:
                if here.broken:
                    raise
                # the publisher could not be reached to drop the slot: detach it, drop the
                # subscription, and drop the slot below from here
                log.warning(
                    "detaching the subscription from its slot",
                    subscription=name,
                    error=str(error).splitlines()[0],
                )
                here.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
                here.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
                here.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))
            finally:
                if here.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    here.execute("RESET statement_timeout")
        # the slot (and a table copy's, `pg_<oid>_sync_<relid>_<system id>`) if still there
        like = f"pg\\_{oid}\\_sync\\_%" if oid is not None else None
        dropped = drop_slots(there, [name], like)
        if dropped:
            self.reporter.event("replication slots dropped", slots=dropped)
        return oid is None and not dropped

    # ------------------------------------------------------------ the copy

    def wait_copy(self, step: WaitCopy, phase_index: int, phase_name: str) -> None:
        dst = self.servers.destination
        src = self.servers.source
        name = self.names.forward
        tables = {t.qualified: t for t in self.compiled.tables}
        total = self.compiled.rows or None
        seen: dict[Name, int] = {}
        errors_at_start: int | None = None
        started = time.monotonic()
        last_saved = 0.0
        pause = 0.1
        self.reporter.backfill_started(phase_name, 0, total)
        try:
            while True:
                self.check_ddl()
                if subscription_oid(dst, name) is None:
                    raise MigrationFailed(
                        f"the subscription {name} is gone from the destination: roll back with"
                        " `migrate rollback --to expand` and apply again"
                    )
                states = {
                    (r[0], r[1]): str(r[2])
                    for r in dst.execute(
                        "SELECT n.nspname, c.relname, r.srsubstate FROM pg_subscription_rel r"
                        " JOIN pg_subscription s ON s.oid = r.srsubid JOIN pg_class c"
                        " ON c.oid = r.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE s.subname = %s",
                        (name,),
                    ).fetchall()
                }
                copying = {
                    (r[0], r[1]): int(r[2])
                    for r in dst.execute(
                        "SELECT n.nspname, c.relname, p.tuples_processed"
                        " FROM pg_stat_progress_copy p JOIN pg_class c ON c.oid = p.relid"
                        " JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE p.datid = (SELECT oid FROM pg_database"
                        " WHERE datname = current_database())"
                    ).fetchall()
                }
                rows = 0
                for qualified, table in tables.items():
                    state = states.get(qualified)
                    if qualified in copying and state == "d":
                        seen[qualified] = max(seen.get(qualified, 0), copying[qualified])
                        rows += seen[qualified]
                    elif state in ("f", "s", "r"):
                        rows += max(table.row_estimate or 0, seen.get(qualified, 0))
                ready = sum(1 for q in tables if states.get(q) == "r")
                errors = self._worker_errors(dst, name)
                if errors_at_start is None:
                    errors_at_start = errors
                self._slot_alive(src, name)
                done = ready == len(tables) and all(s == "r" for s in states.values())
                now = time.monotonic()
                if done or now - last_saved >= PROGRESS_SECONDS:
                    last_saved = now
                    failed = errors - errors_at_start
                    reason = f"the copy: {ready} of {len(tables)} table(s) ready"
                    if failed:
                        reason += (
                            f"; the destination's replication workers failed {failed} time(s)"
                            " (see its server log)"
                        )
                    with src.transaction():
                        self.store.save_result(
                            src,
                            self.name,
                            phase_index,
                            {"tables_ready": ready, "tables": len(tables), "worker_errors": failed},
                            rows,
                        )
                        self.store.set_throttle(src, self.name, None if done else reason)
                    elapsed = max(now - started, 1e-6)
                    self.reporter.batch(
                        phase_name,
                        BatchReport(rows, total, 0, 0.0, 0, rows / elapsed),
                    )
                    if failed >= WORKER_ERRORS_LIMIT:
                        raise MigrationFailed(
                            f"the destination's replication workers failed {failed} times during"
                            " the copy: see its server log (pg_stat_subscription_stats counts"
                            " them), fix the cause, and apply again"
                        )
                if done:
                    return
                time.sleep(pause)
                pause = min(pause * 1.5, 0.25)
        finally:
            self.reporter.backfill_finished()

    @staticmethod
    def _worker_errors(conn: Connection, name: str) -> int:
        if conn.info.server_version < 150000:
            return 0
        row = conn.execute(
            "SELECT apply_error_count + sync_error_count FROM pg_stat_subscription_stats"
            " WHERE subname = %s",
            (name,),
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    @staticmethod
    def _slot_alive(conn: Connection, name: str) -> None:
        if conn.info.server_version < 130000:
            return
        row = conn.execute(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (name,)
        ).fetchone()
        if row is not None and row[0] == "lost":
            raise MigrationFailed(
                f"the source removed WAL that slot {name} still needed (max_slot_wal_keep_size):"
                " the destination can no longer catch up; roll back and apply again, with a"
                " larger max_slot_wal_keep_size"
            )

    # ------------------------------------------------------------ catching up

    def bump(self, direction: Direction) -> int:
        return bump(self.servers, self.names, direction)

    def wait_marker(
        self, direction: Direction, value: int, deadline: float | None, what: str
    ) -> float:
        return wait_marker(
            self.servers,
            self.names,
            direction,
            value,
            deadline,
            what,
            check=self.check_ddl if direction == "forward" else None,
            reporter=self.reporter,
        )

    def channel_exists(self, direction: Direction) -> bool:
        conn = self.servers.conn(subscriber(direction))
        return subscription_oid(conn, self.names.channel(direction)) is not None

    def catch_up(self, step: CatchUp) -> float | None:
        """The last round trip in seconds; None when the direction has no subscription."""
        if not self.channel_exists(step.direction):
            if step.mode != "fenced" or step.direction == "forward":
                raise MigrationFailed(
                    f"the subscription {self.names.channel(step.direction)} does not exist on"
                    f" the {subscriber(step.direction)}: roll back to dual_write and apply again"
                )
            return None  # a cutover rolled back before replication back existed
        target = subscriber(step.direction)
        limit = step.limit.total_seconds() if step.limit is not None else None
        while True:
            value = self.bump(step.direction)
            deadline = time.monotonic() + limit if step.mode == "fenced" and limit else None
            seconds = self.wait_marker(
                step.direction,
                value,
                deadline,
                f"the {target} did not apply the {publisher(step.direction)}'s last writes within"
                f" fence_timeout {format_duration(step.limit) if step.limit else ''}:"
                " cutover stopped, and its rollback lifts the fence; apply again when `migrate"
                " status` shows less lag",
            )
            if step.mode != "close" or limit is None or seconds <= limit:
                self.reporter.event(
                    "caught up", direction=step.direction, seconds=round(seconds, 3)
                )
                return seconds
            self.reporter.event(
                "not close enough to fence yet",
                behind_seconds=round(seconds, 2),
                max_lag=format_duration(step.limit) if step.limit else None,
            )

    # ------------------------------------------------------------ sequences

    def sync_sequences(self, step: SyncSequences) -> None:
        source = self.servers.conn(publisher(step.direction))
        target = self.servers.conn(subscriber(step.direction))
        for name in step.sequences:
            ident = sql.Identifier(*name)
            have = _sequence(source, name)
            mine = _sequence(target, name)
            if have is None or mine is None:
                where = "the source" if have is None else "the destination"
                raise MigrationFailed(f"sequence {display(name)} is missing on {where}")
            used, step_by = have
            current, _ = mine
            if used is None or (current is not None and (used - current) * step_by <= 0):
                continue  # never used there, or already at or past it here
            target.execute(
                sql.SQL("SELECT setval({}, %s, true)").format(sql.Literal(ident.as_string())),
                (used,),
            )
            log.info("sequence set", sequence=display(name), value=used)

    # ------------------------------------------------------------ fences and hooks

    def fence(
        self,
        step: Fence,
        label: str,
        record: Callable[[Connection], None],
    ) -> None:
        as_sql = SqlStep(
            description=step.description,
            statements=step.statements,
            lock=step.lock,
            server=step.server,
        )
        run_sql_step(self.servers.conn(step.server), as_sql, self.settings, record, label)

    def hook(self, step: Hook) -> None:
        to = "destination" if step.direction == "forward" else "source"
        payload = {
            "migration": self.name,
            "hook": step.which,
            "direction": step.direction,
            "writes_go_to": to,
            "source": self.servers.shown("source"),
            "destination": self.servers.shown("destination"),
            "tables": [t.display for t in self.compiled.tables],
            "at": datetime.now(UTC).isoformat(),
        }
        env = {
            "PGSHIFT_MIGRATION": self.name,
            "PGSHIFT_HOOK": step.which,
            "PGSHIFT_DIRECTION": step.direction,
            "PGSHIFT_WRITES_GO_TO": to,
        }
        seconds = run_hook(
            step.command,
            hook=step.which,
            payload=payload,
            env=env,
            timeout=step.timeout,
            timeout_key="move.hooks.timeout",
        )
        self.reporter.event("hook done", hook=step.which, seconds=round(seconds, 3))


def marker_value(conn: Connection, names: MoveNames) -> int:
    row = conn.execute(sql.SQL("SELECT n FROM {}").format(names.marker)).fetchone()
    return int(row[0]) if row else 0


def bump(servers: Servers, names: MoveNames, direction: Direction) -> int:
    """A new marker value on the publishing side, above what the other side holds: once the
    other side has it, it has applied everything committed before."""
    other = marker_value(servers.conn(subscriber(direction)), names)
    row = (
        servers.conn(publisher(direction))
        .execute(
            sql.SQL(
                "UPDATE {} SET n = greatest(n, %s) + 1, at = clock_timestamp() RETURNING n"
            ).format(names.marker),
            (other,),
        )
        .fetchone()
    )
    if row is None:
        raise MigrationFailed(
            f"the marker table {names.marker.as_string()} on the {publisher(direction)} has no"
            " row: roll the migration back and apply again"
        )
    return int(row[0])


def wait_marker(
    servers: Servers,
    names: MoveNames,
    direction: Direction,
    value: int,
    deadline: float | None,
    what: str,
    check: Callable[[], None] | None = None,
    reporter: Reporter | None = None,
) -> float:
    """Seconds until the subscribing side holds `value`; MigrationFailed(`what`) past
    `deadline`. `check` runs every few seconds of waiting."""
    conn = servers.conn(subscriber(direction))
    started = time.monotonic()
    pause = 0.002
    last_report = started
    while marker_value(conn, names) < value:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise MigrationFailed(what)
        if now - last_report >= 5:
            last_report = now
            if check is not None:
                check()
            if reporter is not None:
                reporter.event(
                    "waiting for the other server to catch up",
                    direction=direction,
                    seconds=round(now - started, 1),
                )
        time.sleep(pause)
        pause = min(pause * 1.5, 0.05)
    return time.monotonic() - started


def _sequence(conn: Connection, name: Name) -> tuple[int | None, int] | None:
    """(the last value handed out, None if none yet; the increment), None when missing."""
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(*name).as_string(),)
    ).fetchone()
    if not row or not row[0]:
        return None
    values = conn.execute(
        sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(*name))
    ).fetchone()
    increment = conn.execute(
        "SELECT seqincrement FROM pg_sequence WHERE seqrelid = %s::regclass",
        (sql.Identifier(*name).as_string(),),
    ).fetchone()
    assert values is not None and increment is not None
    step = int(increment[0])
    last, called = int(values[0]), bool(values[1])
    return (last if called else None), step
