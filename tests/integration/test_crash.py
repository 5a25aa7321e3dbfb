"""kill -9 of `migrate apply` at every step boundary, inside every step's transaction, inside
backfill batches and at random moments; `apply` again must finish consistent, no batch counted
twice. The kills are real SIGKILLs of a real process (see engine/failpoints.py)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from pgshift.engine.state import StateStore
from pgshift.phases.base import BackfillStep
from pgshift.plan.load import load_plan
from tests.integration.helpers import (
    cli,
    create_orders,
    definition,
    rows,
    run_process,
    write_plan,
)

PLAN = """
version: 1
name: crash_id
table: public.accounts
columns:
  id: {type: bigint}
  balance: {type: bigint}
phases: [expand, dual_write, {backfill: {batch_size: 100}}, cutover, contract]
"""
ROWS = 500


def _labels(dsn: str, plan: str) -> list[str]:
    """Every failpoint label of the plan's steps, from the compiled plan itself."""
    from pgshift.engine.executor import prepare

    with psycopg.connect(dsn, autocommit=True) as conn:
        compiled, _ = prepare(conn, load_plan(plan), StateStore())
    labels = []
    for phase in compiled.phases:
        for number, step in enumerate(phase.forward):
            if not isinstance(step, BackfillStep):  # batches have their own points, below
                labels.append(f"{phase.name}:{number}:in-transaction")
            labels.append(f"{phase.name}:{number}:after")
    return [*labels, "backfill:batch:2:in-transaction", "backfill:batch:3"]


def _fresh(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DROP SCHEMA IF EXISTS pgshift CASCADE")
    conn.execute("DROP SCHEMA IF EXISTS pgshift_crash_id CASCADE")
    create_accounts(conn, ROWS, replace=True)


def test_kill_at_every_step_then_apply_finishes(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN)
    _fresh(conn)
    assert cli(dsn, "apply", plan).exit_code == 0
    expected_definition = definition(conn)

    labels = _labels_before_apply(dsn, conn, plan)
    assert len(labels) > 20
    for label in labels:
        _fresh(conn)
        before = _values(conn)
        crashed = run_process(dsn, "apply", plan, env={"PGSHIFT_FAILPOINT": label})
        assert crashed.returncode == -signal.SIGKILL, (label, crashed.stderr[-2000:])
        resumed = cli(dsn, "apply", plan)  # in-process: only the crash needs a real process
        assert resumed.exit_code == 0, (label, resumed.output[-2000:])
        assert definition(conn) == expected_definition, label
        assert _values(conn) == before, label
        backfill = conn.execute(
            "SELECT rows_done, status FROM pgshift.phases WHERE kind = 'backfill'"
        ).fetchone()
        assert backfill == (ROWS, "done"), label  # every row counted exactly once


def _values(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Every value, in an order that does not depend on where cutover moved the columns."""
    return conn.execute(
        "SELECT id, balance, email, status, created_at, updated_at FROM accounts ORDER BY id"
    ).fetchall()


def _labels_before_apply(dsn: str, conn: psycopg.Connection[Any], plan: str) -> list[str]:
    _fresh(conn)
    return _labels(dsn, plan)


def test_kill_inside_rollback_then_rollback_finishes(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN)
    _fresh(conn)
    before, before_rows = definition(conn), rows(conn)
    for label in ["cutover:rollback:0:in-transaction", "expand:rollback:1:in-transaction"]:
        assert cli(dsn, "apply", plan, "--until", "cutover").exit_code == 0
        crashed = run_process(dsn, "rollback", plan, env={"PGSHIFT_FAILPOINT": label})
        assert crashed.returncode == -signal.SIGKILL, (label, crashed.stderr[-2000:])
        assert cli(dsn, "rollback", plan).exit_code == 0, label
        assert definition(conn) == before, label
        assert rows(conn) == before_rows, label


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_at_random_moments_in_backfill(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, seed: int
) -> None:
    plan = write_plan(
        tmp_path,
        PLAN.replace("{batch_size: 100}", "{batch_size: 20, batch_pause: 50ms}"),
    )
    _fresh(conn)
    assert cli(dsn, "apply", plan, "--until", "dual_write").exit_code == 0
    rng = random.Random(seed)
    kills = 0
    for _ in range(3):
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pgshift.cli",
                "--dsn",
                dsn,
                "--log-format",
                "json",
                "apply",
                plan,
                "--until",
                "backfill",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.6, 1.2))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 1  # the backfill was really interrupted at least once
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    assert conn.execute(
        "SELECT rows_done, status FROM pgshift.phases WHERE kind = 'backfill'"
    ).fetchone() == (ROWS, "done")
    assert conn.execute(
        "SELECT count(*) FROM accounts WHERE _pgshift_id IS DISTINCT FROM id"
        " OR _pgshift_balance IS DISTINCT FROM balance"
    ).fetchone() == (0,)


COPY_PLAN = """
version: 1
name: crash_copy
table: public.accounts
new_table:
  name: public.accounts_v2
  create: |
    CREATE TABLE public.accounts_v2 (id bigint PRIMARY KEY, balance bigint NOT NULL,
      email text NOT NULL, status text, created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz);
    CREATE INDEX accounts_v2_email_idx ON public.accounts_v2 (email);
phases: [expand, dual_write, {backfill: {batch_size: 100}}, cutover, contract]
"""


def test_table_copy_killed_at_every_step_then_apply_finishes(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, COPY_PLAN)

    def fresh() -> None:
        conn.execute("DROP SCHEMA IF EXISTS pgshift CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS pgshift_crash_copy CASCADE")
        conn.execute("DROP TABLE IF EXISTS orders, accounts_v2, accounts_pgshift_old")
        create_accounts(conn, ROWS, replace=True)
        create_orders(conn)

    fresh()
    labels = _labels(dsn, plan)
    assert any(label.startswith("cutover:1:in-transaction") for label in labels)
    # the email index is built after the copy: killed after the build, before its record
    assert "backfill:1:in-transaction" in labels
    assert cli(dsn, "apply", plan).exit_code == 0
    expected = definition(conn)
    for label in labels:
        fresh()
        before = _values(conn)
        crashed = run_process(dsn, "apply", plan, env={"PGSHIFT_FAILPOINT": label})
        assert crashed.returncode == -signal.SIGKILL, (label, crashed.stderr[-2000:])
        resumed = cli(dsn, "apply", plan)
        assert resumed.exit_code == 0, (label, resumed.output[-2000:])
        assert definition(conn) == expected, label
        assert _values(conn) == before, label
        assert conn.execute(
            "SELECT confrelid::regclass::text, convalidated FROM pg_constraint"
            " WHERE conrelid = 'orders'::regclass AND contype = 'f'"
        ).fetchone() == ("accounts", True), label
