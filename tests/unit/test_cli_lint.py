"""`migrate lint` and the lint inside `migrate plan`: exit 2 on a broken rule, 0 once it is
fixed or deliberately allowed."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from pgshift.cli import main

NO_DATABASE = {"DATABASE_URL": None, "PGHOST": None, "PGDATABASE": None, "PGSERVICE": None}

PLAN = """version: 1
name: lint_me
table: accounts
columns:
  balance: {{type: bigint}}
phases:
  - expand
  - sql:
      name: add_index
      up: |
        {statement}
      down: DROP INDEX CONCURRENTLY IF EXISTS accounts_email_idx;
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner(env=NO_DATABASE).invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_lint_sql_file_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text("SET lock_timeout = '1s';\nCREATE INDEX i ON accounts (email);\n")
    code, out, err = run("lint", str(bad))
    assert code == 2
    assert f"{bad}:2:1: PGS005" in out
    assert "broken" in err
    bad.write_text("SET lock_timeout = '1s';\nCREATE INDEX CONCURRENTLY i ON accounts (email);\n")
    assert run("lint", str(bad))[0] == 0


def test_plan_lint_points_at_the_plan_line(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(statement="CREATE INDEX accounts_email_idx ON accounts (email);"))
    code, out, err = run("lint", str(plan))
    assert code == 2
    assert f"{plan}:11:1: PGS005" in out  # the statement's own line inside the block scalar
    code, out, err = run("plan", str(plan))
    assert code == 2
    assert f"lint: {plan}:11:1: PGS005" in err
    assert f"error: {plan}:11:1:" in err


def test_plan_lint_allow_comment_accepts_it(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    statement = "CREATE INDEX accounts_email_idx ON accounts (email); -- pgshift:allow PGS005"
    plan.write_text(PLAN.format(statement=statement))
    code, out, _ = run("lint", str(plan))
    assert code == 0 and "(allowed)" in out
    code, out, _ = run("plan", str(plan))
    assert code == 0 and "is valid" in out
