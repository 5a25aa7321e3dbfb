"""Backfill benchmark: pgshift's keyset batches against one UPDATE over the whole table.

In a scratch database it creates on the `--dsn` server (and drops afterwards), it runs,
interleaved `--runs` times, on a fresh `accounts` table of `--rows` rows each time (the demo's
table: id serial key, balance integer, email, status, two timestamps; indexes on email and
balance), loaded and `VACUUM ANALYZE`d before the clock starts:

- baseline: `ALTER TABLE accounts ADD COLUMN new bigint`, then ONE
  `UPDATE accounts SET new = balance::bigint` over the whole table, timed alone (what an
  operator would run by hand);
- pgshift: a plan widening balance to bigint (expand, dual_write, backfill) applied with
  `--until backfill` semantics through the Executor; only the backfill phase is timed, by
  the phase's started_at/finished_at in the state schema (the number reported) and by the
  wall clock around the batch loop (a cross-check). The slowest batch comes from the runner.

Both arms end with a correctness check (every row's new value equals balance::bigint) outside
the timing. Autovacuum is off on the scratch tables, and a CHECKPOINT runs before each timed
part, so neither arm pays for the other's leftovers. It prints rows/s per run and the medians,
the ratio pgshift/baseline, the slowest batch, and whether the bar is met (ratio >= 0.8,
slowest batch < 500 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgshift import db
from pgshift.demo.seed import create_accounts
from pgshift.engine.executor import Executor
from pgshift.engine.progress import BatchReport, Reporter
from pgshift.engine.state import StateStore
from pgshift.plan.load import load_plan_text

NAME = "bench_backfill"
STATE_SCHEMA = "pgshift"
RATIO_BAR = 0.8
SLOWEST_BAR_MS = 500.0

PLAN = """\
version: 1
name: {name}
table: public.accounts
columns:
  balance:
    type: bigint
    up: balance::bigint
    down: balance::integer
settings:
  lock_timeout: 1s
  batch_size: {batch_size}
  batch_time: {batch_time}
phases:
  - expand
  - dual_write
  - backfill
"""


@dataclass
class BenchReporter(Reporter):
    """Keeps what the runner reports instead of logging it: every batch, the wall clock around
    the batch loop, and the `backfill finished` event (rows, batches, slowest_batch_ms)."""

    bar: bool = False
    batches: list[BatchReport] = field(default_factory=list)
    loop_started: float = 0.0
    loop_finished: float = 0.0
    finished: dict[str, Any] = field(default_factory=dict)

    def event(self, message: str, **fields: object) -> None:
        if message == "backfill finished":
            self.finished = dict(fields)

    def backfill_started(self, phase: str, rows_done: int, rows_total: int | None) -> None:
        self.loop_started = time.perf_counter()

    def batch(self, phase: str, report: BatchReport) -> None:
        self.batches.append(report)

    def backfill_finished(self) -> None:
        if self.loop_started and not self.loop_finished:
            self.loop_finished = time.perf_counter()


@dataclass
class Run:
    seconds: float
    rows: int
    wall_seconds: float | None = None  # pgshift: wall clock around the batch loop
    batches: int = 0
    slowest_ms: float = 0.0
    sizes: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def fresh_table(conn: psycopg.Connection[Any], rows: int) -> None:
    """A new `accounts` of `rows` rows with nothing of an earlier run left, settled."""
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(STATE_SCHEMA)))
    conn.execute(
        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(f"pgshift_{NAME}"))
    )
    create_accounts(conn, rows, replace=True)
    conn.execute("ALTER TABLE accounts SET (autovacuum_enabled = off)")


def settle(conn: psycopg.Connection[Any]) -> None:
    conn.execute("VACUUM ANALYZE accounts")
    # not a superuser (nor pg_checkpoint): the run is only noisier
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
        conn.execute("CHECKPOINT")


def check_filled(conn: psycopg.Connection[Any], column: str, rows: int) -> None:
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE {} IS DISTINCT FROM balance::bigint)"
            " FROM accounts"
        ).format(sql.Identifier(column))
    ).fetchone()
    if row is None or row[0] != rows or row[1] != 0:
        raise SystemExit(f"{column}: {row} (rows, wrong); expected ({rows}, 0)")


def run_baseline(conn: psycopg.Connection[Any], rows: int) -> Run:
    fresh_table(conn, rows)
    conn.execute("ALTER TABLE accounts ADD COLUMN new bigint")
    settle(conn)
    started = time.perf_counter()
    cur = conn.execute("UPDATE accounts SET new = balance::bigint")  # autocommit: one transaction
    seconds = time.perf_counter() - started
    check_filled(conn, "new", rows)
    return Run(seconds=seconds, rows=cur.rowcount)


def run_pgshift(conn: psycopg.Connection[Any], dsn: str, rows: int, plan_text: str) -> Run:
    fresh_table(conn, rows)
    settle(conn)
    reporter = BenchReporter()
    result = Executor(dsn, load_plan_text(plan_text), StateStore(STATE_SCHEMA), reporter).apply(
        until="backfill"
    )
    if result.status != "paused":
        raise SystemExit(f"apply ended {result.status}: {result.message}")
    row = conn.execute(
        sql.SQL(
            "SELECT extract(epoch FROM finished_at - started_at)::float8, rows_done, batches"
            " FROM {}.phases WHERE migration = %s AND kind = 'backfill'"
        ).format(sql.Identifier(STATE_SCHEMA)),
        (NAME,),
    ).fetchone()
    assert row is not None
    seconds, rows_done, batches = row
    check_filled(conn, "_pgshift_balance", rows)
    slowest = max((b.batch_seconds for b in reporter.batches), default=0.0) * 1000
    return Run(
        seconds=seconds,
        rows=rows_done,
        wall_seconds=reporter.loop_finished - reporter.loop_started,
        batches=batches,
        slowest_ms=max(slowest, float(reporter.finished.get("slowest_batch_ms", 0))),  # type: ignore[arg-type]
        sizes=[b.batch_size for b in reporter.batches],
    )


def sizes_summary(sizes: list[int]) -> str:
    if not sizes:
        return "-"
    steady = sizes[len(sizes) // 2 :]
    return f"{sizes[0]:,} -> median {int(statistics.median(steady)):,} (second half)"


def bench(dsn: str, args: argparse.Namespace) -> None:
    plan_text = PLAN.format(name=NAME, batch_size=args.batch_size, batch_time=args.batch_time)
    with db.connect(dsn, role="bench") as conn:
        row = conn.execute("SHOW server_version").fetchone()
        print(
            f"backfill bench: PostgreSQL {row[0] if row else '?'}, {args.rows:,} rows,"
            f" {args.runs} runs (pgshift, baseline interleaved),"
            f" batch_size {args.batch_size}, batch_time {args.batch_time}"
        )
        runs: dict[str, list[Run]] = {"pgshift": [], "baseline": []}
        for number in range(1, args.runs + 1):
            shifted = run_pgshift(conn, dsn, args.rows, plan_text)
            runs["pgshift"].append(shifted)
            base = run_baseline(conn, args.rows)
            runs["baseline"].append(base)
            assert shifted.wall_seconds is not None
            print(
                f"run {number}: pgshift {shifted.seconds:6.2f} s ({shifted.rate:9,.0f} rows/s;"
                f" wall {shifted.wall_seconds:.2f} s; {shifted.batches} batches,"
                f" size {sizes_summary(shifted.sizes)}; slowest {shifted.slowest_ms:.0f} ms)"
                f"  baseline {base.seconds:6.2f} s ({base.rate:9,.0f} rows/s)"
                f"  ratio {shifted.rate / base.rate:.2f}"
            )
        conn.execute("DROP TABLE IF EXISTS accounts CASCADE")
    rates = {name: statistics.median(r.rate for r in rs) for name, rs in runs.items()}
    ratio = rates["pgshift"] / rates["baseline"]
    slowest = max(r.slowest_ms for r in runs["pgshift"])
    for name, rate in rates.items():
        print(f"median {name:8} {rate:12,.0f} rows/s")
    print(f"ratio pgshift/baseline: {ratio:.2f} (bar: >= {RATIO_BAR})")
    print(f"slowest batch: {slowest:.0f} ms over all runs (bar: < {SLOWEST_BAR_MS:.0f} ms)")
    met = ratio >= RATIO_BAR and slowest < SLOWEST_BAR_MS
    print(f"bar met: {'yes' if met else 'no'}")


@contextmanager
def scratch_database(dsn: str) -> Iterator[str]:
    name = f"pgshift_bench_backfill_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(dsn, dbname=name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def server(args: argparse.Namespace) -> Iterator[str]:
    """The DSN to bench on: `--dsn`, or an embedded server in a temporary folder."""
    if not args.embedded:
        yield args.dsn
        return
    from pgshift.embedded import EmbeddedServer

    with tempfile.TemporaryDirectory(prefix="pgshift-bench-") as folder:
        embedded = EmbeddedServer(Path(folder) / "pgdata")
        embedded.start()
        try:
            yield embedded.dsn()
        finally:
            embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGSHIFT_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--embedded", action="store_true", help="start an embedded PostgreSQL")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", default="auto", help="'auto' or a number of rows")
    parser.add_argument("--batch-time", default="200ms", help="target batch time with auto")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    with server(args) as dsn, scratch_database(dsn) as scratch:
        bench(scratch, args)


if __name__ == "__main__":
    main()
