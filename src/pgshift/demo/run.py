"""`migrate demo` (SPEC §9): a live table migrated while simulated application traffic writes to it.

The demo owns one database, `pgshift_demo`, and recreates it on every run, so a run never depends
on what an earlier one left behind. With no server given it starts the embedded PostgreSQL in a
cache folder that is kept between runs: only the first run pays for initdb.

What it proves is printed from the outside: the migration's phases as the state schema recorded
them, the column as the catalog now describes it, and what the application saw (writes done,
writes failed, latencies), counted by the traffic itself.
"""

from __future__ import annotations

import importlib.resources
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgshift.db import connect, split_name
from pgshift.demo.seed import create_accounts
from pgshift.demo.traffic import MAX_CONNECTIONS, Traffic, TrafficStats
from pgshift.embedded import EmbeddedServer
from pgshift.engine.executor import Executor, one_line
from pgshift.engine.progress import Reporter
from pgshift.engine.state import StateStore
from pgshift.errors import ExitCode, PgshiftError, UsageError
from pgshift.plan.load import LoadedPlan, load_plan
from pgshift.report.report import phase_report

Echo = Callable[[str], None]

DEMO_DATABASE = "pgshift_demo"
PLAN_FILE = "widen_account_balance.yaml"
TABLE = "public.accounts"
COLUMN = "balance"
TARGET_TYPE = "bigint"
STATE_SCHEMA = "pgshift"
# Key updates included: they are the writes a migration gets wrong most easily.
TRAFFIC_MIX = {"insert": 3, "update": 5, "delete": 2, "key_update": 1}
# The traffic keeps writing this long after contract, so writes against the final shape count.
AFTER_MIGRATION = 1.0
INTERRUPTED = 130  # the shell's code for a SIGINT, as the other commands use

# The executor's reporter events this module listens to.
PHASE_STARTED = "phase started"
PHASE_DONE = "phase done"
ROLLING_BACK = "rolling back"
BACKFILL_FINISHED = "backfill finished"


def default_data_dir() -> Path:
    return Path(platformdirs.user_cache_dir("pgshift")) / "demo-pg"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


@dataclass
class _DemoReporter(Reporter):
    """The executor's reporter (log lines, progress bar), also echoing each phase as it ends
    with its duration and the application's writes so far."""

    echo: Echo = print
    traffic: Traffic | None = None
    backfill: dict[str, object] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)

    def event(self, message: str, **fields: object) -> None:
        super().event(message, **fields)
        phase = fields.get("phase")
        if not isinstance(phase, str):
            return
        if message == PHASE_STARTED:
            self._started[phase] = time.perf_counter()
        elif message == PHASE_DONE:
            started = self._started.pop(phase, None)
            seconds = time.perf_counter() - started if started is not None else None
            line = f"  {phase:<12} done in {_duration(seconds):>9}"
            if self.traffic is not None:
                now = self.traffic.snapshot()
                line += f"   application: {now.writes:,} writes, {now.failed} failed"
            self.echo(line)
        elif message == ROLLING_BACK:
            self.echo(f"  {phase:<12} rolling back")
        elif message == BACKFILL_FINISHED:
            self.backfill = dict(fields)


@dataclass
class _Facts:
    """What the catalog and the table say after the migration."""

    column_type: str | None
    not_null: bool
    indexes: list[str]
    leftovers: list[str]
    rows: int
    null_balances: int


@dataclass
class _Outcome:
    migration_status: str
    migration_error: str | None
    phases: list[dict[str, Any]]
    facts: _Facts
    traffic: TrafficStats
    expected_rows: int


@contextmanager
def _interrupt_held_back() -> Iterator[None]:
    """Ctrl-C raised only once the block is over. A KeyboardInterrupt inside the embedded
    package's start-up leaves a running server it no longer knows about, which nothing stops;
    once started, the server is stopped by the demo's clean-up. (On a terminal Ctrl-C reaches
    initdb and pg_ctl too, and they undo their own work.)"""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    except Exception:
        if received:
            raise KeyboardInterrupt from None  # the start failed because of the Ctrl-C
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _check_arguments(rows: int, connections: int, rate: float) -> None:
    if rows < 1:
        raise UsageError("--rows must be 1 or more")
    if not 1 <= connections <= MAX_CONNECTIONS:
        raise UsageError(f"--connections must be between 1 and {MAX_CONNECTIONS}")
    if rate < 0:
        raise UsageError("--rate must be 0 (as fast as possible) or more")


def _with_dbname(dsn: str, dbname: str) -> str:
    return make_conninfo(dsn, dbname=dbname)


def _recreate_database(server_dsn: str, echo: Echo) -> str:
    """Drop and create the demo database through the given one; the demo's DSN."""
    maintenance = server_dsn
    if conninfo_to_dict(server_dsn).get("dbname") == DEMO_DATABASE:
        maintenance = _with_dbname(server_dsn, "postgres")  # cannot drop the one we are in
    with connect(maintenance, role="demo") as admin:
        name = sql.Identifier(DEMO_DATABASE)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
        version = admin.execute("SHOW server_version").fetchone()
        host, port = admin.info.host, admin.info.port
    where = "a Unix socket" if host.startswith("/") else f"{host}:{port}"
    echo(
        f"server      PostgreSQL {version[0] if version else '?'} on {where},"
        f" database {DEMO_DATABASE} created afresh"
    )
    return _with_dbname(server_dsn, DEMO_DATABASE)


def _bundled_plan() -> LoadedPlan:
    resource = importlib.resources.files("pgshift.plans").joinpath(PLAN_FILE)
    # as_file: a real path even when the package is imported from a zip
    with importlib.resources.as_file(resource) as path:
        return load_plan(path)


def _facts(conn: psycopg.Connection[Any]) -> _Facts:
    schema, name = split_name(TABLE)
    table = sql.Identifier(schema or "public", name)
    regclass = table.as_string(conn)
    column = conn.execute(
        """SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
           WHERE attrelid = %s::regclass AND attname = %s AND NOT attisdropped""",
        (regclass, COLUMN),
    ).fetchone()
    indexes = [
        f"{index}{'' if valid else ' (INVALID)'}"
        for index, valid in conn.execute(
            """SELECT i.indexrelid::regclass::text, i.indisvalid FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
               WHERE i.indrelid = %s::regclass AND a.attname = %s ORDER BY 1""",
            (regclass, COLUMN),
        )
    ]
    # After contract nothing of the migration may stay on the table: no shadow or old
    # columns, no triggers.
    leftovers = [
        f"{kind} {object_name}"
        for kind, object_name in conn.execute(
            """SELECT 'column', attname FROM pg_attribute
               WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped
                 AND attname LIKE '%%pgshift%%'
               UNION ALL
               SELECT 'trigger', tgname FROM pg_trigger
               WHERE tgrelid = %s::regclass AND NOT tgisinternal
               ORDER BY 1, 2""",
            (regclass, regclass),
        )
    ]
    counts = conn.execute(
        sql.SQL("SELECT count(*), count(*) FILTER (WHERE {} IS NULL) FROM {}").format(
            sql.Identifier(COLUMN), table
        )
    ).fetchone()
    assert counts is not None
    return _Facts(
        column_type=column[0] if column else None,
        not_null=bool(column and column[1]),
        indexes=indexes,
        leftovers=leftovers,
        rows=counts[0],
        null_balances=counts[1],
    )


def _summary(outcome: _Outcome, rows: int, reporter: _DemoReporter, echo: Echo) -> list[str]:
    """Print the summary; the reasons the run failed, if any."""
    problems: list[str] = []
    if outcome.migration_status != "done":
        problems.append(
            f"migration {outcome.migration_status}: {outcome.migration_error or 'not finished'}"
        )
    echo("")
    echo(f"migration   {outcome.migration_status}")
    for phase in outcome.phases:
        line = f"  {phase['name']:<12} {phase['status']:<11} {_duration(phase['seconds']):>9}"
        if phase["kind"] == "backfill":
            rate = phase["rows_per_second"]
            line += f"   {phase['rows']:,} rows backfilled"
            if rate:
                line += f", {rate:,.0f} rows/s"
            slowest = reporter.backfill.get("slowest_batch_ms")
            batches = reporter.backfill.get("batches")
            if slowest is not None and batches is not None:
                line += f", {batches} batches, slowest {slowest} ms"
        if phase["error"]:
            line += f"   error: {phase['error']}"
        echo(line)

    facts = outcome.facts
    echo("")
    echo(f"table       {TABLE} (from the catalog, after the migration)")
    nullability = "NOT NULL" if facts.not_null else "nullable"
    echo(f"  {COLUMN:<12} {facts.column_type or 'missing'} {nullability}")
    if outcome.migration_status == "done" and facts.column_type != TARGET_TYPE:
        problems.append(f"{TABLE}.{COLUMN} is {facts.column_type or 'missing'}, not {TARGET_TYPE}")
    echo(f"  indexes      {', '.join(facts.indexes) or 'none'} on {COLUMN}")
    echo(f"  leftovers    {', '.join(facts.leftovers) or 'none'} (shadow columns, triggers)")
    echo(f"  null {COLUMN:<7} {facts.null_balances:,} rows")
    if facts.null_balances:
        problems.append(f"{facts.null_balances:,} rows have a NULL {COLUMN}")
    stats = outcome.traffic
    # Every write is its own transaction and counted only once committed, so the row count
    # follows exactly from the seed and the counted inserts and deletes.
    match = "matches" if facts.rows == outcome.expected_rows else "DIFFERS FROM"
    echo(
        f"  rows         {facts.rows:,} ({match} {rows:,} seeded + {stats.inserts:,} inserted"
        f" - {stats.deletes:,} deleted)"
    )
    if facts.rows != outcome.expected_rows:
        problems.append(f"{facts.rows:,} rows in {TABLE}, expected {outcome.expected_rows:,}")

    echo("")
    echo(f"application {stats.seconds:.1f} s of traffic, {stats.writes_per_second:,.0f} writes/s")
    echo(
        f"  writes done  {stats.writes:,} ({stats.inserts:,} inserts, {stats.updates:,} updates,"
        f" {stats.deletes:,} deletes, {stats.key_updates:,} key updates)"
    )
    echo(f"  failed       {stats.failed}")
    for error in stats.errors:
        echo(f"    {error}")
    if stats.failed:
        problems.append(f"{stats.failed} application writes failed")
    echo(
        f"  latency      p99 {stats.p99_latency_ms:,.1f} ms, worst {stats.worst_latency_ms:,.1f} ms"
    )
    if stats.missed or stats.interrupted:
        echo(
            f"  not counted  {stats.missed:,} found no row (deleted meanwhile),"
            f" {stats.interrupted} cancelled at stop"
        )
    return problems


def run_demo(
    *,
    dsn: str | None = None,
    rows: int = 200_000,
    connections: int = 4,
    rate: float = 50.0,
    data_dir: Path | None = None,
    echo: Echo = print,
) -> int:
    """Run the demo; the exit status: 0 when the migration finished, no write failed and the
    table is as it should be (column type, no NULLs, row count), 1 otherwise.

    Ctrl-C stops the traffic and the embedded server before returning 130.
    """
    _check_arguments(rows, connections, rate)
    began = time.perf_counter()
    with ExitStack() as cleanup:
        try:
            code = _run(cleanup, dsn, rows, connections, rate, data_dir, echo)
        except KeyboardInterrupt:
            echo("interrupted: stopping the traffic and the server")
            return INTERRUPTED
        except (PgshiftError, psycopg.Error) as error:
            echo(f"demo failed: {one_line(error)}")
            return int(ExitCode.FAILED)
    echo(f"demo took {time.perf_counter() - began:.1f} s")
    return code


def _run(
    cleanup: ExitStack,
    dsn: str | None,
    rows: int,
    connections: int,
    rate: float,
    data_dir: Path | None,
    echo: Echo,
) -> int:
    if dsn is None:
        folder = data_dir or default_data_dir()
        echo(f"starting    embedded PostgreSQL in {folder}")
        started = time.perf_counter()
        server = EmbeddedServer(folder)
        cleanup.callback(server.stop)
        with _interrupt_held_back():
            server.start()
        echo(f"started     in {_duration(time.perf_counter() - started)}")
        dsn = server.dsn("postgres")
    demo_dsn = _recreate_database(dsn, echo)

    started = time.perf_counter()
    with connect(demo_dsn, role="demo seed") as conn:
        create_accounts(conn, rows, replace=True)
    seeded = _duration(time.perf_counter() - started)
    echo(f"table       {TABLE} with {rows:,} rows, seeded in {seeded}")

    loaded = _bundled_plan()
    pace = f"{rate:g} writes/s each" if rate else "as fast as they can"
    plural = "s" if connections > 1 else ""
    echo(
        f"traffic     {connections} connection{plural}, {pace}:"
        " inserts, updates, deletes, key updates"
    )
    traffic = Traffic(demo_dsn, table=TABLE, connections=connections, rate=rate, mix=TRAFFIC_MIX)
    traffic.start()
    cleanup.callback(traffic.stop)  # stops before the server: callbacks run last in, first out

    echo("")
    about = f": {loaded.plan.description}" if loaded.plan.description else ""
    echo(f"migrating   {loaded.plan.name}{about}")
    reporter = _DemoReporter(echo=echo, traffic=traffic)
    store = StateStore(STATE_SCHEMA, actor="pgshift demo")
    status, error = "done", None
    try:
        result = Executor(demo_dsn, loaded, store, reporter).apply()
        status = result.status
    except PgshiftError as failure:
        # The executor has rolled back what it applied; the traffic's side still matters.
        status, error = "failed", str(failure)
    finally:
        reporter.backfill_finished()
    time.sleep(AFTER_MIGRATION)
    stats = traffic.stop()

    with connect(demo_dsn, role="demo summary") as conn:
        state = store.get(conn, loaded.plan.name)
        phases = [phase_report(p) for p in state.phases] if state else []
        if state is not None and state.status != "done" and error is None:
            error = state.last_error
        if state is not None:
            status = state.status
        facts = _facts(conn)
    outcome = _Outcome(
        migration_status=status,
        migration_error=error,
        phases=phases,
        facts=facts,
        traffic=stats,
        expected_rows=rows + stats.inserts - stats.deletes,
    )
    problems = _summary(outcome, rows, reporter, echo)
    echo("")
    if problems:
        echo(f"FAILED: {'; '.join(problems)}")
        return int(ExitCode.FAILED)
    echo(f"OK: {TABLE}.{COLUMN} is {TARGET_TYPE}, and the application saw no failed write")
    return int(ExitCode.DONE)
