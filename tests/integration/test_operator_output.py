"""What the operator reads when a command ends: apply's and rollback's summary, a gate stop
that is not an error, verify's differences as a table, every plan error at once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from tests.integration.helpers import cli, run_process, stop_line, write_plan

PLAN = """version: 1
name: summarised
table: public.accounts
columns:
  balance: {type: bigint}
phases:
  - expand
  - dual_write
  - backfill
  - verify
  - gate: {name: before_cutover}
  - cutover
  - contract
"""


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    create_accounts(conn, 2_000)
    return conn


def test_apply_ends_with_a_summary_and_the_next_command(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN)
    result = cli(dsn, "apply", plan, "--until", "backfill")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "summarised on public.accounts: paused" in result.stdout
    backfill = next(line for line in lines if line.strip().startswith("backfill"))
    assert "done" in backfill and "2,000 rows written" in backfill
    assert next(line for line in lines if line.strip().startswith("cutover")).split()[1] == (
        "pending"
    )
    assert lines[-1] == f"next: migrate apply {plan} continues with verify"

    # the gate stops the run on purpose: a summary, then `stopped:` (no `error:`), exit 3
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 3, result.output
    assert "gate before_cutover waits for an approval" in stop_line(result)
    assert "2,000 rows compared, no differences" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        f"next: migrate approve summarised before_cutover, then migrate apply {plan}"
    )

    result = cli(dsn, "apply", plan, "--approve", "before_cutover")
    assert result.exit_code == 0, result.output
    assert "summarised on public.accounts: done" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("next: nothing")


def test_a_failed_apply_still_summarises_what_was_undone(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(
        tmp_path,
        PLAN.replace("balance: {type: bigint}", "balance: {type: bigint, up: balance / 0}"),
    )
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 1, result.output
    assert "summarised on public.accounts: rolled_back" in result.stdout
    assert "error: " in result.stderr
    assert (
        result.stdout.splitlines()[-1]
        == f"next: fix the cause, then migrate apply {plan} starts over"
    )


def test_verify_prints_a_table_of_the_differing_keys_with_both_sides(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN)
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    with accounts.transaction():
        accounts.execute("ALTER TABLE accounts DISABLE TRIGGER USER")
        accounts.execute("UPDATE accounts SET _pgshift_balance = _pgshift_balance + 1 WHERE id = 5")
        accounts.execute("UPDATE accounts SET _pgshift_balance = NULL WHERE id = 9")
        accounts.execute("ALTER TABLE accounts ENABLE TRIGGER USER")
    expected = {
        i: accounts.execute("SELECT balance FROM accounts WHERE id = %s", (i,)).fetchone()[0]  # type: ignore[index]
        for i in (5, 9)
    }
    result = cli(dsn, "verify", plan)
    assert result.exit_code == 4, result.output
    out = result.stdout
    assert "2 difference(s): 0 missing, 0 extra, 2 changed" in out
    assert "expected: the plan's mapping of the live row" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("changed")]
    assert rows == [
        ["changed", "(5)", "balance", str(expected[5]), str(expected[5] + 1)],
        ["changed", "(9)", "balance", str(expected[9]), "NULL"],
    ]
    assert "{" not in out  # no Python dicts
    # two workers, small chunks: the same table
    parallel = cli(dsn, "verify", plan, "--workers", "2", "--chunk-size", "300")
    assert parallel.exit_code == 4, parallel.output
    assert [line.split() for line in parallel.stdout.splitlines() if "changed  " in line] == [
        line.split() for line in out.splitlines() if "changed  " in line
    ]
    data = __import__("json").loads(cli(dsn, "verify", plan, "--json").stdout)
    assert data["sides"] == {"left": "expected", "right": "stored"}
    assert data["differences"]["changed"] == 2


def test_every_plan_error_is_listed_at_once(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path,
        PLAN.replace("table: public.accounts", "tabel: public.accounts").replace(
            "  - backfill\n", "  - backfil\n"
        ),
    )
    result = cli("", "plan", plan)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, result.stderr
    assert "unknown top-level key 'tabel'" in errors[0]
    assert "unknown phase kind 'backfil'" in errors[1]


def test_status_tells_a_run_whose_process_was_killed_from_a_live_one(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN.replace("  - backfill\n", "  - backfill: {batch_size: 100}\n"))
    crashed = run_process(dsn, "apply", plan, env={"PGSHIFT_FAILPOINT": "backfill:batch:3"})
    assert crashed.returncode == -9, crashed.stderr[-2000:]

    def status() -> dict[str, Any]:
        return json.loads(cli(dsn, "status", "summarised", "--json").stdout)

    deadline = time.monotonic() + 10
    while status()["alive"] is not False and time.monotonic() < deadline:
        time.sleep(0.1)  # the killed process's server session ends a moment later
    data = status()
    assert data["status"] == "running" and data["alive"] is False and data["runner"] is None
    backfill = next(p for p in data["phases"] if p["kind"] == "backfill")
    assert backfill["rows"] > 0 and backfill["eta_seconds"] is None
    text = cli(dsn, "status", "summarised").stdout
    assert "interrupted: no pgshift process runs it" in text
    resumed = cli(dsn, "apply", plan, "--until", "backfill")
    assert resumed.exit_code == 0, resumed.stderr
    assert status()["alive"] is None  # not running: nothing to be alive


def test_forget_takes_a_finished_migration_off_status_and_history_keeps_it(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN)
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    refused = cli(dsn, "forget", "summarised")
    assert refused.exit_code == 2 and "is paused: finish it" in refused.stderr
    assert cli(dsn, "rollback", plan).exit_code == 0

    result = cli(dsn, "forget", plan)  # a plan file names its migration too
    assert result.exit_code == 0, result.output
    assert "summarised forgotten" in result.stdout
    assert "no migrations in state schema" in cli(dsn, "status").stdout
    assert cli(dsn, "status", "summarised").exit_code == 2

    history = cli(dsn, "history", "summarised")
    assert history.exit_code == 0, history.output
    events = [line.split()[3] for line in history.stdout.splitlines()[1:]]
    assert events[0] == "created" and events[-1] == "forgotten"
    listed = cli(dsn, "history").stdout
    assert listed.startswith("summarised ") and listed.rstrip().endswith("forgotten")
    assert json.loads(cli(dsn, "history", "summarised", "--json").stdout)[-1]["event"] == (
        "forgotten"
    )
    # forgotten, the plan applies anew from the start
    assert cli(dsn, "apply", plan, "--until", "expand").exit_code == 0
    assert cli(dsn, "history", "nosuch").exit_code == 2


def test_an_operations_gate_waits_for_sessions_older_than_expand(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(
        tmp_path,
        "version: 1\nname: renamed\ntable: public.accounts\n"
        "application: {mode: versions, schema: app_v2}\n"
        "operations:\n  - rename_column: {column: status, to: state}\n"
        "phases:\n  - expand\n"
        "  - gate: {name: old_gone, approval: false, require_no_old_sessions: true}\n"
        "  - contract\n",
    )
    with psycopg.connect(dsn, autocommit=True) as old:  # the old version, connected before
        result = cli(dsn, "apply", plan)
        assert result.exit_code == 3, result.output
        assert f"pid {old.info.backend_pid}" in stop_line(result)
    accounts.close()  # the test's own session is older than expand too
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 0, result.output
    with psycopg.connect(dsn) as fresh:
        assert fresh.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'accounts'::regclass"
            " AND attname = 'state'"
        ).fetchone() == (1,)


def test_plan_and_runbook_name_the_hooks_and_blocker_termination(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(
        tmp_path,
        PLAN.replace(
            "phases:",
            "settings: {terminate_blockers_after: 3, terminate_blockers_older_than: 30s}\n"
            "hooks: {on_gate: notify-team}\nphases:",
        ),
    )
    planned = cli(dsn, "plan", plan)
    assert planned.exit_code == 0, planned.output
    assert "note: hook on_gate: notify-team  (timeout 1m)" in planned.stdout
    assert "cutover terminates sessions that block it" in planned.stdout
    runbook = cli(dsn, "runbook", plan)
    assert "hook on_gate: notify-team" in runbook.stdout
    assert "after 3 lock timeout(s) of a step" in runbook.stdout
