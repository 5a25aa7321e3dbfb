"""An integer key widened in place while other tables' foreign keys reference it, and the
referencing columns widened after it: the swap moves every CHECK and FOREIGN KEY over a changed
column onto the new column (NOT VALID inside the swap, validated after), under writers on all
three tables, with a crash at every cutover step and a rollback after cutover."""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from pgshift.demo.traffic import Traffic
from pgshift.engine.executor import prepare
from pgshift.engine.state import StateStore
from pgshift.plan.load import load_plan
from tests.integration.helpers import cli, error_line, run_process, write_plan

KEY_PLAN = """version: 1
name: widen_accounts_id
table: public.accounts
columns:
  id: {type: bigint}
settings: {lock_timeout: 500ms, lock_retries: 60}
phases: [expand, dual_write, {backfill: {batch_size: 200}}, verify, cutover, contract]
"""
CHILD_PLAN = """version: 1
name: widen_transfers_account_id
table: public.transfers
columns:
  account_id: {type: bigint}
settings: {lock_timeout: 500ms, lock_retries: 60}
phases: [expand, dual_write, {backfill: {batch_size: 200}}, verify, cutover, contract]
"""
MIX = {"insert": 3, "update": 3, "delete": 2, "key_update": 2}


def _schema(conn: psycopg.Connection[Any], rows: int = 2_000) -> None:
    create_accounts(conn, rows, replace=True)
    conn.execute("DROP TABLE IF EXISTS transfers, history")
    conn.execute("ALTER TABLE accounts ADD CONSTRAINT accounts_id_positive CHECK (id > 0)")
    conn.execute(
        "CREATE TABLE transfers (id serial PRIMARY KEY, account_id int NOT NULL"
        " REFERENCES accounts (id) ON DELETE CASCADE ON UPDATE CASCADE, amount int NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE history (id serial PRIMARY KEY, aid int"
        " REFERENCES accounts (id) ON DELETE SET NULL ON UPDATE CASCADE, note text)"
    )
    conn.execute("INSERT INTO transfers (account_id, amount) SELECT id, 1 FROM accounts")
    conn.execute("INSERT INTO history (aid, note) SELECT id, 'x' FROM accounts WHERE id % 3 = 0")
    conn.execute("ANALYZE")


def _constraint(conn: psycopg.Connection[Any], name: str) -> tuple[Any, ...]:
    """(column it is on or references in accounts, that column's type, validated)."""
    row = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, NULL), c.convalidated
          FROM pg_constraint c
          JOIN pg_attribute a ON a.attrelid = coalesce(nullif(c.confrelid, 0), c.conrelid)
           AND a.attnum = (coalesce(c.confkey, c.conkey))[1]
         WHERE c.conname = %s
        """,
        (name,),
    ).fetchone()
    assert row is not None, name
    return tuple(row)


def _orphans(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM transfers t WHERE NOT EXISTS"
        " (SELECT 1 FROM accounts a WHERE a.id = t.account_id))"
        " + (SELECT count(*) FROM history h WHERE h.aid IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM accounts a WHERE a.id = h.aid))"
    ).fetchone()
    return int(row[0]) if row else -1


class ChildWriter:
    """Inserts into both referencing tables, and updates them, on its own connection. The
    account a row references is locked first (FOR KEY SHARE, as the foreign key's own check
    does), so the writers deleting and re-keying accounts meanwhile cannot fail its insert: any
    error here is the migration's."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.errors: list[str] = []
        self.writes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ChildWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        rng = random.Random(3)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                try:
                    with conn.transaction():
                        account = conn.execute(
                            # the cast keeps the result's type across the swap: a prepared
                            # statement returning the widened column itself fails once there
                            "SELECT id::bigint FROM accounts WHERE id >= %s ORDER BY id LIMIT 1"
                            " FOR KEY SHARE",
                            (rng.randint(1, 2_000),),
                        ).fetchone()
                        if account is None:
                            pass  # deleted or re-keyed before the lock: nothing to reference
                        elif rng.random() < 0.5:
                            conn.execute(
                                "INSERT INTO transfers (account_id, amount) VALUES (%s, 2)",
                                account,
                            )
                        else:
                            conn.execute(
                                "INSERT INTO history (aid, note) VALUES (%s, 'y')", account
                            )
                        conn.execute(
                            "UPDATE transfers SET amount = amount + 1 WHERE id = %s",
                            (rng.randint(1, 2_000),),
                        )
                    self.writes += 1
                except psycopg.Error as error:
                    self.errors.append(f"{error.sqlstate}: {error}")
                self._stop.wait(0.005)


def test_a_referenced_key_and_its_references_widen_under_writers(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    _schema(conn)
    key_plan = write_plan(tmp_path, KEY_PLAN, "key.yaml")
    child_plan = write_plan(tmp_path, CHILD_PLAN, "child.yaml")
    planned = cli(dsn, "plan", key_plan)
    assert planned.exit_code == 0, planned.output
    assert "foreign key transfers_account_id_fkey on transfers" in planned.stdout
    assert "check accounts_id_positive on public.accounts" in planned.stdout
    assert "widen them with migrations of their own" in planned.stdout

    with (
        Traffic(dsn, connections=3, rate=50, mix=MIX, seed=11) as traffic,
        ChildWriter(dsn) as children,
    ):
        result = cli(dsn, "apply", key_plan, "--until", "cutover")
        assert result.exit_code == 0, result.output
        # the references now point at the new bigint key, validated after the swap
        for fk in ("transfers_account_id_fkey", "history_aid_fkey"):
            assert _constraint(conn, fk) == ("id", "bigint", True), fk
        assert _constraint(conn, "accounts_id_positive") == ("id", "bigint", True)

        # a rollback after cutover puts them back on the integer key
        assert cli(dsn, "rollback", key_plan, "--to", "verify").exit_code == 0
        for fk in ("transfers_account_id_fkey", "history_aid_fkey"):
            assert _constraint(conn, fk) == ("id", "integer", True), fk
        assert _constraint(conn, "accounts_id_positive") == ("id", "integer", True)

        assert cli(dsn, "apply", key_plan).exit_code == 0
        # then the referencing column: its own foreign key moves with it
        result = cli(dsn, "apply", child_plan)
        assert result.exit_code == 0, result.output
    stats = traffic.stop()
    assert stats.failed == 0, stats.errors
    assert children.errors == [] and children.writes > 0
    assert stats.key_updates > 0 and stats.deletes > 0
    assert _constraint(conn, "transfers_account_id_fkey") == ("id", "bigint", True)
    assert conn.execute(
        "SELECT format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = 'transfers'::regclass AND attname = 'account_id'"
    ).fetchone() == ("bigint",)
    assert _orphans(conn) == 0
    # no constraint stayed on a column the contract dropped, none is left NOT VALID
    assert conn.execute(
        "SELECT count(*) FROM pg_constraint WHERE NOT convalidated"
        " AND conrelid IN ('accounts'::regclass, 'transfers'::regclass, 'history'::regclass)"
    ).fetchone() == (0,)


def test_a_type_the_other_side_cannot_match_is_refused(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    _schema(conn, rows=10)
    plan = write_plan(tmp_path, KEY_PLAN.replace("type: bigint", "type: text"))
    result = cli(dsn, "plan", plan)
    assert result.exit_code == 2, result.output
    assert "foreign key history_aid_fkey on history references id, whose type changes" in (
        error_line(result)
    ) or "foreign key transfers_account_id_fkey on transfers references id" in error_line(result)
    assert ":5:" in error_line(result)  # at `id:` under columns


def test_a_check_the_new_type_cannot_hold_is_refused_at_plan_time(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 10, replace=True)
    conn.execute("ALTER TABLE accounts ADD CONSTRAINT balance_small CHECK (balance < 1000000)")
    plan = write_plan(
        tmp_path,
        KEY_PLAN.replace("id: {type: bigint}", "balance: {type: text, up: balance::text}"),
    )
    result = cli(dsn, "plan", plan)
    assert result.exit_code == 2, result.output
    assert "check balance_small would not work on the new columns" in error_line(result)


def _labels(dsn: str, plan: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        compiled, _ = prepare(conn, load_plan(plan), StateStore())
    cutover = compiled.phase("cutover")
    return [
        f"cutover:{number}:{when}"
        for number in range(len(cutover.forward))
        for when in ("in-transaction", "after")
    ]


@pytest.mark.parametrize("when", ["in-transaction", "after"])
def test_a_crash_at_every_cutover_step_ends_with_the_references_moved(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, when: str
) -> None:
    plan = write_plan(tmp_path, KEY_PLAN)
    _schema(conn, rows=300)
    labels = [label for label in _labels(dsn, plan) if label.endswith(when)]
    assert len(labels) >= 4
    for label in labels:
        conn.execute("DROP SCHEMA IF EXISTS pgshift CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS pgshift_widen_accounts_id CASCADE")
        _schema(conn, rows=300)
        crashed = run_process(dsn, "apply", plan, env={"PGSHIFT_FAILPOINT": label})
        assert crashed.returncode == -signal.SIGKILL, (label, crashed.stderr[-2000:])
        resumed = cli(dsn, "apply", plan)
        assert resumed.exit_code == 0, (label, resumed.output[-2000:])
        for fk in ("transfers_account_id_fkey", "history_aid_fkey"):
            assert _constraint(conn, fk) == ("id", "bigint", True), (label, fk)
        assert _orphans(conn) == 0, label


def test_in_versions_mode_contract_moves_the_references(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    _schema(conn, rows=500)
    plan = write_plan(
        tmp_path,
        KEY_PLAN.replace(
            "columns:", "application: {mode: versions, schema: app_v2}\ncolumns:"
        ).replace(
            "verify, cutover, contract", "verify, {gate: {name: g, approval: false}}, contract"
        ),
    )
    with ChildWriter(dsn) as children:
        result = cli(dsn, "apply", plan)
        assert result.exit_code == 0, result.output
    assert children.errors == [] and children.writes > 0
    for fk in ("transfers_account_id_fkey", "history_aid_fkey"):
        assert _constraint(conn, fk) == ("id", "bigint", True), fk
    assert _constraint(conn, "accounts_id_positive") == ("id", "bigint", True)
    assert _orphans(conn) == 0
