"""Writers insert, update (the key too) and delete on several connections during the whole
apply; every row stays right at each stage, and no writer sees an error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from pgshift.demo.traffic import Traffic
from tests.integration.helpers import cli, write_plan

PLAN = """
version: 1
name: busy_{column}
table: public.accounts
columns:
  {column}:
    type: bigint
settings: {{lock_timeout: 500ms, lock_retries: 60}}
phases: [expand, dual_write, {{backfill: {{batch_size: 150, batch_pause: 5ms}}}}, cutover, contract]
"""
MIX = {"insert": 3, "update": 4, "delete": 2, "key_update": 2}


@pytest.mark.parametrize("column", ["balance", "id"])
def test_writers_never_fail_and_every_row_is_right(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, column: str
) -> None:
    create_accounts(conn, 4_000)
    plan = write_plan(tmp_path, PLAN.format(column=column))
    with Traffic(dsn, connections=4, rate=60, mix=MIX, seed=7) as traffic:
        assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
        # one snapshot: the shadow column equals `up` of the live one for every row
        wrong = conn.execute(
            f"SELECT count(*) FROM accounts WHERE _pgshift_{column} IS DISTINCT FROM {column}::bigint"
        ).fetchone()
        assert wrong == (0,)
        assert cli(dsn, "apply", plan, "--until", "cutover").exit_code == 0
        wrong = conn.execute(
            f"SELECT count(*) FROM accounts WHERE {column}_pgshift_old IS DISTINCT FROM {column}::integer"
        ).fetchone()
        assert wrong == (0,)
        assert cli(dsn, "apply", plan).exit_code == 0
    stats = traffic.stop()  # the summary of the run the context manager stopped
    assert stats.failed == 0, stats.errors
    assert stats.inserts > 0 and stats.updates > 0 and stats.deletes > 0 and stats.key_updates > 0
    assert conn.execute(
        "SELECT format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = 'accounts'::regclass AND attname = %s",
        (column,),
    ).fetchone() == ("bigint",)
    assert conn.execute(f"SELECT count(*) FROM accounts WHERE {column} IS NULL").fetchone() == (0,)
