"""`migrate demo`: a live table migrated while simulated application traffic writes to it.

By default (application mode `versions`) two application versions run: the old one from the
start, on the table as it was; the new one, deployed once the new shape is filled and
verified, through the version schema's view (balance as bigint). Both write and read back
through prepared statements. The old version is then deployed away, the gate sees none of its
sessions left, and contract makes the new shape the table's own while the new version goes on.
`mode="rename"` runs the rename flow instead (one application, cutover renames the columns
under it), whose writes return no rows: a prepared statement returning balance would fail once
at the rename.

The demo owns one database, `pgshift_demo`, and recreates it on every run, so a run never depends
on what an earlier one left behind. With no server given it starts the embedded PostgreSQL in a
cache folder that is kept between runs: only the first run pays for initdb.

What it proves is printed from the outside: the migration's phases as the state schema recorded
them, the column as the catalog now describes it, and what each application version saw
(writes and reads done, failed, latencies), counted by the traffic itself.
"""

from __future__ import annotations

import importlib.resources
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import platformdirs
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgshift.db import connect, split_name
from pgshift.demo.seed import create_accounts
from pgshift.demo.traffic import KINDS, MAX_CONNECTIONS, Traffic, TrafficStats
from pgshift.embedded import EmbeddedServer
from pgshift.engine.executor import Executor, one_line
from pgshift.engine.progress import Reporter
from pgshift.engine.sessions import new_version_ready, old_sessions, old_sessions_text
from pgshift.engine.state import StateStore
from pgshift.errors import ExitCode, GateWaiting, PgshiftError, UsageError
from pgshift.plan.load import LoadedPlan, load_plan
from pgshift.plan.model import Plan
from pgshift.report.report import phase_report

Echo = Callable[[str], None]

Mode = Literal["versions", "rename"]
MODES: tuple[Mode, ...] = ("versions", "rename")
DEFAULT_MODE: Mode = "versions"

DEMO_DATABASE = "pgshift_demo"
PLAN_FILES: dict[Mode, str] = {
    "versions": "widen_account_balance_versions.yaml",
    "rename": "widen_account_balance.yaml",
}
PLAN_FILE = PLAN_FILES[DEFAULT_MODE]
TABLE = "public.accounts"
COLUMN = "balance"
TARGET_TYPE = "bigint"
STATE_SCHEMA = "pgshift"
# Key updates included: they are the writes a migration gets wrong most easily.
TRAFFIC_MIX = {"insert": 3, "update": 5, "delete": 2, "key_update": 1}
# versions: each version also reads rows back (balance among the columns) through statements
# prepared on the server, which a rename would break
OLD_VERSION_MIX = {**TRAFFIC_MIX, "read": 5}
# No key updates: they set the key to DEFAULT, and through the version view, which carries no
# default for id, that is NULL (an INSERT leaving the key out does get the table's default).
NEW_VERSION_MIX = {"insert": 3, "update": 5, "delete": 2, "read": 5}
# Phases applied before the new version is deployed: its view reads the new columns, which are
# complete (and proven) only once backfill and verify are done.
BEFORE_NEW_VERSION = "verify"
# How long both versions run side by side before the old one is deployed away (a rolling
# deploy's overlap), and how long its closed connections' server processes may take to go.
BOTH_VERSIONS = 1.0
OLD_SESSIONS_GRACE = 5.0
# The traffic keeps writing this long after contract, so writes against the final shape count.
AFTER_MIGRATION = 1.0
INTERRUPTED = 130  # the shell's code for a SIGINT, as the other commands use

# The executor's reporter events this module listens to.
PHASE_STARTED = "phase started"
PHASE_DONE = "phase done"
ROLLING_BACK = "rolling back"
BACKFILL_FINISHED = "backfill finished"


def default_data_dir() -> Path:
    """The user's cache folder; as root, one every user can reach (the embedded server then
    runs as an unprivileged user, see pgshift.embedded)."""
    if os.geteuid() == 0:
        return Path(tempfile.gettempdir()) / "pgshift-demo-pg"
    return Path(platformdirs.user_cache_dir("pgshift")) / "demo-pg"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


@dataclass
class _Version:
    """One application version's traffic, as the summary names it."""

    label: str  # "v1"; "" when there is only one
    about: str
    traffic: Traffic
    reads: bool
    running: bool = False
    stats: TrafficStats | None = None

    def start(self) -> None:
        self.traffic.start()
        self.running = True

    def stop(self) -> TrafficStats:
        self.stats = self.traffic.stop()
        self.running = False
        return self.stats

    def progress(self) -> str:
        now = self.traffic.snapshot()
        reads = f", {now.reads:,} reads" if self.reads else ""
        return f"{self.label or 'application'}: {now.writes:,} writes{reads}, {now.failed} failed"


@dataclass
class _DemoReporter(Reporter):
    """The executor's reporter (log lines, progress bar), also echoing each phase as it ends
    with its duration and each running application version's writes so far."""

    echo: Echo = print
    versions: list[_Version] = field(default_factory=list)
    width: int = 12  # of the phase names' column
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
            line = f"  {phase:<{self.width}} done in {_duration(seconds):>9}"
            running = [version.progress() for version in self.versions if version.running]
            if running:
                line += "   " + "; ".join(running)
            self.echo(line)
        elif message == ROLLING_BACK:
            self.echo(f"  {phase:<{self.width}} rolling back")
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
    view: str | None = None  # versions: the version schema's view
    view_type: str | None = None  # its column's type


@dataclass
class _Outcome:
    migration_status: str
    phases: list[dict[str, Any]]
    facts: _Facts
    versions: list[_Version]
    seeded: int

    @property
    def inserts(self) -> int:
        return sum(v.stats.inserts for v in self.versions if v.stats is not None)

    @property
    def deletes(self) -> int:
        return sum(v.stats.deletes for v in self.versions if v.stats is not None)

    @property
    def expected_rows(self) -> int:
        # Every write is its own transaction and counted only once committed, so the row
        # count follows exactly from the seed and the counted inserts and deletes.
        return self.seeded + self.inserts - self.deletes


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


def _check_arguments(rows: int, connections: int, rate: float, mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}")
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


def _bundled_plan(mode: Mode) -> LoadedPlan:
    resource = importlib.resources.files("pgshift.plans").joinpath(PLAN_FILES[mode])
    # as_file: a real path even when the package is imported from a zip
    with importlib.resources.as_file(resource) as path:
        return load_plan(path)


def _column(conn: psycopg.Connection[Any], regclass: str) -> tuple[str, bool] | None:
    """The demo's column in a table or view: its type and NOT NULL; None when missing."""
    return conn.execute(
        """SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
           WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped""",
        (regclass, COLUMN),
    ).fetchone()


def _facts(conn: psycopg.Connection[Any], view_schema: str | None) -> _Facts:
    schema, name = split_name(TABLE)
    table = sql.Identifier(schema or "public", name)
    regclass = table.as_string(conn)
    column = _column(conn, regclass)
    view = view_type = None
    if view_schema is not None:
        found = _column(conn, sql.Identifier(view_schema, name).as_string(conn))
        view = f"{view_schema}.{name}"
        view_type = found[0] if found else None
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
        view=view,
        view_type=view_type,
    )


def _summary(outcome: _Outcome, reporter: _DemoReporter, echo: Echo) -> list[str]:
    """Print the summary; what is wrong with the table and the traffic, if anything."""
    problems: list[str] = []
    echo("")
    echo(f"migration   {outcome.migration_status}")
    for phase in outcome.phases:
        name, status = phase["name"], phase["status"]
        line = f"  {name:<{reporter.width}} {status:<11} {_duration(phase['seconds']):>9}"
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
    if facts.view is not None:
        view_type = facts.view_type or "missing"
        echo(f"  view         {facts.view}: {COLUMN} {view_type} (the new version's; it stays)")
        if outcome.migration_status == "done" and facts.view_type != TARGET_TYPE:
            problems.append(
                f"{facts.view}.{COLUMN} is {facts.view_type or 'missing'}, not {TARGET_TYPE}"
            )
    match = "matches" if facts.rows == outcome.expected_rows else "DIFFERS FROM"
    echo(
        f"  rows         {facts.rows:,} ({match} {outcome.seeded:,} seeded"
        f" + {outcome.inserts:,} inserted - {outcome.deletes:,} deleted)"
    )
    if facts.rows != outcome.expected_rows:
        problems.append(f"{facts.rows:,} rows in {TABLE}, expected {outcome.expected_rows:,}")
    for version in outcome.versions:
        problems += _version_summary(version, echo)
    return problems


def _version_summary(version: _Version, echo: Echo) -> list[str]:
    """One application version's numbers; the reasons the run failed, if any."""
    stats = version.stats
    if stats is None:
        return []  # never started
    name = f"application {version.label}" if version.label else "application"
    head = f"{name}, {version.about}:" if version.about else name
    echo("")
    echo(f"{head} {stats.seconds:.1f} s of traffic, {stats.writes_per_second:,.0f} writes/s")
    kinds = [
        f"{stats.inserts:,} inserts",
        f"{stats.updates:,} updates",
        f"{stats.deletes:,} deletes",
    ]
    if stats.key_updates or version.traffic.weights[KINDS.index("key_update")]:
        kinds.append(f"{stats.key_updates:,} key updates")
    echo(f"  writes done  {stats.writes:,} ({', '.join(kinds)})")
    if version.reads:
        echo(f"  reads done   {stats.reads:,} (prepared, returning {COLUMN})")
    echo(f"  failed       {stats.failed}")
    for error in stats.errors:
        echo(f"    {error}")
    echo(
        f"  latency      p99 {stats.p99_latency_ms:,.1f} ms, worst {stats.worst_latency_ms:,.1f} ms"
    )
    if stats.missed or stats.interrupted:
        echo(
            f"  not counted  {stats.missed:,} found no row (deleted meanwhile),"
            f" {stats.interrupted} cancelled at stop"
        )
    if not stats.failed:
        return []
    what = "writes and reads" if version.reads else "writes"
    return [f"{stats.failed} {name} {what} failed"]


def run_demo(
    *,
    dsn: str | None = None,
    rows: int = 200_000,
    connections: int = 4,
    rate: float = 50.0,
    data_dir: Path | None = None,
    mode: Mode = DEFAULT_MODE,
    echo: Echo = print,
) -> int:
    """Run the demo; the exit status: 0 when the migration finished, no write or read failed
    and the table is as it should be (column type, no NULLs, row count), 3 when the gate before
    contract stayed shut (versions mode: sessions of the old version still connected), 1
    otherwise.

    Ctrl-C stops the traffic and the embedded server before returning 130.
    """
    _check_arguments(rows, connections, rate, mode)
    began = time.perf_counter()
    with ExitStack() as cleanup:
        try:
            code = _run(cleanup, dsn, rows, connections, rate, data_dir, mode, echo)
        except KeyboardInterrupt:
            echo("interrupted: stopping the traffic and the server")
            return INTERRUPTED
        except (PgshiftError, psycopg.Error) as error:
            echo(f"demo failed: {one_line(error)}")
            return int(ExitCode.FAILED)
    echo(f"demo took {time.perf_counter() - began:.1f} s")
    return code


@dataclass
class _Migration:
    """The executor as the demo drives it, with what the runs came to."""

    executor: Executor
    reporter: _DemoReporter
    status: str = "done"
    error: str | None = None
    waiting: str | None = None  # why a gate stayed shut

    def apply(self, until: str | None = None) -> bool:
        """Apply (up to and with `until`); whether the migration may go on."""
        try:
            self.status = self.executor.apply(until).status
        except GateWaiting as shut:
            self.status, self.waiting = "waiting", str(shut)
        except PgshiftError as failure:
            # The executor has rolled back what it applied; the traffic's side still matters.
            self.status, self.error = "failed", str(failure)
        finally:
            self.reporter.backfill_finished()
        return self.error is None and self.waiting is None


def _run(
    cleanup: ExitStack,
    dsn: str | None,
    rows: int,
    connections: int,
    rate: float,
    data_dir: Path | None,
    mode: Mode,
    echo: Echo,
) -> int:
    if dsn is None:
        folder = data_dir or default_data_dir()
        server = EmbeddedServer(folder)
        if server.notice:
            echo(f"note        {server.notice}")
        echo(f"starting    embedded PostgreSQL in {folder}")
        started = time.perf_counter()
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

    loaded = _bundled_plan(mode)
    plan = loaded.plan
    width = max(12, *(len(phase.name) for phase in plan.phases))
    reporter = _DemoReporter(echo=echo, width=width)
    store = StateStore(STATE_SCHEMA, actor="pgshift demo")
    migration = _Migration(Executor(demo_dsn, loaded, store, reporter), reporter)
    pool = f"{connections} connection{'s' if connections > 1 else ''}"
    unit = "statements" if mode == "versions" else "writes"  # reads count against the rate
    pace = f"{rate:g} {unit}/s each" if rate else "as fast as they can"
    kinds = "inserts, updates, deletes, key updates"
    if mode == "versions":
        first = _Version(
            "v1",
            f"the old version ({TABLE}: {COLUMN} integer)",
            Traffic(
                demo_dsn,
                table=TABLE,
                connections=connections,
                rate=rate,
                mix=OLD_VERSION_MIX,
                name="demo app v1",
            ),
            reads=True,
        )
        echo(f"traffic     v1, the old version: {pool}, {pace}: {kinds}, prepared reads")
    else:
        first = _Version(
            "",
            "",
            Traffic(demo_dsn, table=TABLE, connections=connections, rate=rate, mix=TRAFFIC_MIX),
            reads=False,
        )
        echo(f"traffic     {pool}, {pace}: {kinds}")
    reporter.versions.append(first)
    first.start()
    # stops before the server: callbacks run last in, first out
    cleanup.callback(first.traffic.stop)

    echo("")
    about = f": {plan.description}" if plan.description else ""
    echo(f"migrating   {plan.name}{about}")
    if mode == "rename":
        migration.apply()
    elif migration.apply(until=BEFORE_NEW_VERSION):
        second = _Version(
            "v2",
            f"the new version (search_path {plan.view_schema}, public: {COLUMN} bigint)",
            Traffic(
                demo_dsn,
                table=TABLE,
                connections=connections,
                rate=rate,
                mix=NEW_VERSION_MIX,
                search_path=f"{plan.view_schema}, public",
                name="demo app v2",
            ),
            reads=True,
        )
        _roll_out(cleanup, migration, store, first, second, pool, echo)
    time.sleep(AFTER_MIGRATION)
    for version in reporter.versions:
        if version.running:
            version.stop()
    return _verdict(demo_dsn, store, plan, migration, rows, echo)


def _roll_out(
    cleanup: ExitStack,
    migration: _Migration,
    store: StateStore,
    old: _Version,
    new: _Version,
    pool: str,
    echo: Echo,
) -> None:
    """versions, once the new shape is filled and verified: the new version is deployed beside
    the old one, the old one is deployed away, then the rest of the plan (the gate, contract)."""
    plan = migration.executor.plan
    migration.reporter.versions.append(new)
    new.start()
    cleanup.callback(new.traffic.stop)
    view = f"{plan.view_schema}.{split_name(TABLE)[1]}"
    echo(
        f"deploy      v2, the new version, starts beside v1: {pool} with search_path"
        f" {plan.view_schema}, public, where {view} shows {COLUMN} as {TARGET_TYPE}"
    )
    time.sleep(BOTH_VERSIONS)
    old.stop()
    left = _old_sessions_gone(migration.executor.dsn, store, plan.name)
    echo(f"deploy      v1, the old version, is gone: traffic stopped, connections closed ({left})")
    migration.apply()


def _verdict(
    dsn: str, store: StateStore, plan: Plan, migration: _Migration, rows: int, echo: Echo
) -> int:
    """Print the summary; the exit status."""
    with connect(dsn, role="demo summary") as conn:
        state = store.get(conn, plan.name)
        phases = [phase_report(p) for p in state.phases] if state else []
        error = migration.error or migration.waiting
        if state is not None and state.status != "done" and error is None:
            error = state.last_error
        status = state.status if state is not None else migration.status
        facts = _facts(conn, plan.view_schema if plan.versions else None)
    outcome = _Outcome(
        migration_status=status,
        phases=phases,
        facts=facts,
        versions=migration.reporter.versions,
        seeded=rows,
    )
    problems = _summary(outcome, migration.reporter, echo)
    echo("")
    if migration.waiting is not None:
        echo(
            "WAITING: the migration stopped at a gate (`migrate apply` exits"
            f" {int(ExitCode.WAITING)} there): {migration.waiting}"
        )
        if problems:
            echo(f"FAILED too: {'; '.join(problems)}")
        return int(ExitCode.WAITING)
    if status != "done":
        problems.insert(0, f"migration {status}: {error or 'not finished'}")
    if problems:
        echo(f"FAILED: {'; '.join(problems)}")
        return int(ExitCode.FAILED)
    if plan.versions:
        echo(
            f"OK: {TABLE}.{COLUMN} is {TARGET_TYPE}, and neither application version saw a"
            " failed write or read"
        )
    else:
        echo(f"OK: {TABLE}.{COLUMN} is {TARGET_TYPE}, and the application saw no failed write")
    return int(ExitCode.DONE)


def _old_sessions_gone(dsn: str, store: StateStore, name: str) -> str:
    """Wait (a little) until no session older than the new version is connected: a closed
    connection's server process ends a moment after the client has gone. What is left, as
    words."""
    with connect(dsn, role="demo deploy") as conn:
        state = store.get(conn, name)
        since = new_version_ready(state) if state else None
        if since is None:
            return "backfill has not finished"
        deadline = time.monotonic() + OLD_SESSIONS_GRACE
        while True:
            left = old_sessions(conn, since)
            if not left:
                return "no session older than the new version left"
            if time.monotonic() >= deadline:
                return f"still connected after {OLD_SESSIONS_GRACE:g} s: {old_sessions_text(left)}"
            time.sleep(0.05)
