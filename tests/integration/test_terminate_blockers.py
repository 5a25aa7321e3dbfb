"""Opt-in blocker termination at cutover on a real database: a session holding an open
transaction with a lock on the table keeps cutover from its lock. Without the setting cutover
fails after its retries; with it that session is terminated (named in the log and the event
log) and cutover goes through, for both targets; a session younger than the limit, or one of
pgshift's, is left alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from pgshift.plan.load import load_plan
from tests.integration.helpers import cli, error_line, write_plan

COLUMNS = """version: 1
name: blocked
table: public.accounts
columns:
  balance: {{type: bigint}}
settings:
  lock_timeout: 50ms
  lock_retries: 4
  on_failure: pause
{extra}
phases: [expand, dual_write, backfill, cutover, contract]
"""

NEW_TABLE = """version: 1
name: blocked_copy
table: public.accounts
new_table:
  name: public.accounts_v2
  create: |
    CREATE TABLE public.accounts_v2 (
      id bigint PRIMARY KEY, balance bigint NOT NULL, email text NOT NULL, status text,
      created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz
    );
settings:
  lock_timeout: 50ms
  lock_retries: 4
  on_failure: pause
  terminate_blockers_after: 2
  terminate_blockers_older_than: 10ms
phases: [expand, dual_write, backfill, cutover, contract]
"""

TERMINATE = """  terminate_blockers_after: 2
  terminate_blockers_older_than: {older}"""


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    create_accounts(conn, 500)
    return conn


@contextmanager
def blocker(dsn: str, application: str = "billing-worker") -> Iterator[psycopg.Connection[Any]]:
    """A session in an open transaction holding ACCESS SHARE on accounts (any lock conflicts
    with cutover's ACCESS EXCLUSIVE), its transaction at least 50ms old."""
    conn = psycopg.connect(dsn, application_name=application)
    try:
        conn.execute("SELECT count(*) FROM accounts")
        conn.execute("SELECT pg_sleep(0.05)")
        yield conn
    finally:
        conn.close()


def alive(conn: psycopg.Connection[Any]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def terminated_lines(stderr: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in stderr.splitlines()
        if line.startswith("{") and "terminated a session blocking cutover" in line
    ]


def test_cutover_fails_after_its_retries_without_the_setting(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, COLUMNS.format(extra=""))
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    with blocker(dsn) as session:
        result = cli(dsn, "apply", plan)
        assert result.exit_code == 1
        assert "could not get its lock within lock_timeout=50ms in 4 attempts" in error_line(result)
        assert alive(session)
    assert not terminated_lines(result.stderr)


def test_the_blocking_session_is_terminated_and_cutover_succeeds(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, COLUMNS.format(extra=TERMINATE.format(older="10ms")))
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    with blocker(dsn) as session:
        pid = session.info.backend_pid
        result = cli(dsn, "apply", plan)
        assert result.exit_code == 0, result.output
        assert not alive(session)

    logged = terminated_lines(result.stderr)
    assert [line["pid"] for line in logged] == [pid]
    assert logged[0]["level"] == "warning"
    assert logged[0]["application"] == "billing-worker"
    assert logged[0]["user"] == "postgres"
    assert logged[0]["query"] == "SELECT pg_sleep(0.05)"
    assert logged[0]["attempt"] >= 2
    events = accounts.execute(
        "SELECT phase, detail FROM pgshift.events WHERE migration = 'blocked'"
        " AND event = 'blocker terminated'"
    ).fetchall()
    assert [(phase, detail["pid"]) for phase, detail in events] == [("cutover", pid)]
    assert events[0][1]["xact_start"] is not None
    columns = accounts.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'accounts'::regclass AND attname = 'balance'"
    ).fetchone()
    assert columns == ("bigint",)


def test_new_table_swap_terminates_its_blocker(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, NEW_TABLE)
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    with blocker(dsn) as session:
        pid = session.info.backend_pid
        result = cli(dsn, "apply", plan)
        assert result.exit_code == 0, result.output
        assert not alive(session)
    assert [line["pid"] for line in terminated_lines(result.stderr)] == [pid]
    swapped = accounts.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'public.accounts'::regclass AND attname = 'id'"
    ).fetchone()
    assert swapped == ("bigint",)  # the live name is the new table's now


@pytest.mark.parametrize(
    ("older", "application"),
    [("1h", "billing-worker"), ("10ms", "pgshift apply other pid 1@host")],
    ids=["younger than the limit", "one of pgshift's sessions"],
)
def test_a_session_is_left_alone(
    dsn: str,
    accounts: psycopg.Connection[Any],
    tmp_path: Path,
    older: str,
    application: str,
) -> None:
    plan = write_plan(tmp_path, COLUMNS.format(extra=TERMINATE.format(older=older)))
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    with blocker(dsn, application) as session:
        result = cli(dsn, "apply", plan)
        assert result.exit_code == 1
        assert "in 4 attempts" in error_line(result)
        assert alive(session)
    assert not terminated_lines(result.stderr)
    if older == "1h":  # seen blocking, and spared
        assert "younger than terminate_blockers_older_than" in result.stderr
    assert not accounts.execute(
        "SELECT 1 FROM pgshift.events WHERE event = 'blocker terminated'"
    ).fetchall()


def test_the_settings_are_checked(tmp_path: Path) -> None:
    text = COLUMNS.format(extra=TERMINATE.format(older="1s")).replace(
        "lock_retries: 4", "lock_retries: 2"
    )
    result = cli("postgresql://nowhere.invalid/db", "plan", write_plan(tmp_path, text))
    assert result.exit_code == 2
    assert "must be smaller than lock_retries (2)" in result.output
    loaded = load_plan(write_plan(tmp_path, COLUMNS.format(extra=""), "off.yaml"))
    assert loaded.plan.settings.terminate_blockers_after == 0
