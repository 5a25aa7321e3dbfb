"""kill -9 of `migrate apply` (and of `migrate rollback`) of an `operations` plan at every step
boundary and inside every step's transaction; running it again must finish with the table
exactly as an uninterrupted run leaves it (or, for rollback, as it was before)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from pgshift.engine.state import StateStore
from pgshift.operations.phases import ViolationCheck
from pgshift.phases.base import SqlStep
from pgshift.plan.load import load_plan
from tests.integration.helpers import cli, definition, run_process, write_plan

PLANS = {
    "rename": """
version: 1
name: crash_ops
table: public.accounts
operations:
  - add_check: {name: balance_not_negative, check: "balance >= 0"}
  - add_foreign_key:
      name: accounts_owner_fk
      columns: [owner_id]
      references: {table: owners, columns: [id]}
  - add_unique: {name: accounts_email_key, columns: [email]}
  - set_not_null: {column: owner_id, at: expand}
  - set_default: {column: balance, default: "0", at: expand}
  - set_comment: {column: email, comment: "the login", at: expand}
  - create_index: {name: accounts_created_idx, columns: [created_at]}
  - drop_index: {name: accounts_balance_idx}
  - rename_column: {column: status, to: state}
  - drop_column: {column: updated_at}
phases: [expand, verify, contract]
""",
    "versions": """
version: 1
name: crash_ops
table: public.accounts
application: {mode: versions, schema: app_v2}
operations:
  - rename_column: {column: status, to: state}
  - drop_column: {column: updated_at}
  - add_primary_key: {columns: [email]}
  - rename_table: {to: customers}
phases: [expand, verify, {gate: {name: old_gone, approval: false}}, contract]
""",
}
ROWS = 300


def _fresh(conn: psycopg.Connection[Any], versions: bool) -> None:
    for schema in ("pgshift", "app_v2"):
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    conn.execute("DROP TABLE IF EXISTS customers, owners CASCADE")
    create_accounts(conn, ROWS, replace=True)
    conn.execute("CREATE TABLE owners (id int PRIMARY KEY)")
    conn.execute("INSERT INTO owners SELECT g FROM generate_series(1, 10) g")
    conn.execute("ALTER TABLE accounts ADD COLUMN owner_id int")
    conn.execute("UPDATE accounts SET owner_id = 1 + id % 10")
    if versions:  # a table keyed by email, with no primary key yet
        conn.execute("ALTER TABLE accounts DROP CONSTRAINT accounts_pkey")


def _table(versions: bool) -> str:
    return "public.customers" if versions else "public.accounts"


def _labels(dsn: str, plan: str) -> tuple[list[str], list[str]]:
    """The failpoint labels of the plan's steps, and of expand's rollback, from the compiled
    plan itself."""
    from pgshift.engine.executor import prepare

    with psycopg.connect(dsn, autocommit=True) as conn:
        compiled, _ = prepare(conn, load_plan(plan), StateStore())
    forward = [
        f"{phase.name}:{number}:{where}"
        for phase in compiled.phases
        for number, step in enumerate(phase.forward)
        # counts and gates run no statement of their own to crash inside
        for where in (
            ("in-transaction", "after")
            if isinstance(step, SqlStep) and not isinstance(step, ViolationCheck)
            else ("after",)
        )
    ]
    expand = compiled.phase("expand")
    back = [f"expand:rollback:{number}:in-transaction" for number in range(len(expand.rollback))]
    return forward, back


@pytest.mark.parametrize("mode", sorted(PLANS))
def test_kill_at_every_step_then_apply_finishes(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, mode: str
) -> None:
    versions = mode == "versions"
    plan = write_plan(tmp_path, PLANS[mode])
    _fresh(conn, versions)
    before = definition(conn)
    forward, back = _labels(dsn, plan)
    assert len(forward) >= 12 and back
    assert cli(dsn, "apply", plan).exit_code == 0
    expected = definition(conn, _table(versions))
    for label in forward:
        _fresh(conn, versions)
        crashed = run_process(dsn, "apply", plan, env={"PGSHIFT_FAILPOINT": label})
        assert crashed.returncode == -signal.SIGKILL, (label, crashed.stderr[-2000:])
        resumed = cli(dsn, "apply", plan)
        assert resumed.exit_code == 0, (label, resumed.output[-2000:])
        assert definition(conn, _table(versions)) == expected, label
    for label in back:
        _fresh(conn, versions)
        assert cli(dsn, "apply", plan, "--until", "verify").exit_code == 0
        crashed = run_process(dsn, "rollback", plan, env={"PGSHIFT_FAILPOINT": label})
        assert crashed.returncode == -signal.SIGKILL, (label, crashed.stderr[-2000:])
        again = cli(dsn, "rollback", plan)
        assert again.exit_code == 0, (label, again.output[-2000:])
        assert definition(conn) == before, label
        assert conn.execute("SELECT to_regnamespace('app_v2')").fetchone() == (None,)
