"""Run one SqlStep: in a transaction under lock_timeout with retries, or statement by statement
outside one (CONCURRENTLY). `record` writes the step's checkpoint; for a transactional step it
runs inside the same transaction, so the effect and its record commit together."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import structlog
from psycopg import sql

from pgshift.db import Query
from pgshift.engine.failpoints import failpoint
from pgshift.engine.locks import set_timeouts, with_lock_retries
from pgshift.phases.base import SqlStep
from pgshift.plan.model import Settings

log = structlog.get_logger("pgshift.steps")


def _already_done(conn: psycopg.Connection[Any], step: SqlStep) -> bool:
    if step.done_if is None:
        return False
    row = conn.execute(step.done_if).fetchone()
    return bool(row and row[0])


def drop_invalid_index(conn: psycopg.Connection[Any], schema: str, name: str) -> None:
    """A failed or killed CREATE INDEX CONCURRENTLY leaves an INVALID index that IF NOT EXISTS
    would then happily keep: drop it before building again."""
    row = conn.execute(
        "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    if row and row[0]:
        log.warning(
            "dropping an invalid index left by an interrupted build", index=f"{schema}.{name}"
        )
        conn.execute(
            sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name))
        )


def step_statement_timeout(step: SqlStep, settings: Settings) -> timedelta | None:
    """A step that scans (index builds, VALIDATE, ANALYZE) takes as long as the table is big:
    no limit, whatever the server's default. Catalog-only DDL gets the plan's
    statement_timeout, or the server's when the plan sets none."""
    if step.scans:
        return timedelta(0)
    return settings.statement_timeout or None


def patient(statement: Query) -> bool:
    """The CONCURRENTLY forms (and VACUUM) wait, by design, for older transactions to end, and
    their SHARE UPDATE EXCLUSIVE lock blocks no read or write meanwhile. Under a short
    lock_timeout one long transaction anywhere would make every attempt throw the work away,
    so they wait without a limit; every other statement keeps lock_timeout."""
    text = statement.as_string().upper()
    return "CONCURRENTLY" in text or text.lstrip().startswith("VACUUM")


def run_sql_step(
    conn: psycopg.Connection[Any],
    step: SqlStep,
    settings: Settings,
    record: Callable[[psycopg.Connection[Any]], None],
    label: str,
) -> bool:
    """Run the step; True when it was found already done and skipped."""
    statement_timeout = step_statement_timeout(step, settings)
    if step.transactional:

        def attempt() -> bool:
            with conn.transaction():
                set_timeouts(conn, settings.lock_timeout, statement_timeout, local=True)
                skipped = _already_done(conn, step)
                if not skipped:
                    for statement in step.statements:
                        conn.execute(statement)
                    failpoint(f"{label}:in-transaction")
                record(conn)
            return skipped

        return with_lock_retries(
            attempt,
            attempts=settings.lock_retries,
            what=step.description,
            lock_timeout=settings.lock_timeout,
        )

    if _already_done(conn, step):
        record(conn)
        return True
    try:
        for statement in step.statements:

            def run(statement: Query = statement) -> None:
                if step.builds_index is not None:
                    drop_invalid_index(conn, *step.builds_index)
                lock_timeout = timedelta(0) if patient(statement) else settings.lock_timeout
                set_timeouts(conn, lock_timeout, statement_timeout, local=False)
                conn.execute(statement)

            with_lock_retries(
                run,
                attempts=settings.lock_retries,
                what=step.description,
                lock_timeout=settings.lock_timeout,
            )
    finally:
        conn.execute("RESET lock_timeout; RESET statement_timeout")
    failpoint(f"{label}:in-transaction")
    with conn.transaction():
        record(conn)
    return False
