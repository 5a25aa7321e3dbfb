"""The table copy's fast batches (a plain INSERT, no ON CONFLICT): a copy the trigger writes
while a batch runs still wins, the batch running again in the safe form; a row that breaks
another unique index still stops the copy (tests/integration/test_new_table.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from pgshift.engine.executor import Executor, prepare
from pgshift.engine.state import StateStore
from pgshift.phases.backfill import CopyStep
from pgshift.plan.load import load_plan_text
from tests.integration.helpers import PLANS, cli, write_plan

ROWS = 400


def _plan(batch_size: int) -> str:
    return (
        (PLANS / "accounts_bigint_key.yaml")
        .read_text()
        .replace("  - backfill\n", f"  - {{backfill: {{batch_size: {batch_size}}}}}\n")
        .replace("  - verify\n", "")
    )


def _waiting_on_a_transaction(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE 'pgshift apply %' AND wait_event = 'transactionid'"
    ).fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_copy_the_trigger_writes_during_a_batch_wins(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, outcome: str
) -> None:
    """A writer updates row 100 after the batch's snapshot and holds its transaction open: its
    trigger's copy is in the new table's key index, uncommitted. The batch's plain INSERT of
    row 100 waits for it; on commit the insert fails with a unique violation and the whole
    batch runs again with ON CONFLICT DO NOTHING, keeping the writer's copy; on rollback the
    plain insert goes through. Either way every row is copied once, with its live value."""
    create_accounts(conn, ROWS)
    plan = write_plan(tmp_path, _plan(ROWS * 2))  # one batch holds every row
    assert cli(dsn, "apply", plan, "--until", "dual_write").exit_code == 0

    writer = psycopg.connect(dsn)
    writer.execute("UPDATE accounts SET balance = 424242 WHERE id = 100")
    failures: list[BaseException] = []

    def backfill() -> None:
        try:
            loaded = load_plan_text(_plan(ROWS * 2))
            Executor(dsn, loaded, StateStore()).apply(until="backfill")
        except BaseException as error:  # handed to the test's thread
            failures.append(error)

    thread = threading.Thread(target=backfill)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not _waiting_on_a_transaction(conn):
            assert time.monotonic() < deadline, "the batch never waited for the writer"
            time.sleep(0.05)
        if outcome == "commit":
            writer.commit()
        else:
            writer.rollback()
    finally:
        thread.join(60)
        writer.close()
    assert not failures, failures
    status = conn.execute("SELECT status FROM pgshift.migrations").fetchone()
    assert status is not None and status[0] == "paused"
    live = conn.execute("SELECT id, balance, email FROM accounts ORDER BY id").fetchall()
    copy = conn.execute("SELECT id, balance, email FROM accounts_v2 ORDER BY id").fetchall()
    assert live == copy
    balance = conn.execute("SELECT balance FROM accounts_v2 WHERE id = 100").fetchone()
    assert balance is not None and (balance[0] == 424242) == (outcome == "commit")


def test_copies_the_trigger_made_before_the_backfill_are_kept(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Rows the application changed between dual_write and backfill are in the new table
    already: the fast batches skip them (NOT EXISTS) instead of failing on them, and the
    trigger's copies stay as they are."""
    create_accounts(conn, ROWS)
    plan = write_plan(tmp_path, _plan(50))
    assert cli(dsn, "apply", plan, "--until", "dual_write").exit_code == 0
    conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id % 7 = 0")
    # a copy that differs from its live row: only the trigger's copy can have this value, so
    # a batch that overwrote (or deleted and re-wrote) it would show
    conn.execute("ALTER TABLE accounts_v2 DISABLE TRIGGER USER")
    conn.execute("UPDATE accounts_v2 SET status = 'kept' WHERE id = 70")
    conn.execute("ALTER TABLE accounts_v2 ENABLE TRIGGER USER")
    result = cli(dsn, "apply", plan, "--until", "backfill")
    assert result.exit_code == 0, result.output
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM accounts_v2)"
    ).fetchone()
    assert counts == (ROWS, ROWS)
    kept = conn.execute("SELECT status FROM accounts_v2 WHERE id = 70").fetchone()
    assert kept is not None and kept[0] == "kept"
    wrong = conn.execute(
        "SELECT count(*) FROM accounts a JOIN accounts_v2 b USING (id)"
        " WHERE (a.balance, a.email) IS DISTINCT FROM (b.balance, b.email)"
    ).fetchone()
    assert wrong is not None and wrong[0] == 0


LAST_CREATE_LINE = "    CREATE INDEX accounts_v2_balance_idx ON public.accounts_v2 (balance);\n"


@pytest.mark.parametrize(("mapping", "fast"), [(None, True), ("id::bigint", False)])
def test_only_a_key_copied_as_it_is_gets_the_fast_form(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, mapping: str | None, fast: bool
) -> None:
    """The fast form's NOT EXISTS reads the batch's key range of the new table, which is the
    live table's range only when the new key is the live key copied as it is; a computed key
    (even a cast) keeps ON CONFLICT on every batch. Both copy every row."""
    create_accounts(conn, ROWS)
    text = _plan(50)
    if mapping is not None:
        assert LAST_CREATE_LINE in text
        text = text.replace(LAST_CREATE_LINE, f"{LAST_CREATE_LINE}  columns:\n    id: {mapping}\n")
    store = StateStore()
    store.ensure_schema(conn)
    compiled, _ = prepare(conn, load_plan_text(text), store)
    step = compiled.phase("backfill").forward[0]
    assert isinstance(step, CopyStep)
    statement = step.statement(step.condition(None, None)).as_string(conn)
    assert ("ON CONFLICT" not in statement) == fast
    assert (step.on_conflict is not None) == fast
    result = cli(dsn, "apply", write_plan(tmp_path, text), "--until", "backfill")
    assert result.exit_code == 0, result.output
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM accounts_v2)"
    ).fetchone()
    assert counts == (ROWS, ROWS)
