"""Table-copy backfill (`new_table`) against single statements, on the same server, same run.

    python bench/table_copy.py [--dsn DSN | --embedded] [--rows 1000000] [--runs 3]
        [--table narrow|accounts]

Two tables: `narrow` (the default), `t (id bigint primary key, v int, pad text)` copied into a
new table of the same columns with only its key; `accounts` (pgshift.demo.seed), copied by
plans/accounts_bigint_key.yaml into `accounts_v2`, which has two secondary indexes. Each arm
starts from a fresh, vacuumed, checkpointed table; set-up is never timed:

- **load then index** (the bar): what an operator would do by hand with the table offline,
  one `INSERT ... SELECT` into the new table with only its primary key (what pgshift's expand
  creates), then one plain `CREATE INDEX` per secondary index of `create`, timed together;
- **INSERT ... SELECT**, `accounts` only: the same statement into the table exactly as `create`
  defines it, its secondary indexes in place (the bar until 2026-12);
- the breakdown, load then index with pgshift's per-row work added one piece at a time:
  **+ FOR KEY SHARE** (the row locks the batches take against the delete race), and
  **+ ON CONFLICT** (also `ON CONFLICT (key) DO NOTHING`, each batch's form before 2026-12,
  now only a batch's second attempt after a unique violation);
- **pgshift**: the backfill phase (copy trigger installed, keyset batches each committed with
  its checkpoint, then the deferred indexes built CONCURRENTLY): the phase's own start and end
  as the state records them, with its WAL bytes.

The arms alternate to spread the machine's noise; medians and the ratios are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
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

ACCOUNTS_PLAN = (
    Path(__file__).resolve().parent.parent / "plans" / "accounts_bigint_key.yaml"
).read_text()

NARROW_PLAN = """\
version: 1
name: narrow_copy
table: public.t
new_table:
  name: public.t2
  create: |
    CREATE TABLE public.t2 (id bigint PRIMARY KEY, v int, pad text);
phases: [expand, dual_write, backfill]
"""


@dataclass(frozen=True)
class Shape:
    plan: str  # expand, dual_write and backfill
    columns: str  # the copied columns, both sides
    old: str
    new: str

    def copy(self, locks: bool = False, on_conflict: bool = False) -> str:
        return (
            f"INSERT INTO {self.new} ({self.columns}) SELECT {self.columns} FROM {self.old}"
            + (" FOR KEY SHARE" if locks else "")
            + (" ON CONFLICT (id) DO NOTHING" if on_conflict else "")
        )


SHAPES = {
    "narrow": Shape(NARROW_PLAN, "id, v, pad", "t", "t2"),
    "accounts": Shape(
        ACCOUNTS_PLAN.replace("  - verify\n", "")
        .replace("  - cutover\n", "")
        .replace("  - contract\n", ""),
        "id, balance, email, status, created_at, updated_at",
        "accounts",
        "accounts_v2",
    ),
}


def fresh(conn: psycopg.Connection[Any], rows: int, shape: Shape) -> None:
    for schema in ("pgshift", "pgshift_accounts_bigint_key", "pgshift_narrow_copy"):
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(shape.new)))
    if shape.old == "accounts":
        create_accounts(conn, rows, replace=True)
    else:
        conn.execute("DROP TABLE IF EXISTS t")
        conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, v int, pad text)")
        conn.execute(
            "INSERT INTO t SELECT i, i %% 1000, md5(i::text) FROM generate_series(1, %s) i",
            (rows,),
        )
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(shape.old)))
    conn.execute("CHECKPOINT")


def into_create(conn: psycopg.Connection[Any], rows: int, shape: Shape) -> float:
    """rows/s of one INSERT ... SELECT into the table exactly as `create` makes it."""
    fresh(conn, rows, shape)
    plan = load_plan_text(shape.plan).plan
    for statement in create_statements(plan):
        conn.execute(sql.SQL(statement))  # the plan's own DDL
    started = time.perf_counter()
    conn.execute(shape.copy())
    return rows / (time.perf_counter() - started)


def load_then_index(
    conn: psycopg.Connection[Any],
    rows: int,
    shape: Shape,
    locks: bool = False,
    on_conflict: bool = False,
) -> float:
    """rows/s of the hand-written bulk load: INSERT ... SELECT into the table with its primary
    key only (what pgshift's expand creates), then a plain CREATE INDEX for each index pgshift
    builds after the copy, timed together; with `locks` / `on_conflict`, the INSERT also takes
    the batches' row locks / speculative insertion."""
    fresh(conn, rows, shape)
    plan = load_plan_text(shape.plan).plan
    table = expand_statements(plan)
    for statement in table:
        conn.execute(sql.SQL(statement))  # the plan's own DDL
    indexes = [s for s in create_statements(plan) if s not in table]
    started = time.perf_counter()
    conn.execute(shape.copy(locks, on_conflict))
    for statement in indexes:
        conn.execute(sql.SQL(statement))
    return rows / (time.perf_counter() - started)


class SlowestBatch(Reporter):
    """Keeps what the backfill reports when it finishes."""

    slowest_ms: float = 0.0
    batches_seconds: float = 0.0  # the copy's batches, without the index builds after them

    def event(self, message: str, **fields: object) -> None:
        if message == "backfill finished":
            self.slowest_ms = float(fields["slowest_batch_ms"])  # type: ignore[arg-type]
            self.batches_seconds = float(fields["seconds"])  # type: ignore[arg-type]


def pgshift(
    conn: psycopg.Connection[Any], dsn: str, rows: int, shape: Shape
) -> tuple[float, float, float, float]:
    """rows/s of the backfill phase (its start and end as the state records them), its
    slowest batch in ms, the WAL it wrote in MB and the seconds of its batches alone (the
    rest of the phase builds `create`'s indexes)."""
    fresh(conn, rows, shape)
    loaded = load_plan_text(shape.plan)
    Executor(dsn, loaded, StateStore()).apply(until="dual_write")
    reporter = SlowestBatch(bar=False)
    wal = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
    Executor(dsn, loaded, StateStore(), reporter).apply(until="backfill")
    written = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::float8", (wal[0] if wal else None,)
    ).fetchone()
    row = conn.execute(
        "SELECT rows_done, extract(epoch FROM finished_at - started_at)"
        " FROM pgshift.phases WHERE kind = 'backfill'"
    ).fetchone()
    assert row is not None and row[0] == rows, row
    return (
        rows / float(row[1]),
        reporter.slowest_ms,
        (written[0] if written else 0.0) / 1e6,
        reporter.batches_seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    server_arguments(parser)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--table", choices=sorted(SHAPES), default="narrow")
    args = parser.parse_args()
    configure("console", 0)  # warnings only: the numbers are the output
    with server(args) as dsn:
        measure(dsn, args.rows, args.runs, args.table)


def measure(server_dsn: str, rows: int, runs: int, table: str = "narrow") -> None:
    """Print each run and the medians; the database is a scratch one, dropped afterwards."""
    shape = SHAPES[table]
    arms: dict[str, list[float]] = {"load then index": []}
    if table == "accounts":
        arms["INSERT ... SELECT"] = []
    arms |= {"+ FOR KEY SHARE": [], "+ ON CONFLICT": [], "pgshift": []}
    slowest: list[float] = []
    wal: list[float] = []
    with scratch_database(server_dsn, "copy") as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        print(f"server {version[0] if version else '?'}, {table}, {rows:,} rows, {runs} runs")
        for run in range(runs):
            arms["load then index"].append(load_then_index(conn, rows, shape))
            if "INSERT ... SELECT" in arms:
                arms["INSERT ... SELECT"].append(into_create(conn, rows, shape))
            arms["+ FOR KEY SHARE"].append(load_then_index(conn, rows, shape, locks=True))
            arms["+ ON CONFLICT"].append(
                load_then_index(conn, rows, shape, locks=True, on_conflict=True)
            )
            rate, batch_ms, written, batches_seconds = pgshift(conn, dsn, rows, shape)
            arms["pgshift"].append(rate)
            slowest.append(batch_ms)
            wal.append(written)
            print(
                f"run {run + 1}: "
                + ", ".join(f"{arm} {rates[-1]:,.0f} rows/s" for arm, rates in arms.items())
                + f" (batches {batches_seconds:.2f} s of {rows / rate:.2f} s, slowest batch"
                f" {batch_ms:.0f} ms, WAL {written:.0f} MB)",
                flush=True,
            )
    median = {arm: statistics.median(rates) for arm, rates in arms.items()}
    bar = median["load then index"]
    print("median: " + ", ".join(f"{arm} {rate:,.0f} rows/s" for arm, rate in median.items()))
    print(
        "against load then index: "
        + ", ".join(f"{arm} {rate / bar:.2f}" for arm, rate in median.items())
    )
    ratio = median["pgshift"] / bar
    print(
        f"pgshift / load then index: {ratio:.2f} ({'meets' if ratio >= 0.8 else 'misses'} the 0.8"
        f" bar); pgshift / + FOR KEY SHARE: {median['pgshift'] / median['+ FOR KEY SHARE']:.2f};"
        f" slowest batch {max(slowest):.0f} ms; pgshift WAL {statistics.median(wal):.0f} MB"
    )


if __name__ == "__main__":
    main()
