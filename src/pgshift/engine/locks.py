"""Lock discipline.

Every lock-taking statement runs under a short lock_timeout, so a waiting ACCESS EXCLUSIVE
request never queues the application's reads behind it for long; on lock timeout or deadlock
(55P03, 40P01) the whole transaction is retried with exponential backoff and jitter, capped at
30 s. One migration is run by one pgshift at a time: a session-level advisory lock, held for the
whole command on a connection of its own, released by the server if the process dies.
"""

from __future__ import annotations

import os
import re
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg import errors as pgerrors
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from pgshift.db import connect
from pgshift.engine.blockers import current_policy
from pgshift.engine.state import LOCK_CLASS, StateStore
from pgshift.errors import LockHeld, MigrationFailed
from pgshift.plan.durations import format_duration, to_ms
from pgshift.plan.model import Settings

log = structlog.get_logger("pgshift.locks")

TABLE_LOCK_CLASS = LOCK_CLASS + 1  # "pgsi": the first key of the per-table lock
T = TypeVar("T")
RETRYABLE = (pgerrors.LockNotAvailable, pgerrors.DeadlockDetected)


def set_timeouts(
    conn: psycopg.Connection[Any],
    lock_timeout: timedelta,
    statement_timeout: timedelta | None,
    local: bool,
) -> None:
    """lock_timeout always (0 waits without limit); statement_timeout only when one is given
    (0 then means no limit), so None leaves the role's or database's own setting in force."""
    conn.execute("SELECT set_config('lock_timeout', %s, %s)", (f"{to_ms(lock_timeout)}ms", local))
    if statement_timeout is not None:
        conn.execute(
            "SELECT set_config('statement_timeout', %s, %s)",
            (f"{to_ms(statement_timeout)}ms", local),
        )


def below_deadlock_timeout(conn: psycopg.Connection[Any], settings: Settings) -> Settings:
    """The settings pgshift runs with: each lock wait shorter than the server's
    deadlock_timeout. When a DDL transaction holding one lock waits for another that an
    application transaction holds while queued behind the first, PostgreSQL breaks the
    deadlock in whichever session checks first, after deadlock_timeout. Giving up sooner
    (and retrying) makes pgshift that session, never the application."""
    row = conn.execute(
        "SELECT setting::int FROM pg_settings WHERE name = 'deadlock_timeout'"
    ).fetchone()
    deadlock = timedelta(milliseconds=row[0]) if row else timedelta(seconds=1)
    if settings.lock_timeout < deadlock:
        return settings
    capped = max(deadlock / 2, timedelta(milliseconds=1))
    log.info(  # the default settings always land here: worth a line, not a warning
        "lock_timeout capped below the server's deadlock_timeout",
        lock_timeout=format_duration(settings.lock_timeout),
        deadlock_timeout=format_duration(deadlock),
        used=format_duration(capped),
    )
    return settings.model_copy(update={"lock_timeout": capped})


# (step, attempt, sqlstate) of each attempt that did not get its lock: the executor records
# them (`lock not granted` events, which the metrics count)
LockWaitListener = Callable[[str, int, str | None], None]
_lock_wait_listener: ContextVar[LockWaitListener | None] = ContextVar(
    "pgshift_lock_wait_listener", default=None
)


@contextmanager
def on_lock_wait(listener: LockWaitListener) -> Iterator[None]:
    """While inside, `listener` hears of every lock not granted (after its transaction ended)."""
    token = _lock_wait_listener.set(listener)
    try:
        yield
    finally:
        _lock_wait_listener.reset(token)


def recording_lock_waits(
    store: StateStore, conn: psycopg.Connection[Any], name: str
) -> AbstractContextManager[None]:
    """While inside, each lock not granted is a `lock not granted` event of migration `name`,
    written on `conn` (idle then: the attempt's transaction has ended)."""

    def record(step: str, attempt: int, sqlstate: str | None) -> None:
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            detail = {"step": step, "attempt": attempt, "sqlstate": sqlstate}
            store.event(conn, name, "lock not granted", detail=detail)

    return on_lock_wait(record)


def _lock_waited(what: str, attempt: int, error: BaseException | None) -> None:
    listener = _lock_wait_listener.get()
    if listener is not None:
        listener(what, attempt, getattr(error, "sqlstate", None))


def with_lock_retries(
    action: Callable[[], T],
    *,
    attempts: int,
    what: str,
    lock_timeout: timedelta,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """Run `action` (one whole transaction) until it gets its locks, at most `attempts` times.
    Inside `terminating_blockers` (cutover, opted in), who blocks an attempt is watched from the
    Nth on, and terminated before the next one."""
    policy = current_policy()

    def note(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "lock not granted, retrying",
            step=what,
            attempt=state.attempt_number,
            of=attempts,
            sqlstate=getattr(error, "sqlstate", None),
            wait_s=round(state.next_action.sleep, 2) if state.next_action else None,
        )
        _lock_waited(what, state.attempt_number, error)
        if policy is not None:
            policy.after_timeout(state.attempt_number)
        if before_retry is not None:
            before_retry()

    try:
        for attempt in Retrying(
            retry=retry_if_exception_type(RETRYABLE),
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=0.2, max=30),
            before_sleep=note,
            reraise=True,
        ):
            with attempt:
                if policy is None:
                    return action()
                with policy.watching(attempt.retry_state.attempt_number):
                    return action()
    except RETRYABLE as error:
        _lock_waited(what, attempts, error)
        raise MigrationFailed(
            f"{what}: could not get its lock within lock_timeout={format_duration(lock_timeout)}"
            f" in {attempts} attempts ({error.sqlstate}); find the blocking session in"
            " pg_stat_activity, or raise lock_retries"
        ) from error
    raise AssertionError("unreachable")


def advisory_key(name: str) -> int:
    """The second advisory key of a migration, as the signed int4 PostgreSQL takes."""
    value = zlib.crc32(name.encode())
    return value - (1 << 32) if value >= (1 << 31) else value


# how long a lock held for a pgshift process of this machine that is gone is waited for: its
# server session ends as soon as the server notices the closed connection (after a kill -9)
DEAD_HOLDER_WAIT = 30.0  # a loaded server can take seconds to notice; waiting is harmless
_OUR_SESSION = re.compile(r"^pgshift .* pid (\d+)@(.+)$")


def _gone(application_name: str) -> bool:
    """Whether the session is one of pgshift's, from this machine, whose process has ended."""
    match = _OUR_SESSION.match(application_name)
    if match is None or not socket.gethostname().startswith(match.group(2)):
        return False  # the name is cut at 63 characters: the host may be a prefix
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's)
    return False


def _try_lock(conn: psycopg.Connection[Any], classid: int, name: str) -> str | None:
    """Take the session advisory lock (classid, crc32 of name); None when taken, else who
    holds it, for the message. A lock a killed pgshift process of this machine still holds
    (through a server session not yet ended) is waited for, briefly."""
    deadline = time.monotonic() + DEAD_HOLDER_WAIT
    while True:
        holder = _lock_or_holder(conn, classid, name)
        if holder is None or time.monotonic() > deadline:
            break
        # a holder no longer seen (its session ended between the two queries) is tried again
        if holder[0] is not None and not _gone(holder[1] or ""):
            break
        time.sleep(0.1)
    if holder is None:
        return None
    if holder[0] is None:
        return "another session"
    return f"{holder[1] or 'a session'} (backend pid {holder[0]}, since {holder[2]})"


def _lock_or_holder(conn: psycopg.Connection[Any], classid: int, name: str) -> Any:
    """None when the lock is now ours, else the holder's (pid, application_name, since)."""
    key = advisory_key(name)
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (classid, key)).fetchone()
    if row and row[0]:
        return None
    holder = lock_holder(conn, classid, name)
    return holder if holder is not None else (None, "another session", "")


def lock_holder(
    conn: psycopg.Connection[Any], classid: int, name: str
) -> tuple[int, str, str] | None:
    """Who holds the advisory lock (classid, crc32 of name) in this database: (pid,
    application_name, backend start), or None when nobody does."""
    row = conn.execute(
        """
        SELECT a.pid, a.application_name, a.backend_start::text FROM pg_locks l
          JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s
           AND l.objsubid = 2 AND l.granted AND l.database = (SELECT oid FROM pg_database
           WHERE datname = current_database())
        """,
        (classid, advisory_key(name) & 0xFFFFFFFF),
    ).fetchone()
    return (int(row[0]), str(row[1] or ""), str(row[2])) if row else None


def table_lock(conn: psycopg.Connection[Any], table: str) -> None:
    """Held by `conn` until it closes: one apply or rollback per table at a time, whatever the
    migration's name (two migrations of one table would each compile against a table the other
    is changing)."""
    holder = _try_lock(conn, TABLE_LOCK_CLASS, table)
    if holder is not None:
        raise LockHeld(
            f"table {table} is being migrated by {holder}; one migration of a table at a time:"
            " wait for it to finish or stop it first"
        )


@contextmanager
def migration_lock(dsn: str, name: str, role: str) -> Iterator[psycopg.Connection[Any]]:
    """Hold the migration's advisory lock for the duration; a second holder exits 1 naming the
    first one."""
    conn = connect(dsn, role=f"{role} {name}")
    try:
        holder = _try_lock(conn, LOCK_CLASS, name)
        if holder is not None:
            raise LockHeld(
                f"migration {name} is being run by {holder}; wait for it to finish or stop it first"
            )
        yield conn
    finally:
        conn.close()
