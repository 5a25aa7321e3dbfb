"""Simulated application traffic: single-row writes (and reads) on several connections at a
steady rate.

`migrate demo` and the concurrency tests run it while a migration changes the table underneath,
to show what the application sees: how many writes it did, how many failed (the point: none),
and how long the slowest one waited.

Each worker thread owns one autocommit connection, so every write is its own transaction and
the table's row count follows exactly from the counted inserts and deletes. Writes name only
the key and the columns the caller calls stable, because columns may be renamed at cutover.
No write returns rows: a prepared statement whose result type changes (an int key becoming
bigint) fails with "cached plan must not change result type", a failure of the traffic itself
that would be blamed on the migration. Reads (the kind `read`, off unless the mix weighs it)
do return the key and `Columns.read`, through statements prepared on the server, as an
application's driver would: under a rename cutover of one of those columns they fail that way,
which is what application mode `versions` avoids. The key range read is never prepared.

`search_path` makes the traffic one application version: its connections set it, and its
statements name the table without its schema, so the path decides which relation they reach
(the version schema's view of the new shape, in versions mode).
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import count
from types import TracebackType
from typing import Any, Literal

import psycopg
from psycopg import errors, sql

from pgshift.db import split_name
from pgshift.demo.seed import DOMAINS, FIRST_NAMES, LAST_NAMES, STATUSES
from pgshift.errors import PgshiftError

Kind = Literal["insert", "update", "delete", "key_update", "read"]
KINDS: tuple[Kind, ...] = ("insert", "update", "delete", "key_update", "read")

Value = str | Callable[[random.Random], object]
"""How a write fills a column: a str is an SQL expression written by the caller (`now()`),
sent as SQL; a callable makes a parameter value from the worker's random generator."""

DEFAULT_MIX: Mapping[str, float] = {
    "insert": 3,
    "update": 5,
    "delete": 2,
    "key_update": 0,
    "read": 0,
}
MAX_ERRORS = 10
MAX_CONNECTIONS = 100
KEY_RANGE_REFRESH = 1.0  # seconds; keeps new keys (inserts, key updates) reachable
STOP_GRACE = 0.5  # seconds a write in flight may take to finish before stop() cancels it
FAILURE_PAUSE = 0.05  # seconds; with rate=0 a failing table must not spin a core


def random_email(rng: random.Random) -> str:
    return (
        f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}{rng.randrange(10**7)}"
        f"@{rng.choice(DOMAINS)}"
    )


def random_status(rng: random.Random) -> str | None:
    return None if rng.random() < 0.05 else rng.choice(STATUSES)


def random_balance(rng: random.Random) -> int:
    # Well inside int4: after a cutover to bigint under the same name it still fits both.
    return rng.randrange(1_000_000)


@dataclass(frozen=True)
class Columns:
    """The columns writes fill, beside the key, and those reads return after the key. Name
    only columns that survive the migration."""

    insert: Mapping[str, Value]
    update: Mapping[str, Value]
    read: tuple[str, ...] = ()


DEMO_COLUMNS = Columns(
    insert={"balance": random_balance, "email": random_email, "status": random_status},
    # balance changes too, so a migration of balance is tested against concurrent new values.
    update={
        "balance": random_balance,
        "email": random_email,
        "status": random_status,
        "updated_at": "now()",
    },
    # balance among them: what a migration of balance changes under a prepared statement
    read=("balance", "email", "status"),
)


@dataclass
class TrafficStats:
    inserts: int
    updates: int
    deletes: int
    key_updates: int
    failed: int
    errors: list[str]  # the first few failures, one line each
    worst_latency_ms: float
    p99_latency_ms: float
    seconds: float
    missed: int = 0  # updates, deletes and reads that found no row (deleted meanwhile)
    interrupted: int = 0  # statements still waiting when stop() cancelled them: not failures
    reads: int = 0  # reads that succeeded and returned a row (not among `writes`)

    @property
    def writes(self) -> int:
        """Writes that succeeded and changed a row."""
        return self.inserts + self.updates + self.deletes + self.key_updates

    @property
    def writes_per_second(self) -> float:
        return self.writes / self.seconds if self.seconds > 0 else 0.0


class _Latencies:
    """A log-bucket histogram (2% wide): p99 in bounded memory however long traffic runs."""

    BASE = 1.02

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.worst = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.worst = max(self.worst, seconds)
        self.buckets[int(math.log(max(seconds * 1e6, 1.0), self.BASE))] += 1

    def merge(self, other: _Latencies) -> None:
        self.count += other.count
        self.worst = max(self.worst, other.worst)
        self.buckets.update(other.buckets)

    def quantile(self, q: float) -> float:
        if not self.count:
            return 0.0
        rank = math.ceil(q * self.count)
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return min(self.BASE ** (bucket + 1) / 1e6, self.worst)
        return self.worst


@dataclass
class _Statements:
    insert: sql.Composed
    insert_values: list[Callable[[random.Random], object]]
    update: sql.Composed
    update_values: list[Callable[[random.Random], object]]
    delete: sql.Composed
    key_update: sql.Composed
    key_range: sql.Composed
    read: sql.Composed
    key_from_default: bool  # the key has a default (sequence, identity): let it give keys


def _assignments(
    columns: Mapping[str, Value],
) -> tuple[list[sql.Composable], list[Callable[[random.Random], object]]]:
    """SQL for each column's value, and the callables making the parameters, in order."""
    values: list[sql.Composable] = []
    makers: list[Callable[[random.Random], object]] = []
    for value in columns.values():
        if isinstance(value, str):
            values.append(sql.SQL(value))
        else:
            values.append(sql.Placeholder())
            makers.append(value)
    return values, makers


def _statements(
    table: sql.Identifier, key: str, columns: Columns, from_default: bool
) -> _Statements:
    k = sql.Identifier(key)
    # A random point in [min, max], then the first key at or after it: one index probe, and
    # holes left by deletes and key updates do not turn writes into misses.
    pick = sql.SQL("(SELECT {k} FROM {t} WHERE {k} >= %s ORDER BY {k} LIMIT 1)").format(
        k=k, t=table
    )
    insert_names = [sql.Identifier(name) for name in columns.insert]
    insert_sql, insert_values = _assignments(columns.insert)
    if not from_default:
        insert_names.insert(0, k)
        insert_sql.insert(0, sql.Placeholder())
    if insert_names:
        insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            table, sql.SQL(", ").join(insert_names), sql.SQL(", ").join(insert_sql)
        )
    else:
        insert = sql.SQL("INSERT INTO {} DEFAULT VALUES").format(table)
    update_sql, update_values = _assignments(columns.update)
    sets = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), value)
        for name, value in zip(columns.update, update_sql, strict=True)
    )
    new_key = sql.SQL("DEFAULT") if from_default else sql.Placeholder()
    return _Statements(
        insert=insert,
        insert_values=insert_values,
        update=sql.SQL("UPDATE {} SET {} WHERE {} = {}").format(table, sets, k, pick),
        update_values=update_values,
        delete=sql.SQL("DELETE FROM {} WHERE {} = {}").format(table, k, pick),
        key_update=sql.SQL("UPDATE {} SET {} = {} WHERE {} = {}").format(
            table, k, new_key, k, pick
        ),
        key_range=sql.SQL("SELECT min({k})::bigint, max({k})::bigint FROM {t}").format(
            k=k, t=table
        ),
        read=sql.SQL("SELECT {} FROM {} WHERE {} = {}").format(
            sql.SQL(", ").join(sql.Identifier(name) for name in (key, *columns.read)),
            table,
            k,
            pick,
        ),
        key_from_default=from_default,
    )


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else type(error).__name__
    state = getattr(error, "sqlstate", None)
    return f"{state} {first}"[:200] if state else first[:200]


def _options(search_path: str | None) -> str:
    """libpq's `options` setting search_path; spaces escaped as libpq wants."""
    if search_path is None:
        return ""
    return "-c search_path=" + search_path.replace("\\", "\\\\").replace(" ", "\\ ")


def _connect(
    dsn: str, number: int, name: str = "demo app", search_path: str | None = None
) -> psycopg.Connection[Any]:
    # Not db.connect: this is the application, and must not look like one of pgshift's sessions.
    return psycopg.connect(
        dsn,
        autocommit=True,
        application_name=f"{name} writer {number}",
        options=_options(search_path),
        connect_timeout=10,
    )


class _Worker(threading.Thread):
    def __init__(
        self,
        number: int,
        connect: Callable[[], psycopg.Connection[Any]],
        conn: psycopg.Connection[Any],
        statements: _Statements,
        weights: list[float],
        rate: float,
        rng: random.Random,
        keys: count[int] | None,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"pgshift-traffic-{number}", daemon=True)
        self.number = number
        self.connect = connect  # a new connection like the first, for a broken one
        self.conn: psycopg.Connection[Any] | None = conn
        self.s = statements
        self.weights = weights
        self.rate = rate
        self.rng = rng
        self.keys = keys  # shared across workers when the key has no default
        self.stop_event = stop
        self.lock = threading.Lock()  # guards the counters against snapshot()
        self.done: Counter[str] = Counter()
        self.failed = 0
        self.missed = 0
        self.interrupted = 0
        self.errors: list[str] = []
        self.latencies = _Latencies()
        self.in_flight_since: float | None = None
        self.low: int | None = None
        self.high: int | None = None
        self.range_read_at = -math.inf

    def run(self) -> None:
        interval = 1.0 / self.rate if self.rate > 0 else 0.0
        next_at = time.perf_counter()
        try:
            while not self.stop_event.is_set():
                if interval:
                    delay = next_at - time.perf_counter()
                    if delay > 0 and self.stop_event.wait(delay):
                        break
                    # Steady, not bursty: after a stall (a lock wait) resume the pace, never
                    # fire the missed writes back to back.
                    next_at = max(next_at + interval, time.perf_counter())
                if not self._step() and not interval:
                    self.stop_event.wait(FAILURE_PAUSE)
        finally:
            if self.conn is not None:
                self.conn.close()

    def cancel(self) -> None:
        conn = self.conn
        if conn is not None:
            # The write may have just ended; the thread is a daemon either way.
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=STOP_GRACE)

    def _fail(self, what: str, error: BaseException) -> None:
        with self.lock:
            self.failed += 1
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(f"{what}: {_one_line(error)}")

    def _connection(self) -> psycopg.Connection[Any] | None:
        # A broken connection is replaced as an application's pool would; not being able to
        # connect is a failed write.
        if self.conn is not None and not self.conn.broken and not self.conn.closed:
            return self.conn
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        try:
            self.conn = self.connect()
        except psycopg.Error as error:
            self._fail("connect", error)
        return self.conn

    def _write(self, conn: psycopg.Connection[Any], kind: Kind) -> int | None:
        """Rows the write changed (or the read returned); None when the table is empty and
        there is nothing to change."""
        rng = self.rng
        params: list[object] = []
        if kind == "insert":
            if self.keys is not None:
                params.append(next(self.keys))
            params.extend(make(rng) for make in self.s.insert_values)
            return conn.execute(self.s.insert, params).rowcount
        if time.monotonic() - self.range_read_at > KEY_RANGE_REFRESH:
            # Not prepared: it returns rows, and the key's type may change under it.
            row = conn.execute(self.s.key_range, prepare=False).fetchone()
            self.low, self.high = row if row is not None else (None, None)
            self.range_read_at = time.monotonic()
        if self.low is None or self.high is None:
            return None
        if kind == "read":
            # prepare=True: prepared on the server from the first run, as drivers do by
            # default after a few (its result types are then fixed for the connection)
            cursor = conn.execute(self.s.read, [rng.randint(self.low, self.high)], prepare=True)
            return 0 if cursor.fetchone() is None else 1
        if kind == "update":
            query = self.s.update
            params.extend(make(rng) for make in self.s.update_values)
        elif kind == "delete":
            query = self.s.delete
        else:
            query = self.s.key_update
            if self.keys is not None:
                params.append(next(self.keys))
        params.append(rng.randint(self.low, self.high))
        return conn.execute(query, params).rowcount

    def _step(self) -> bool:
        """One write or read; False when it failed."""
        conn = self._connection()
        if conn is None:
            return False
        kind = self.rng.choices(KINDS, self.weights)[0]
        # The clock runs from before the occasional key range read: the application would
        # wait for that too. Autocommit: execute returns after the commit.
        started = time.perf_counter()
        self.in_flight_since = started
        try:
            rowcount = self._write(conn, kind)
        except psycopg.Error as error:
            elapsed = time.perf_counter() - started
            self.in_flight_since = None
            with self.lock:
                self.latencies.add(elapsed)
                if isinstance(error, errors.QueryCanceled) and self.stop_event.is_set():
                    self.interrupted += 1  # cancelled by stop(), not by the database
                    return True
            self._fail(kind, error)
            return False
        elapsed = time.perf_counter() - started
        self.in_flight_since = None
        with self.lock:
            self.latencies.add(elapsed)
            if rowcount:
                self.done[kind] += 1
            else:
                self.missed += 1  # found no row: deleted meanwhile, or an empty table
        return True


class Traffic:
    """Writers on `connections` connections, each doing `rate` writes (or reads) a second (0:
    flat out).

    `mix` weighs the kinds of write: insert, update, delete, key_update (the key set to a fresh
    value from its default, or from a counter above the largest key when it has none), and
    read (one row by key, returning the key and `columns.read`, prepared; counted apart from
    the writes). The key must be an integer column. `columns` says which columns inserts and
    updates fill and reads return.

    `search_path` (e.g. "app_v2, public") makes the traffic an application version: every
    connection sets it and the statements name the table without its schema. `table` must then
    name its schema: the key's default and the largest key are read from the table itself.
    `name` begins each connection's application_name (`<name> writer <n>`).
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "public.accounts",
        key: str = "id",
        connections: int = 4,
        rate: float = 50.0,
        mix: Mapping[str, float] | None = None,
        seed: int | None = None,
        columns: Columns = DEMO_COLUMNS,
        search_path: str | None = None,
        name: str = "demo app",
    ) -> None:
        if not 1 <= connections <= MAX_CONNECTIONS:
            raise ValueError(f"connections must be between 1 and {MAX_CONNECTIONS}")
        if rate < 0 or not math.isfinite(rate):
            raise ValueError("rate must be 0 (as fast as possible) or more")
        mix = dict(DEFAULT_MIX if mix is None else mix)
        unknown = set(mix) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown kinds of write in mix: {sorted(unknown)}; use {KINDS}")
        weights = [float(mix.get(kind, 0.0)) for kind in KINDS]
        if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
            raise ValueError("mix weights must be 0 or more, and at least one more than 0")
        if weights[KINDS.index("update")] > 0 and not columns.update:
            raise ValueError("the mix asks for updates but columns.update names no column")
        schema, table_name = split_name(table)
        if search_path is not None and schema is None:
            raise ValueError("with search_path, name the table with its schema (public.accounts)")
        self.dsn = dsn
        self.table = sql.Identifier(schema, table_name) if schema else sql.Identifier(table_name)
        # what the statements name: with a search_path, the path decides
        self.named = sql.Identifier(table_name) if search_path is not None else self.table
        self.search_path = search_path
        self.name = name
        self.key = key
        self.connections = connections
        self.rate = rate
        self.weights = weights
        self.seed = seed
        self.columns = columns
        self._stop = threading.Event()
        self._workers: list[_Worker] = []
        self._started_at: float | None = None
        self._result: TrafficStats | None = None

    def _inspect(self, conn: psycopg.Connection[Any]) -> tuple[bool, int | None]:
        """Whether the key has a default, and the largest key now."""
        try:
            row = self._key_column(conn)
        except errors.UndefinedTable as error:
            raise PgshiftError(f"traffic cannot start: {_one_line(error)}") from error
        if row is None:
            raise PgshiftError(f"{self.table.as_string(conn)} has no column {self.key!r}")
        has_default, is_integer = row
        if not is_integer:
            raise PgshiftError(f"the traffic's key {self.key!r} must be an integer column")
        high = conn.execute(
            sql.SQL("SELECT max({})::bigint FROM {}").format(sql.Identifier(self.key), self.table),
            prepare=False,
        ).fetchone()
        return bool(has_default), high[0] if high else None

    def _key_column(self, conn: psycopg.Connection[Any]) -> tuple[bool, bool] | None:
        return conn.execute(
            """SELECT a.atthasdef OR a.attidentity <> '',
                      a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
               FROM pg_attribute a
               WHERE a.attrelid = %s::regclass AND a.attname = %s AND NOT a.attisdropped""",
            (self.table.as_string(conn), self.key),
        ).fetchone()

    def start(self) -> None:
        """Connect every writer, then let them write. Connection errors raise here."""
        if self._workers:
            raise RuntimeError("traffic already started")
        conns: list[psycopg.Connection[Any]] = []
        try:
            for number in range(self.connections):
                conns.append(self._connect(number))
            has_default, high = self._inspect(conns[0])
        except BaseException:
            for conn in conns:
                conn.close()
            raise
        statements = _statements(self.named, self.key, self.columns, has_default)
        keys = None if has_default else count((high or 0) + 1)
        self._stop.clear()
        self._started_at = time.perf_counter()
        for number, conn in enumerate(conns):
            rng = random.Random(None if self.seed is None else f"{self.seed}/{number}")
            self._workers.append(
                _Worker(
                    number,
                    functools.partial(self._connect, number),
                    conn,
                    statements,
                    self.weights,
                    self.rate,
                    rng,
                    keys,
                    self._stop,
                )
            )
        for worker in self._workers:
            worker.start()

    def _connect(self, number: int) -> psycopg.Connection[Any]:
        return _connect(self.dsn, number, self.name, self.search_path)

    def snapshot(self) -> TrafficStats:
        """The numbers so far, while the traffic runs (for a progress display)."""
        if self._result is not None:
            return self._result
        done: Counter[str] = Counter()
        latencies = _Latencies()
        failed = missed = interrupted = 0
        errors_seen: list[str] = []
        now = time.perf_counter()
        for worker in self._workers:
            with worker.lock:
                done.update(worker.done)
                latencies.merge(worker.latencies)
                failed += worker.failed
                missed += worker.missed
                interrupted += worker.interrupted
                errors_seen.extend(worker.errors)
            since = worker.in_flight_since
            if since is not None and worker.is_alive():
                # A write still waiting counts with the wait so far: a lock held for a long
                # time must show even if it never ends before stop().
                latencies.worst = max(latencies.worst, now - since)
        return TrafficStats(
            inserts=done["insert"],
            updates=done["update"],
            deletes=done["delete"],
            key_updates=done["key_update"],
            reads=done["read"],
            failed=failed,
            errors=errors_seen[:MAX_ERRORS],
            worst_latency_ms=latencies.worst * 1000,
            p99_latency_ms=latencies.quantile(0.99) * 1000,
            seconds=now - self._started_at if self._started_at is not None else 0.0,
            missed=missed,
            interrupted=interrupted,
        )

    def stop(self) -> TrafficStats:
        """Stop the writers (cancelling writes still waiting after a short grace) and sum up."""
        if self._result is not None:
            return self._result
        self._stop.set()
        deadline = time.monotonic() + STOP_GRACE
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        stuck = [worker for worker in self._workers if worker.is_alive()]
        for worker in stuck:
            worker.cancel()
        deadline = time.monotonic() + STOP_GRACE
        for worker in stuck:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._result = self.snapshot()
        return self._result

    def __enter__(self) -> Traffic:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
