"""Gates and reports as a CI pipeline uses them: apply stops at a closed gate with exit 3 and a
report, approval opens it (recorded with who and when), apply then finishes."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgshift.cli import main
from pgshift.demo.seed import create_accounts
from tests.integration.helpers import cli, error_line, stop_line, write_plan

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
    assert "gate before_cutover waits for an approval" in stop_line(result)
    assert "migrate approve" in stop_line(result)
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
    message = stop_line(result)
    assert "soak time: 1h after the previous phase" in message and "approval" not in message

    assert cli(dsn, "rollback", plan, "--to", "backfill").exit_code == 0
    status = json.loads(cli(dsn, "status", "gated", "--json").stdout)
    assert [p["status"] for p in status["phases"]][3:] == ["rolled_back", "pending", "pending"]
    no_wait = write_plan(tmp_path, PLAN.format(options=", wait: 0"), name="nowait.yaml")
    result = cli(dsn, "apply", no_wait, "--force")
    assert result.exit_code == 3  # the approval went with the rollback
    assert "approval" in stop_line(result)


def test_approve_unknown_gate_is_a_usage_error(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN.format(options=""))
    assert cli(dsn, "apply", plan, "--until", "expand").exit_code == 0
    result = cli(dsn, "approve", plan, "after_cutover")
    assert result.exit_code == 2 and "no gate named 'after_cutover'" in error_line(result)


def test_status_after_rollbacks_waits_for_nothing_and_keeps_run_times(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    text = PLAN.format(options=", wait: 1h").replace("  - backfill\n", "  - backfill\n  - verify\n")
    plan = write_plan(tmp_path, text)
    assert cli(dsn, "apply", plan).exit_code == 3
    before = json.loads(cli(dsn, "status", "gated", "--json").stdout)
    assert "soak time" in before["waiting_for"]
    ran = {p["name"]: p["seconds"] for p in before["phases"] if p["status"] == "done"}
    assert set(ran) == {"expand", "dual_write", "backfill", "verify"}

    report = tmp_path / "report.json"
    assert cli(dsn, "rollback", plan, "--to", "verify", "--report", str(report)).exit_code == 0
    for data in (
        json.loads(report.read_text()),
        json.loads(cli(dsn, "status", "gated", "--json").stdout),
    ):
        assert data["waiting_for"] is None and data["gate"] is None
    assert "waiting" not in cli(dsn, "status", "gated").stdout

    assert cli(dsn, "rollback", plan, "--report", str(report)).exit_code == 0
    for data in (
        json.loads(report.read_text()),
        json.loads(cli(dsn, "status", "gated", "--json").stdout),
    ):
        assert data["status"] == "rolled_back"
        assert data["waiting_for"] is None and data["gate"] is None
        # a rolled-back phase shows the time its run took, not the time since it started
        assert {p["name"]: p["seconds"] for p in data["phases"] if p["name"] in ran} == ran
    assert "waiting" not in cli(dsn, "status", "gated").stdout


def test_apply_approving_an_unknown_gate_writes_nothing(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN.format(options=""))
    result = cli(dsn, "apply", plan, "--approve", "nosuchgate")
    assert result.exit_code == 2
    assert "has no gate named 'nosuchgate'; its gates: before_cutover" in error_line(result)
    schema = accounts.execute("SELECT to_regnamespace('pgshift')").fetchone()
    assert schema == (None,)  # not even the state schema

    assert cli(dsn, "apply", plan, "--until", "expand").exit_code == 0
    events = accounts.execute("SELECT count(*) FROM pgshift.events").fetchone()
    assert cli(dsn, "apply", plan, "--approve", "nosuchgate").exit_code == 2
    assert accounts.execute("SELECT count(*) FROM pgshift.events").fetchone() == events


def test_approve_by_name_says_which_gates_the_migration_has(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    result = cli(dsn, "approve", "gated", "before_cutover")
    assert result.exit_code == 2
    assert "no migration named gated" in error_line(result)
    assert "apply its plan up to the gate first" in error_line(result)

    plan = write_plan(tmp_path, PLAN.format(options=""))
    assert cli(dsn, "apply", plan, "--until", "expand").exit_code == 0
    result = cli(dsn, "approve", "gated", "no_such_gate")
    assert result.exit_code == 2
    line = error_line(result)
    assert "migration gated has no gate named 'no_such_gate'; its gates: before_cutover" in line
    assert "apply" not in line


def test_without_user_the_actor_is_the_accounts_name(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN.format(options=""))
    unset = {"USER": None, "LOGNAME": None, "PGSHIFT_ACTOR": None}
    runner = CliRunner(env=unset)
    args = ["--dsn", dsn, "--log-format", "json", "apply", plan, "--approve", "before_cutover"]
    assert runner.invoke(main, args).exit_code == 0
    actors = accounts.execute("SELECT DISTINCT actor FROM pgshift.events").fetchall()
    assert actors == [(pwd.getpwuid(os.getuid()).pw_name,)]
