"""shadow_read: the application's queries on the old shape and on the new one (the view schema
first on search_path), compared as lists when ordered and as multisets otherwise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from tests.integration.helpers import cli, error_line, write_plan

PLAN = """version: 1
name: shadowed
table: public.accounts
columns:
  balance: {{type: bigint}}
phases:
  - expand
  - dual_write
  - backfill
  - shadow_read:
      queries:
        - SELECT id, balance FROM accounts WHERE id % 97 = 0 ORDER BY id
        - SELECT status, sum(balance) FROM accounts GROUP BY status
        - SELECT id, balance, email FROM accounts WHERE id = %s
      params_query: SELECT id FROM accounts WHERE id <= 40
      max_mismatches: {max_mismatches}
  - cutover
"""


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    create_accounts(conn, 2_000)
    return conn


def test_equal_shapes_pass_and_record_every_run(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_plan(tmp_path, PLAN.format(max_mismatches=0))
    result = cli(dsn, "apply", path)
    assert result.exit_code == 0, result.output
    recorded = accounts.execute(
        "SELECT checkpoint -> 'result' FROM pgshift.phases WHERE kind = 'shadow_read'"
    ).fetchone()[0]  # type: ignore[index]
    assert recorded == {"runs": 1 + 1 + 40, "mismatches": 0, "examples": []}


def test_a_difference_in_the_new_shape_fails_with_exit_4(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_plan(tmp_path, PLAN.format(max_mismatches=0))
    assert cli(dsn, "apply", path, "--until", "backfill").exit_code == 0
    with accounts.transaction():  # around the sync trigger, as a bug would
        accounts.execute("SET LOCAL pgshift.backfill = 'on'")
        accounts.execute(
            "UPDATE accounts SET _pgshift_balance = _pgshift_balance + 1 WHERE id = 194"
        )
    result = cli(dsn, "apply", path)
    assert result.exit_code == 4
    message = error_line(result)
    # the ordered query sees row 194; the grouped sum sees the total move
    assert "shadow_read: 2 of 42 query run(s)" in message
    status = json.loads(cli(dsn, "status", "shadowed", "--json").stdout)
    assert status["status"] == "rolled_back"


def test_max_mismatches_lets_known_differences_through(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_plan(tmp_path, PLAN.format(max_mismatches=2))
    assert cli(dsn, "apply", path, "--until", "backfill").exit_code == 0
    with accounts.transaction():
        accounts.execute("SET LOCAL pgshift.backfill = 'on'")
        accounts.execute("UPDATE accounts SET _pgshift_balance = 0 WHERE id = 5")
    result = cli(dsn, "apply", path)
    assert result.exit_code == 0, result.output  # 2 mismatches (point lookup and sum) allowed


def test_shadow_read_after_cutover_is_refused(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    text = PLAN.format(max_mismatches=0).replace("  - cutover\n", "")
    text = text.replace("  - backfill\n", "  - backfill\n  - cutover\n")
    result = cli(dsn, "plan", write_plan(tmp_path, text))
    assert result.exit_code == 2
    assert "put it before cutover" in error_line(result)
