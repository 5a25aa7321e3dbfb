"""Opt-in, at a table migration's cutover: after `terminate_blockers_after` lock timeouts of one
step, terminate the sessions that keep it from its lock (pg-osc's kill-backends), if their
transaction is older than `terminate_blockers_older_than`.

Who blocks is asked of the server while the step waits: `pg_blocking_pids()` of the waiting
backend. The step runs in this thread and waits inside `execute()`, so a thread of its own, on a
connection of its own, asks every few milliseconds during each attempt from the Nth on.
Between attempts the backend waits for nothing (pg_blocking_pids says nothing then), and the
sessions merely holding a lock on the table are not the answer either: a VALIDATE's SHARE
UPDATE EXCLUSIVE does not wait for the application's reads, and terminating them would not
help it. Of the pids seen, only sessions still holding a granted lock on a migrated table are
terminated (so not those merely queued ahead, nor holders of other tables' locks), never one of
pgshift's own (`application_name` `pgshift ...`), each named in the log and the event log.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any

import psycopg
import structlog

from pgshift.db import connect
from pgshift.plan.durations import format_duration
from pgshift.plan.model import Settings

log = structlog.get_logger("pgshift.blockers")

Connection = psycopg.Connection[Any]
POLL_SECONDS = 0.02
QUERY_SHOWN = 200  # characters of a terminated session's query kept in the log and event

# the blocking sessions still holding a granted lock on one of the tables; never this session
# nor another of pgshift's
_CANDIDATES = """
SELECT a.pid, a.usename, a.application_name, a.xact_start, a.query_start, a.state, a.query,
       clock_timestamp() - coalesce(a.xact_start, a.query_start) >= %(older)s AS old_enough,
       extract(epoch FROM clock_timestamp() - coalesce(a.xact_start, a.query_start))::float8
  FROM pg_stat_activity a
 WHERE a.pid = ANY(%(pids)s::int[])
   AND a.pid <> pg_backend_pid()
   AND coalesce(a.application_name, '') NOT LIKE 'pgshift %%'
   AND EXISTS (SELECT 1 FROM pg_locks l
                WHERE l.pid = a.pid AND l.granted AND l.locktype = 'relation'
                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND l.relation = ANY(%(tables)s::oid[]))
 ORDER BY a.xact_start
"""

_SECRETS = (
    (re.compile(r"(?i)(password\s+)'(?:[^']|'')*'"), r"\1'***'"),  # ALTER ROLE ... PASSWORD '...'
    (re.compile(r"(?i)(password\s*=\s*)('(?:[^']|'')*'|\S+)"), r"\1***"),  # a conninfo's
    (re.compile(r"(://[^:/@\s]*:)[^@\s]*@"), r"\1***@"),  # a connection URI's
)


def shown_query(text: str | None) -> str:
    """A session's query for the log: passwords hidden, cut at QUERY_SHOWN characters."""
    shown = " ".join((text or "").split())
    for pattern, replacement in _SECRETS:
        shown = pattern.sub(replacement, shown)
    return shown if len(shown) <= QUERY_SHOWN else shown[: QUERY_SHOWN - 3] + "..."


class _Watch:
    """Collects the pids `pg_blocking_pids()` reports for `pid` until stopped."""

    def __init__(self, conn: Connection, pid: int) -> None:
        self.conn = conn
        self.pid = pid
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgshift-blockers", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                row = self.conn.execute("SELECT pg_blocking_pids(%s)", (self.pid,)).fetchone()
            except psycopg.Error as error:  # the watch is lost; the step goes on as without it
                log.warning("cannot watch for blocking sessions", error=str(error).strip())
                return
            self.seen.update(row[0] if row and row[0] else [])
            if self._stop.wait(POLL_SECONDS):
                return

    @contextmanager
    def running(self) -> Iterator[None]:
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()


class BlockerPolicy:
    """terminate_blockers_after / _older_than for the steps run on `conn` meanwhile."""

    def __init__(
        self,
        dsn: str,
        conn: Connection,
        tables: list[int],
        settings: Settings,
        record: Callable[[dict[str, Any]], None],
    ) -> None:
        self.dsn = dsn
        self.conn = conn
        self.tables = tables
        self.after = settings.terminate_blockers_after
        self.older_than = settings.terminate_blockers_older_than
        self.record = record
        self._watcher: Connection | None = None
        self._seen: set[int] = set()

    def watching(self, attempt: int) -> AbstractContextManager[None]:
        """Around attempt number `attempt`: from the Nth on, who blocks it is watched."""
        if attempt < self.after:
            return nullcontext()
        if self._watcher is None:
            self._watcher = connect(self.dsn, role="cutover watch")
        watch = _Watch(self._watcher, self.conn.info.backend_pid)
        self._seen = watch.seen
        return watch.running()

    def after_timeout(self, attempt: int) -> None:
        """Attempt `attempt` did not get its lock: from the Nth on, terminate who blocked it."""
        if attempt < self.after:
            return
        seen, self._seen = self._seen, set()
        if not seen:
            return
        try:
            self._terminate_blockers(sorted(seen), attempt)
        except psycopg.Error as error:  # the retries go on as without the setting
            log.warning("cannot terminate the sessions blocking cutover", error=str(error).strip())

    def _terminate_blockers(self, pids: list[int], attempt: int) -> None:
        rows = self.conn.execute(
            _CANDIDATES, {"pids": pids, "tables": self.tables, "older": self.older_than}
        ).fetchall()
        for pid, user, app, xact_start, query_start, state, query, old_enough, age in rows:
            who = {
                "pid": pid,
                "user": user,
                "application": app,
                "xact_start": xact_start.isoformat() if xact_start else None,
                "query_start": query_start.isoformat() if query_start else None,
                "state": state,
                "query": shown_query(query),
            }
            if not old_enough:
                log.info(
                    "a session blocks cutover, younger than terminate_blockers_older_than:"
                    " left alone",
                    older_than=format_duration(self.older_than),
                    age_s=round(age, 3),
                    **who,
                )
                continue
            if self._terminate(pid):
                log.warning("terminated a session blocking cutover", attempt=attempt, **who)
                self.record({**who, "attempt": attempt})

    def _terminate(self, pid: int) -> bool:
        # on PostgreSQL 14+, wait (5 s at most) for the session to end: its locks go with it
        waits = self.conn.info.server_version >= 140000
        query = (
            "SELECT pg_terminate_backend(%s, 5000)" if waits else "SELECT pg_terminate_backend(%s)"
        )
        try:
            row = self.conn.execute(query, (pid,)).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            log.warning(
                "not allowed to terminate a session blocking cutover: grant pgshift's role"
                " pg_signal_backend",
                pid=pid,
            )
            return False
        if not (row and row[0]):
            log.warning(
                "a session blocking cutover was not ended (gone already, or still ending)", pid=pid
            )
            return False
        return True

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None


_policy: ContextVar[BlockerPolicy | None] = ContextVar("pgshift_blocker_policy", default=None)


def current_policy() -> BlockerPolicy | None:
    """The policy in force for lock retries now, if any."""
    return _policy.get()


@contextmanager
def terminating_blockers(
    dsn: str,
    conn: Connection,
    settings: Settings,
    tables: list[str],
    record: Callable[[dict[str, Any]], None],
) -> Iterator[None]:
    """While inside, lock retries of steps run on `conn` follow the plan's
    terminate_blockers_after for sessions holding locks on `tables` (a no-op when it is 0).
    `record` writes an event for each session terminated."""
    if not settings.terminate_blockers_after:
        yield
        return
    oids = [
        int(row[0])
        for name in tables
        if (row := conn.execute("SELECT to_regclass(%s)::oid", (name,)).fetchone())
        and row[0] is not None
    ]
    policy = BlockerPolicy(dsn, conn, oids, settings, record)
    token = _policy.set(policy)
    try:
        yield
    finally:
        _policy.reset(token)
        policy.close()
