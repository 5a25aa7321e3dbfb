"""`migrate verify`, the verify phase and require_verify gates on a real migration: clean
under live writers, every planted difference found with its key, exit 4, before and after
cutover, resumable after a kill."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from pgshift.demo.traffic import Traffic
from tests.integration.helpers import cli, definition, error_line, rows, run_process, write_plan

PLAN = """version: 1
name: verified
table: public.accounts
columns:
  balance: {{type: bigint}}
  email_lower: {{type: text, up: lower(email)}}
phases:
  - expand
  - dual_write
  - {{backfill: {{batch_size: 500}}}}
  - {{verify: {{chunk_size: {chunk}}}}}
  - {{gate: {{name: checked, approval: false, require_verify: true}}}}
  - cutover
  - contract
"""


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    create_accounts(conn, 3_000)
    return conn


def plant(conn: psycopg.Connection[Any], statement: str) -> None:
    """Write around the sync trigger, as a bug or a manual fix would."""
    with conn.transaction():
        conn.execute("SET LOCAL pgshift.backfill = 'on'")
        conn.execute(statement)


def test_verify_phase_passes_under_live_writes(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_plan(tmp_path, PLAN.format(chunk=200))
    mix = {"insert": 3, "update": 4, "delete": 2, "key_update": 1}
    with Traffic(dsn, connections=3, rate=80, mix=mix, seed=3) as traffic:
        report = tmp_path / "report.json"
        result = cli(dsn, "apply", path, "--report", str(report))
        assert result.exit_code == 0, result.output
    assert traffic.stop().failed == 0
    data = json.loads(report.read_text())
    assert data["verify"]["differences"] == {"missing": 0, "extra": 0, "changed": 0}
    assert data["verify"]["rows_compared"] >= 2_900


def test_planted_differences_are_found_with_their_keys(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_plan(tmp_path, PLAN.format(chunk=250))
    assert cli(dsn, "apply", path, "--until", "backfill").exit_code == 0
    plant(accounts, "UPDATE accounts SET _pgshift_balance = -1 WHERE id = 17")
    plant(accounts, "UPDATE accounts SET _pgshift_email_lower = NULL WHERE id = 2500")

    result = cli(dsn, "verify", path, "--json")
    assert result.exit_code == 4
    found = json.loads(result.stdout)
    assert found["differences"] == {"missing": 0, "extra": 0, "changed": 2}
    changed = {tuple(e["key"]): e["columns"] for e in found["examples"]}
    assert changed == {(17,): ["balance"], (2500,): ["email_lower"]}
    assert "verify found 2 difference(s)" in error_line(result)

    # the verify phase fails the apply with exit 4, and on_failure: rollback undoes it all
    before = definition(accounts)
    result = cli(dsn, "apply", path)
    assert result.exit_code == 4
    assert "rolled back" in error_line(result)
    assert definition(accounts) != before  # the shadow columns are gone again
    assert "_pgshift_balance" not in str(definition(accounts)["columns"])


def test_after_cutover_the_old_shape_is_checked_through_down(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_plan(tmp_path, PLAN.format(chunk=500))
    assert cli(dsn, "apply", path, "--until", "cutover").exit_code == 0
    assert cli(dsn, "verify", path).exit_code == 0
    plant(
        accounts, "UPDATE accounts SET balance_pgshift_old = balance_pgshift_old + 1 WHERE id = 9"
    )
    result = cli(dsn, "verify", path, "--json")
    assert result.exit_code == 4
    found = json.loads(result.stdout)
    assert [(e["key"], e["columns"]) for e in found["examples"]] == [([9], ["balance"])]


def test_require_verify_gate_stays_closed_on_differences(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    text = PLAN.format(chunk=500).replace("  - {verify: {chunk_size: 500}}\n", "")
    path = write_plan(tmp_path, text)
    assert cli(dsn, "apply", path, "--until", "backfill").exit_code == 0
    plant(accounts, "UPDATE accounts SET _pgshift_balance = 0 WHERE id = 4")
    before, before_rows = definition(accounts), rows(accounts)
    result = cli(dsn, "apply", path)
    assert result.exit_code == 4
    assert "gate checked waits for a clean verify" in error_line(result)
    # a closed gate is not a failure: nothing was rolled back
    assert definition(accounts) == before and rows(accounts) == before_rows
    plant(accounts, "UPDATE accounts SET _pgshift_balance = balance WHERE id = 4")
    assert cli(dsn, "apply", path).exit_code == 0


def test_verify_resumes_after_a_kill_without_counting_twice(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_plan(tmp_path, PLAN.format(chunk=100))
    assert cli(dsn, "apply", path, "--until", "backfill").exit_code == 0
    crashed = run_process(
        dsn, "apply", path, "--until", "verify", env={"PGSHIFT_FAILPOINT": "verify:chunk:7"}
    )
    assert crashed.returncode == -signal.SIGKILL
    checkpoint = accounts.execute(
        "SELECT checkpoint FROM pgshift.phases WHERE kind = 'verify'"
    ).fetchone()[0]  # type: ignore[index]
    assert checkpoint["rows_compared"] > 0 and checkpoint["last_key"]
    assert cli(dsn, "apply", path, "--until", "verify").exit_code == 0
    result = accounts.execute(
        "SELECT checkpoint -> 'result' FROM pgshift.phases WHERE kind = 'verify'"
    ).fetchone()[0]  # type: ignore[index]
    assert result["rows_compared"] == 3_000  # each row once, across the two runs


def test_verify_phase_logs_its_progress_as_verify_progress(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_plan(tmp_path, PLAN.format(chunk=1000))
    result = cli(dsn, "apply", path, "--until", "verify")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    progress = [(e["event"], e["phase"]) for e in events if e["event"].endswith(" progress")]
    assert ("backfill progress", "backfill") in progress
    assert ("verify progress", "verify") in progress
    assert ("backfill progress", "verify") not in progress
