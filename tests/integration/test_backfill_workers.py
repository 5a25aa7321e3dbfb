"""Backfill and table copy with `workers`: key ranges split up front and walked side by side,
each checkpointed on its own, under writers, through kill -9 and resume with another number
of workers."""

from __future__ import annotations

import itertools
import json
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from pgshift.demo.traffic import Traffic
from pgshift.engine.key_ranges import split_key_ranges
from pgshift.engine.state import StateStore
from pgshift.phases.base import BackfillStep
from pgshift.plan.load import load_plan
from tests.integration.helpers import cli, run_process, write_plan

ROWS = 20_000
MIX = {"insert": 3, "update": 4, "delete": 2, "key_update": 2}

COLUMNS = """
version: 1
name: wide_workers
table: public.accounts
columns:
  balance: {{type: bigint}}
settings: {{lock_timeout: 500ms, lock_retries: 60, workers: {workers}}}
phases: [expand, dual_write, {{backfill: {{batch_size: 500}}}}, verify, cutover, contract]
"""

COPY = """
version: 1
name: copy_workers
table: public.accounts
new_table:
  name: accounts_v2
  create: |
    CREATE TABLE accounts_v2 (id bigint PRIMARY KEY, balance bigint NOT NULL, email text NOT NULL,
      status text, created_at timestamptz NOT NULL, updated_at timestamptz)
settings: {{lock_timeout: 500ms, lock_retries: 60}}
phases: [expand, dual_write, {{backfill: {{batch_size: 500, workers: {workers}}}}}, verify, cutover, contract]
"""


def _backfill_checkpoint(conn: psycopg.Connection[Any], name: str) -> tuple[Any, int, int]:
    row = conn.execute(
        "SELECT checkpoint, rows_done, steps_done FROM pgshift.phases"
        " WHERE migration = %s AND kind = 'backfill'",
        (name,),
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def _backfill_finished(output: str) -> dict[str, Any]:
    """The `backfill finished` log line of a run (--log-format json)."""
    lines = [json.loads(line) for line in output.splitlines() if '"backfill finished"' in line]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


@pytest.mark.parametrize("plan_text", [COLUMNS, COPY], ids=["columns", "new_table"])
def test_workers_under_writers_leave_every_row_right(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, plan_text: str
) -> None:
    create_accounts(conn, ROWS)
    name = "wide_workers" if plan_text is COLUMNS else "copy_workers"
    plan = write_plan(tmp_path, plan_text.format(workers=3))
    with Traffic(dsn, connections=3, rate=80, mix=MIX, seed=11) as traffic:
        result = cli(dsn, "apply", plan, "--until", "verify")
        assert result.exit_code == 0, result.output[-3000:]
    assert _backfill_finished(result.output)["workers"] == 3  # three connections walked
    stats = traffic.stop()
    assert stats.failed == 0, stats.errors
    assert stats.deletes > 0 and stats.key_updates > 0
    checkpoint, rows_done, steps_done = _backfill_checkpoint(conn, name)
    ranges = checkpoint["ranges"]
    assert len(ranges) == 6  # workers x 2, split up front
    assert all(r["finished"] for r in ranges)
    # the ranges tile the key: each starts where the one before ends, both ends open
    assert ranges[0]["lo"] is None and ranges[-1]["hi"] is None
    assert all(a["hi"] == b["lo"] for a, b in itertools.pairwise(ranges))
    assert [int(r["hi"][0]) for r in ranges[:-1]] == sorted(int(r["hi"][0]) for r in ranges[:-1])
    assert steps_done >= 1
    assert rows_done >= ROWS * 0.9  # writers deleted some before their batch came
    # verify (in the plan) passed under the writers; once more now, on the quiet table
    again = cli(dsn, "verify", plan, "--json")
    assert again.exit_code == 0, again.output[-3000:]
    assert cli(dsn, "apply", plan).exit_code == 0


def test_kill_mid_workers_then_resume_with_one_worker(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Killed inside a batch with 3 workers; `apply` again (the plan now says 1 worker, with
    --force) walks what is left of every range and counts no row twice."""
    create_accounts(conn, ROWS)
    three = write_plan(tmp_path, COLUMNS.format(workers=3), "three.yaml")
    one = write_plan(tmp_path, COLUMNS.format(workers=1), "one.yaml")
    crashed = run_process(
        dsn,
        "apply",
        three,
        "--until",
        "backfill",
        env={"PGSHIFT_FAILPOINT": "backfill:batch:12:in-transaction"},
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    checkpoint, rows_done, _ = _backfill_checkpoint(conn, "wide_workers")
    started = [r for r in checkpoint["ranges"] if r["last"] is not None]
    assert len(started) >= 2, checkpoint  # several ranges were under way when it died
    assert not all(r["finished"] for r in checkpoint["ranges"])
    assert 0 < rows_done < ROWS
    resumed = cli(dsn, "apply", one, "--until", "backfill", "--force")
    assert resumed.exit_code == 0, resumed.output[-3000:]
    checkpoint, rows_done, _ = _backfill_checkpoint(conn, "wide_workers")
    assert all(r["finished"] for r in checkpoint["ranges"])
    assert rows_done == ROWS  # every row once: no batch lost, none counted twice
    assert conn.execute(
        "SELECT count(*) FROM accounts WHERE _pgshift_balance IS DISTINCT FROM balance::bigint"
    ).fetchone() == (0,)
    assert cli(dsn, "apply", one, "--force").exit_code == 0


def test_composite_text_key_splits_in_key_order(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A (text, integer) key: the split points are sorted by the server in the key's own order
    (collation, numbers as numbers), and the walk covers every row exactly once."""
    conn.execute(
        'CREATE TABLE items (region text COLLATE "C", n integer, v integer NOT NULL,'
        " pad text, PRIMARY KEY (region, n))"
    )
    conn.execute(
        "INSERT INTO items SELECT r, n, n % 1000, repeat('x', 40)"
        " FROM unnest(ARRAY['eu', 'Us', 'apac', '9x']) r, generate_series(1, 4000) n"
    )
    conn.execute("ANALYZE items")
    plan = write_plan(
        tmp_path,
        """
version: 1
name: items_workers
table: public.items
columns:
  v: {type: bigint}
settings: {workers: 4}
phases: [expand, dual_write, {backfill: {batch_size: 700}}, verify]
""",
    )
    from pgshift.engine.executor import prepare

    compiled, _ = prepare(conn, load_plan(plan), StateStore())
    step = next(s for p in compiled.phases for s in p.forward if isinstance(s, BackfillStep))
    ranges = split_key_ranges(conn, step, 8)
    assert len(ranges) == 8
    cuts = [r.hi for r in ranges[:-1]]
    assert cuts == sorted(cuts, key=lambda k: (k[0].encode(), int(k[1])))  # C order, n numeric
    assert len({tuple(c) for c in cuts if c}) == 7

    result = cli(dsn, "apply", plan)
    assert result.exit_code == 0, result.output[-3000:]
    checkpoint, rows_done, _ = _backfill_checkpoint(conn, "items_workers")
    assert len(checkpoint["ranges"]) == 8
    assert rows_done == 16_000
    assert conn.execute(
        "SELECT count(*) FROM items WHERE _pgshift_v IS DISTINCT FROM v::bigint"
    ).fetchone() == (0,)


def test_small_table_is_walked_in_one_range(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 300)
    plan = write_plan(tmp_path, COLUMNS.format(workers=4))
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    checkpoint, rows_done, _ = _backfill_checkpoint(conn, "wide_workers")
    assert "ranges" not in checkpoint and checkpoint["finished"] is True
    assert rows_done == 300
