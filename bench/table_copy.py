"""Table-copy backfill (`new_table`) against one INSERT ... SELECT, on the same server, same run.

    python bench/table_copy.py [--dsn DSN | --embedded] [--rows 1000000] [--runs 3]

Each run builds a fresh `accounts` table (pgshift.demo.seed), VACUUM ANALYZEs it, then times
each arm in turn:

- the baseline (the bar): one `INSERT INTO accounts_v2 SELECT ... FROM accounts` into the same
  new table definition the plan creates (primary key and two indexes, all in place);
- the same statement with FOR KEY SHARE, the row locks pgshift's batches take;
- load, then index: what an operator would do by hand with the table offline, the same
  INSERT ... SELECT into the table with only its primary key, then one plain CREATE INDEX per
  secondary index of `create`, timed together;
- pgshift's backfill phase of plans/accounts_bigint_key.yaml (copy trigger installed, keyset
  batches with FOR KEY SHARE and ON CONFLICT DO NOTHING, each committed with its checkpoint,
  then the deferred indexes built CONCURRENTLY): the phase's own start and end as the state
  records them, so the index builds are inside the figure.

The arms alternate to spread the machine's noise; medians and the ratios are printed. Table
set-up is never timed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg
from common import scratch_database, server, server_arguments  # bench/ is on sys.path
from psycopg import sql

from pgshift.demo.seed import create_accounts
from pgshift.engine.executor import Executor
from pgshift.engine.progress import Reporter
from pgshift.engine.state import StateStore
from pgshift.log import configure
from pgshift.plan.check import create_statements, expand_statements
from pgshift.plan.load import load_plan_text

PLAN = (Path(__file__).resolve().parent.parent / "plans" / "accounts_bigint_key.yaml").read_text()
BENCH_PLAN = PLAN.replace("  - verify\n", "")


def fresh(conn: psycopg.Connection[Any], rows: int) -> None:
    conn.execute("DROP SCHEMA IF EXISTS pgshift CASCADE")
    conn.execute("DROP SCHEMA IF EXISTS pgshift_accounts_bigint_key CASCADE")
    conn.execute("DROP TABLE IF EXISTS accounts_v2")
    create_accounts(conn, rows, replace=True)
    conn.execute("VACUUM ANALYZE accounts")
    conn.execute("CHECKPOINT")


COPY = (
    "INSERT INTO accounts_v2 (id, balance, email, status, created_at, updated_at)"
    " SELECT id, balance, email, status, created_at, updated_at FROM accounts"
)


def baseline(conn: psycopg.Connection[Any], rows: int, lock: bool = False) -> float:
    """rows/s of one INSERT ... SELECT into the table the plan creates; with `lock`, the same
    statement taking the FOR KEY SHARE row locks pgshift's batches take against the delete race,
    to tell that cost apart from the batching."""
    fresh(conn, rows)
    plan = load_plan_text(PLAN).plan
    assert plan.new_table is not None
    conn.execute(plan.new_table.create)
    started = time.perf_counter()
    conn.execute(COPY + (" FOR KEY SHARE" if lock else ""))
    seconds = time.perf_counter() - started
    return rows / seconds


def load_then_index(conn: psycopg.Connection[Any], rows: int) -> float:
    """rows/s of the hand-written bulk load: the same INSERT ... SELECT into the table with
    its primary key only (what pgshift's expand creates), then a plain CREATE INDEX for each
    index pgshift builds after the copy, all timed together."""
    fresh(conn, rows)
    plan = load_plan_text(PLAN).plan
    table = expand_statements(plan)
    for statement in table:
        conn.execute(sql.SQL(statement))  # the plan's own DDL
    indexes = [s for s in create_statements(plan) if s not in table]
    assert indexes, "the plan's create has no secondary index left to build"
    started = time.perf_counter()
    conn.execute(COPY)
    for statement in indexes:
        conn.execute(sql.SQL(statement))
    seconds = time.perf_counter() - started
    return rows / seconds


class SlowestBatch(Reporter):
    """Keeps what the backfill reports when it finishes."""

    slowest_ms: float = 0.0

    def event(self, message: str, **fields: object) -> None:
        if message == "backfill finished":
            self.slowest_ms = float(fields["slowest_batch_ms"])  # type: ignore[arg-type]


def pgshift(conn: psycopg.Connection[Any], dsn: str, rows: int) -> tuple[float, float]:
    """rows/s of the backfill phase (its start and end as the state records them) and its
    slowest batch in ms."""
    fresh(conn, rows)
    loaded = load_plan_text(BENCH_PLAN, "accounts_bigint_key.yaml")
    Executor(dsn, loaded, StateStore()).apply(until="dual_write")
    reporter = SlowestBatch(bar=False)
    Executor(dsn, loaded, StateStore(), reporter).apply(until="backfill")
    row = conn.execute(
        "SELECT rows_done, extract(epoch FROM finished_at - started_at)"
        " FROM pgshift.phases WHERE kind = 'backfill'"
    ).fetchone()
    assert row is not None and row[0] == rows, row
    return rows / float(row[1]), reporter.slowest_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    server_arguments(parser)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    configure("console", 0)  # warnings only: the numbers are the output
    with server(args) as dsn:
        measure(dsn, args.rows, args.runs)


def measure(server_dsn: str, rows: int, runs: int) -> None:
    """Print each run and the medians; the database is a scratch one, dropped afterwards."""
    base: list[float] = []
    locked: list[float] = []
    by_hand: list[float] = []
    ours: list[float] = []
    slowest: list[float] = []
    with scratch_database(server_dsn, "copy") as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        print(f"server {version[0] if version else '?'}, {rows:,} rows, {runs} runs")
        for run in range(runs):
            base.append(baseline(conn, rows))
            locked.append(baseline(conn, rows, lock=True))
            by_hand.append(load_then_index(conn, rows))
            rate, batch_ms = pgshift(conn, dsn, rows)
            ours.append(rate)
            slowest.append(batch_ms)
            print(
                f"run {run + 1}: INSERT ... SELECT {base[-1]:,.0f} rows/s,"
                f" the same FOR KEY SHARE {locked[-1]:,.0f} rows/s,"
                f" load then index {by_hand[-1]:,.0f} rows/s,"
                f" pgshift copy {ours[-1]:,.0f} rows/s (slowest batch {batch_ms:.0f} ms)"
            )
    median = statistics.median
    ratio = median(ours) / median(base)
    print(
        f"median: INSERT ... SELECT {median(base):,.0f} rows/s,"
        f" FOR KEY SHARE {median(locked):,.0f} rows/s,"
        f" load then index {median(by_hand):,.0f} rows/s,"
        f" pgshift copy {median(ours):,.0f} rows/s"
    )
    print(
        f"pgshift / INSERT ... SELECT: {ratio:.2f} ({'meets' if ratio >= 0.8 else 'misses'} the"
        f" 0.8 bar); pgshift / FOR KEY SHARE: {median(ours) / median(locked):.2f};"
        f" pgshift / load then index: {median(ours) / median(by_hand):.2f};"
        f" slowest batch {max(slowest):.0f} ms ({'under' if max(slowest) < 500 else 'over'} 500 ms)"
    )


if __name__ == "__main__":
    main()
