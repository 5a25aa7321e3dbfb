"""`apply --report FILE` and `$GITHUB_STEP_SUMMARY` when no state can be read: an invalid plan
(exit 2) and a database out of reach (exit 1) still leave a report with the error."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pgshift.cli import main

UNREACHABLE = "postgresql://someone:s3cret@127.0.0.1:1/none?connect_timeout=2"

PLAN = """version: 1
name: reported
table: accounts
columns:
  balance: {type: bigint}
phases: [expand, dual_write, backfill, cutover, contract]
"""


def run(tmp_path: Path, plan: str, command: str = "apply") -> tuple[int, str, dict[str, object]]:
    path = tmp_path / "plan.yaml"
    path.write_text(plan)
    report, summary = tmp_path / "report.json", tmp_path / "summary.md"
    runner = CliRunner(env={"GITHUB_STEP_SUMMARY": str(summary), "DATABASE_URL": None})
    args = ["--dsn", UNREACHABLE, "--log-format", "json", command, str(path)]
    result = runner.invoke(main, [*args, "--report", str(report)])
    return result.exit_code, summary.read_text(), json.loads(report.read_text())


def test_invalid_plan_still_writes_the_report_and_the_summary(tmp_path: Path) -> None:
    code, summary, data = run(tmp_path, PLAN.replace("[expand,", "[expnad,"))
    assert code == 2
    assert data["exit_code"] == 2 and data["status"] == "invalid" and data["migration"] is None
    assert str(data["last_error"]).startswith(f"{tmp_path / 'plan.yaml'}:6:")
    assert "invalid (exit 2)" in summary and "Last error" in summary


def test_unreachable_database_report_names_the_error(tmp_path: Path) -> None:
    for command in ("apply", "rollback"):
        code, summary, data = run(tmp_path, PLAN, command)
        assert code == 1
        assert data["migration"] == "reported" and data["exit_code"] == 1
        assert "cannot reach the database" in str(data["last_error"])
        assert "s3cret" not in json.dumps(data) and "s3cret" not in summary
