"""The `columns` target end to end on a real server: every phase applies, rolls back to exactly
the table as it was (definition and every row), and applies again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from pgshift.plan.load import load_plan
from tests.integration.helpers import (
    PLANS,
    cli,
    definition,
    error_line,
    plan_target,
    rows,
    write_plan,
)

WIDEN = str(PLANS / "widen_account_balance.yaml")
PHASES = ["expand", "dual_write", "backfill", "cutover"]


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    create_accounts(conn, 3_000)
    return conn


@pytest.mark.parametrize("until", PHASES)
def test_apply_rollback_apply_restores_table_exactly(
    dsn: str, accounts: psycopg.Connection[Any], until: str
) -> None:
    before, before_rows = definition(accounts), rows(accounts)

    result = cli(dsn, "apply", WIDEN, "--until", until)
    assert result.exit_code == 0, result.output
    assert definition(accounts) != before  # something really was applied

    result = cli(dsn, "rollback", WIDEN)
    assert result.exit_code == 0, result.output
    assert definition(accounts) == before
    assert rows(accounts) == before_rows

    result = cli(dsn, "apply", WIDEN)
    assert result.exit_code == 0, result.output
    balance = accounts.execute(
        "SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
        " WHERE attrelid = 'accounts'::regclass AND attname = 'balance'"
    ).fetchone()
    assert balance == ("bigint", True)
    after = definition(accounts)
    assert [c[0] for c in after["columns"]] == [
        "id",
        "email",
        "status",
        "created_at",
        "updated_at",
        "balance",
    ]
    assert any("accounts_balance_idx" in i[0] and "(balance)" in i[0] for i in after["indexes"])
    assert after["triggers"] == [] and after["schemas"] == []
    # values unchanged, only the type
    assert accounts.execute("SELECT count(*) FROM accounts WHERE balance IS NULL").fetchone() == (
        0,
    )


def test_rollback_to_keeps_earlier_phases(dsn: str, accounts: psycopg.Connection[Any]) -> None:
    assert cli(dsn, "apply", WIDEN, "--until", "cutover").exit_code == 0
    result = cli(dsn, "rollback", WIDEN, "--to", "dual_write")
    assert result.exit_code == 0, result.output
    # the trigger is still there, the swap is undone
    assert accounts.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'accounts'::regclass AND NOT tgisinternal"
    ).fetchone() == (1,)
    assert accounts.execute(
        "SELECT format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = 'accounts'::regclass AND attname = 'balance'"
    ).fetchone() == ("integer",)
    # and apply goes on from there: backfill runs again from the start
    result = cli(dsn, "apply", WIDEN)
    assert result.exit_code == 0, result.output
    status = cli(dsn, "status", WIDEN, "--json")
    assert '"status": "done"' in status.output


def test_contract_is_the_point_of_no_return(dsn: str, accounts: psycopg.Connection[Any]) -> None:
    assert cli(dsn, "apply", WIDEN).exit_code == 0
    result = cli(dsn, "rollback", WIDEN)
    assert result.exit_code == 1
    assert "point of no return" in error_line(result)


PK_PLAN = """
version: 1
name: widen_accounts_id
table: accounts
columns:
  id:
    type: bigint
phases: [expand, dual_write, {backfill: {batch_size: 500}}, cutover, contract]
"""


def test_primary_key_widening_moves_constraint_and_sequence(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PK_PLAN)
    before, before_rows = definition(accounts), rows(accounts)

    assert cli(dsn, "apply", plan, "--until", "cutover").exit_code == 0
    mid = definition(accounts)
    assert ("accounts_pkey", "PRIMARY KEY (id)", True) in mid["constraints"]
    assert ("accounts_id_seq", "id", "bigint") in mid["sequences"]
    # writes after cutover take keys from the same sequence, and the old column follows
    new_id = accounts.execute(
        "INSERT INTO accounts (balance, email) VALUES (1, 'x@example.dev') RETURNING id"
    ).fetchone()[0]  # type: ignore[index]
    assert new_id > 3_000
    assert accounts.execute(
        "SELECT id_pgshift_old FROM accounts WHERE id = %s", (new_id,)
    ).fetchone() == (new_id,)

    assert cli(dsn, "rollback", plan).exit_code == 0
    assert definition(accounts) == before
    after_rows = rows(accounts)
    assert after_rows[: len(before_rows)] == before_rows  # plus the row written after cutover
    assert len(after_rows) == len(before_rows) + 1

    assert cli(dsn, "apply", plan).exit_code == 0
    final = definition(accounts)
    assert ("accounts_pkey", "PRIMARY KEY (id)", True) in final["constraints"]
    assert ("accounts_id_seq", "id", "bigint") in final["sequences"]
    assert final["columns"][-1][:2] == ("id", "bigint")
    assert final["columns"][-1][3] == "nextval('accounts_id_seq'::regclass)"
    newer = accounts.execute(
        "INSERT INTO accounts (balance, email) VALUES (2, 'y@example.dev') RETURNING id"
    ).fetchone()[0]  # type: ignore[index]
    assert newer == new_id + 1  # no key reused, none skipped by the migration


COMPUTED_PLAN = """
version: 1
name: add_email_lower
table: public.accounts
columns:
  email_lower:
    type: text
    up: lower(email)
    nullable: false
phases: [expand, dual_write, backfill, cutover, contract]
"""


def test_new_computed_column_ends_not_null(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, COMPUTED_PLAN)
    assert cli(dsn, "apply", plan, "--until", "cutover").exit_code == 0
    # after cutover a writer that does not know the column yet still gets it filled
    accounts.execute("INSERT INTO accounts (balance, email) VALUES (1, 'MiXeD@Example.dev')")
    accounts.execute("UPDATE accounts SET email = 'Changed@Example.dev' WHERE id = 1")
    assert accounts.execute(
        "SELECT count(*) FROM accounts WHERE email_lower IS DISTINCT FROM lower(email)"
    ).fetchone() == (0,)
    # one that sets it keeps its value
    accounts.execute(
        "INSERT INTO accounts (balance, email, email_lower) VALUES (1, 'A@b.c', 'custom')"
    )
    assert accounts.execute(
        "SELECT email_lower FROM accounts WHERE email = 'A@b.c'"
    ).fetchone() == ("custom",)
    assert cli(dsn, "apply", plan).exit_code == 0
    assert accounts.execute(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'accounts'::regclass"
        " AND attname = 'email_lower'"
    ).fetchone() == (True,)
    assert not any("pgshift_nn" in c[0] for c in definition(accounts)["constraints"])


def test_bundled_plans_apply_roll_back_and_apply(
    dsn: str, accounts: psycopg.Connection[Any]
) -> None:
    in_place = [p for p in sorted(PLANS.glob("*.yaml")) if plan_target(p) == "columns"]
    assert len(in_place) >= 3
    for plan in in_place:
        before, before_rows = definition(accounts), rows(accounts)
        # up to the last phase before contract and its gates: cutover, or in application mode
        # versions (no cutover) the one before the gate waiting for the old version's sessions
        phases = load_plan(plan).plan.phases
        until = [p.name for p in phases if p.kind not in ("gate", "contract")][-1]
        result = cli(dsn, "apply", str(plan), "--until", until)
        assert result.exit_code == 0, (plan.name, result.output)
        result = cli(dsn, "rollback", str(plan))
        assert result.exit_code == 0, (plan.name, result.output)
        assert definition(accounts) == before, plan.name
        assert rows(accounts) == before_rows, plan.name
    # then each applies fully, in turn, on the same table; this test's session is closed
    # first: older than a versions plan's expand, it would keep its gate shut
    accounts.close()
    for plan in in_place:
        result = cli(dsn, "apply", str(plan))
        assert result.exit_code == 0, (plan.name, result.output)


def test_batches_walk_the_key_in_its_own_order(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """1,000 rows in batches of 100: ten full batches and a last empty one. Sorting the keys as
    text (1, 10, 100, 1000, 101, ...) would give other ranges and another count."""
    create_accounts(conn, 1_000)
    text = PK_PLAN.replace("batch_size: 500", "batch_size: 100").replace(
        "widen_accounts_id", "walk"
    )
    assert cli(dsn, "apply", write_plan(tmp_path, text), "--until", "backfill").exit_code == 0
    assert conn.execute(
        "SELECT rows_done, batches, checkpoint -> 'last' FROM pgshift.phases WHERE kind = 'backfill'"
    ).fetchone() == (1_000, 11, ["1000"])
