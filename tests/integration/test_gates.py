"""Gates and reports as a CI pipeline uses them: apply stops at a closed gate with exit 3 and a
report, approval opens it (recorded with who and when), apply then finishes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgshift.cli import main
from pgshift.demo.seed import create_accounts
from tests.integration.helpers import cli, error_line, write_plan

PLAN = """version: 1
name: gated
table: public.accounts
columns:
  balance: {{type: bigint}}
phases:
  - expand
  - dual_write
  - backfill
  - gate: {{name: before_cutover{options}}}
  - cutover
  - contract
"""


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    create_accounts(conn, 1_000)
    return conn


def test_apply_stops_at_gate_until_approved(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN.format(options=""))
    report = tmp_path / "report.json"
    summary = tmp_path / "summary.md"
    runner = CliRunner(env={"GITHUB_STEP_SUMMARY": str(summary)})
    args = ["--dsn", dsn, "--log-format", "json", "apply", plan, "--report", str(report)]

    result = runner.invoke(main, args)
    assert result.exit_code == 3, result.output
    assert "gate before_cutover waits for an approval" in error_line(result)
    assert "migrate approve" in error_line(result)
    data = json.loads(report.read_text())
    assert data["status"] == "waiting" and data["exit_code"] == 3
    assert data["gate"]["name"] == "before_cutover" and data["gate"]["approved_by"] is None
    assert [p["status"] for p in data["phases"]] == [
        "done",
        "done",
        "done",
        "waiting",
        "pending",
        "pending",
    ]
    assert "pgshift: gated — waiting (exit 3)" in summary.read_text()

    # still closed on a second try: nothing moved
    assert runner.invoke(main, args).exit_code == 3

    approved = cli(dsn, "approve", plan, "before_cutover", "--by", "alice")
    assert approved.exit_code == 0 and "approved by alice" in approved.stdout
    event = accounts.execute(
        "SELECT actor, detail->>'by', at IS NOT NULL FROM pgshift.events WHERE event = 'approved'"
    ).fetchone()
    assert event == ("alice", "alice", True)

    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["status"] == "done" and data["exit_code"] == 0 and data["gate"] is None
    assert summary.read_text().count("### pgshift: gated") == 3


def test_apply_approve_flag_and_until_gate(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN.format(options=""))
    assert cli(dsn, "apply", plan, "--until", "before_cutover").exit_code == 3
    assert cli(dsn, "apply", plan, "--approve", "nope").exit_code == 2
    result = cli(dsn, "apply", plan, "--approve", "before_cutover")
    assert result.exit_code == 0, result.output


def test_soak_wait_and_rollback_forgets_approval(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN.format(options=", wait: 1h"))
    result = cli(dsn, "apply", plan, "--approve", "before_cutover")
    assert result.exit_code == 3
    message = error_line(result)
    assert "soak time: 1h after the previous phase" in message and "approval" not in message

    assert cli(dsn, "rollback", plan, "--to", "backfill").exit_code == 0
    status = json.loads(cli(dsn, "status", "gated", "--json").stdout)
    assert [p["status"] for p in status["phases"]][3:] == ["rolled_back", "pending", "pending"]
    no_wait = write_plan(tmp_path, PLAN.format(options=", wait: 0"), name="nowait.yaml")
    result = cli(dsn, "apply", no_wait, "--force")
    assert result.exit_code == 3  # the approval went with the rollback
    assert "approval" in error_line(result)


def test_approve_unknown_gate_is_a_usage_error(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN.format(options=""))
    assert cli(dsn, "apply", plan, "--until", "expand").exit_code == 0
    result = cli(dsn, "approve", plan, "after_cutover")
    assert result.exit_code == 2 and "no gate 'after_cutover'" in error_line(result)
