"""Safety behaviour found in review: what pgshift refuses at plan time, what it carries over,
and how it behaves at the point of no return and around long transactions."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgshift.demo.seed import create_accounts
from tests.integration.helpers import cli, definition, error_line, run_process, write_plan

PLAN = """version: 1
name: safety
table: public.accounts
columns:
  {column}:
{spec}
settings: {{lock_timeout: 200ms, lock_retries: 3}}
phases: [expand, dual_write, backfill, cutover, contract]
"""


def plan(tmp_path: Path, column: str = "balance", spec: str = "    type: bigint") -> str:
    return write_plan(tmp_path, PLAN.format(column=column, spec=spec))


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    create_accounts(conn, 500)
    return conn


def test_up_is_checked_as_the_trigger_assigns_it(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # text does not assign to bigint, though an explicit cast would accept it
    result = cli(dsn, "plan", plan(tmp_path, spec="    type: bigint\n    up: status"))
    assert result.exit_code == 2
    assert "up of 'balance' does not work" in error_line(result)


def test_default_is_not_executed_at_plan_time(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    accounts.execute("CREATE SEQUENCE s")
    spec = "    type: bigint\n    default: nextval('s')"
    assert cli(dsn, "plan", plan(tmp_path, spec=spec)).exit_code == 0
    assert accounts.execute("SELECT is_called FROM s").fetchone() == (False,)


def test_leftover_shadow_column_is_refused(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    accounts.execute("ALTER TABLE accounts ADD COLUMN _pgshift_balance text")
    result = cli(dsn, "plan", plan(tmp_path))
    assert result.exit_code == 2
    assert "'_pgshift_balance' already exists" in error_line(result)


def test_column_with_its_own_collation_is_refused(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    accounts.execute('ALTER TABLE accounts ALTER COLUMN status TYPE text COLLATE "C"')
    result = cli(dsn, "plan", plan(tmp_path, column="status", spec="    type: varchar(40)"))
    assert result.exit_code == 2
    assert "collation" in error_line(result)


def test_policy_the_new_type_breaks_is_refused(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    accounts.execute("CREATE POLICY rich ON accounts USING (balance > 0)")
    assert cli(dsn, "plan", plan(tmp_path)).exit_code == 0  # bigint > 0 holds: carried over
    result = cli(dsn, "plan", plan(tmp_path, spec="    type: text\n    up: balance::text"))
    assert result.exit_code == 2
    assert "row security of accounts would not work" in error_line(result)


def test_index_storage_options_are_carried_over(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    accounts.execute("DROP INDEX accounts_balance_idx")
    accounts.execute(
        "CREATE INDEX accounts_balance_idx ON accounts (balance DESC NULLS LAST)"
        " WITH (fillfactor = 70)"
    )
    before = [i for i in definition(accounts)["indexes"] if "balance_idx" in i[0]]
    assert cli(dsn, "apply", plan(tmp_path)).exit_code == 0
    after = [i for i in definition(accounts)["indexes"] if "balance_idx" in i[0]]
    assert after == before  # same name, same definition, now on the bigint column


def test_rollback_refuses_once_contract_has_started(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = plan(tmp_path)
    crashed = run_process(dsn, "apply", path, env={"PGSHIFT_FAILPOINT": "contract:0:after"})
    assert crashed.returncode == -signal.SIGKILL
    result = cli(dsn, "rollback", path)
    assert result.exit_code == 1
    assert "contract has started: it is the point of no return" in error_line(result)
    result = cli(dsn, "apply", path)
    assert result.exit_code == 0, result.output
    assert accounts.execute(
        "SELECT format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = 'accounts'::regclass AND attname = 'balance'"
    ).fetchone() == ("bigint",)


def test_index_build_waits_for_a_long_transaction_instead_of_failing(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """CREATE INDEX CONCURRENTLY waits for older snapshots; with lock_timeout 200ms and three
    retries it would fail, so pgshift lets it wait (it blocks no reads or writes)."""
    with psycopg.connect(dsn) as holder:
        # an old snapshot, and no lock on accounts: what a long report query elsewhere holds
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT 1").fetchone()
        outcome: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: outcome.update(
                result=cli(dsn, "apply", plan(tmp_path), "--until", "backfill")
            )
        )
        worker.start()
        time.sleep(2.0)  # ten times lock_timeout: the build must still be waiting, not failed
        assert worker.is_alive()
        holder.rollback()
        worker.join(timeout=60)
    assert outcome["result"].exit_code == 0, outcome["result"].output


SQL_PLAN = """version: 1
name: partial_sql
table: public.accounts
columns:
  balance: {type: bigint}
phases:
  - expand
  - sql:
      name: two_indexes
      up: |
        CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_a_idx ON accounts (email, status);
        CREATE INDEX CONCURRENTLY accounts_email_idx ON accounts (email);
      down: |
        DROP INDEX CONCURRENTLY IF EXISTS accounts_a_idx;
"""


def test_failed_non_transactional_sql_phase_is_undone(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    before = definition(accounts)
    # the second statement fails (the index exists): the first already ran outside a transaction
    result = cli(dsn, "apply", write_plan(tmp_path, SQL_PLAN))
    assert result.exit_code == 1
    assert "rolled back" in error_line(result)
    assert definition(accounts) == before


MIXED_SQL_PLAN = """version: 1
name: mixed_sql
table: public.accounts
columns:
  balance: {type: bigint}
settings: {lock_timeout: 200ms, lock_retries: 2}
phases:
  - expand
  - sql:
      name: index_then_alter
      up: |
        CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_status_idx ON accounts (status);
        ALTER TABLE accounts ADD COLUMN note text;
      down: |
        ALTER TABLE accounts DROP COLUMN IF EXISTS note;
        DROP INDEX CONCURRENTLY IF EXISTS accounts_status_idx;
"""


def test_strong_locks_outside_a_transaction_keep_lock_timeout(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Only the CONCURRENTLY forms wait without a limit: an ALTER beside them in a sql phase
    still gives up after lock_timeout, instead of queueing every reader behind it."""
    path = write_plan(tmp_path, MIXED_SQL_PLAN)
    assert cli(dsn, "apply", path, "--until", "expand").exit_code == 0
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM accounts LIMIT 1")  # ACCESS SHARE held until rollback
        started = time.monotonic()
        result = cli(dsn, "apply", path)
        waited = time.monotonic() - started
        holder.rollback()
    assert result.exit_code == 1
    assert "could not get its lock" in error_line(result)
    assert waited < 5  # two attempts of 200ms and a short backoff, not the holder's lifetime


def test_long_batches_ignore_a_short_database_statement_timeout(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 200_000)
    database = conn.info.dbname
    conn.execute(
        sql.SQL("ALTER DATABASE {} SET statement_timeout = '250ms'").format(
            sql.Identifier(database)
        )
    )
    text = PLAN.format(column="balance", spec="    type: bigint").replace(
        "phases: [expand, dual_write, backfill,",
        "phases: [expand, dual_write, {backfill: {batch_size: 200000}},",
    )
    result = cli(dsn, "apply", write_plan(tmp_path, text), "--until", "backfill")
    assert result.exit_code == 0, result.output  # one 200,000-row UPDATE takes far longer
    assert conn.execute(
        "SELECT rows_done FROM pgshift.phases WHERE kind = 'backfill'"
    ).fetchone() == (200_000,)


def test_lock_waits_stay_below_deadlock_timeout(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """With lock_timeout 1s and the server's deadlock_timeout 1s, an application session queued
    behind pgshift could be picked as a deadlock's victim; pgshift waits half as long."""
    text = PLAN.format(column="balance", spec="    type: bigint").replace(
        "{lock_timeout: 200ms, lock_retries: 3}", "{lock_timeout: 1s, lock_retries: 1}"
    )
    deadlock = accounts.execute("SHOW deadlock_timeout").fetchone()
    assert deadlock == ("1s",)  # the server default these numbers assume
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM accounts LIMIT 1")
        result = cli(dsn, "apply", write_plan(tmp_path, text))
        holder.rollback()
    assert result.exit_code == 1
    assert "within lock_timeout=500ms" in error_line(result)
    assert "lock_timeout capped below the server's deadlock_timeout" in result.stderr
