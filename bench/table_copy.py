"""Table-copy backfill (`new_table`) against single statements, on the same server, same run.

    python bench/table_copy.py [--dsn DSN | --embedded] [--rows 1000000] [--runs 3]
        [--table narrow|accounts] [--workers 1,2]

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
  **+ FOR KEY SHARE** (the row locks the batches took against the delete race before the
  delete fence), and
  **+ ON CONFLICT** (also `ON CONFLICT (key) DO NOTHING`, each batch's form before 2026-12,
  now only a batch's second attempt after a unique violation);
- **pgshift wN**, one arm per `--workers` count (default 1 and 2; the plan's
  `settings: {workers: N}`): the backfill phase (copy trigger installed, keyset batches each
  committed with its checkpoint, by N workers over key ranges, then the deferred indexes built
  CONCURRENTLY): the phase's own start and end as the state records them, with its WAL bytes.
  Afterwards (not timed) every row of the old table must be in the new one, equal, and no
  other.

The arms alternate to spread the machine's noise (the pgshift arms' order swapped every run);
medians and the ratios are printed, with the load average. 2 workers use 2 server processes,
the single statements one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from common import (  # bench/ is on sys.path
    scratch_database,
    server,
    server_arguments,
    worker_counts,
)
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
    workers: int = 0  # the workers that walked the key

    def event(self, message: str, **fields: object) -> None:
        if message == "backfill finished":
            self.slowest_ms = float(fields["slowest_batch_ms"])  # type: ignore[arg-type]
            self.batches_seconds = float(fields["seconds"])  # type: ignore[arg-type]
            self.workers = int(fields.get("workers", 1))  # type: ignore[call-overload]


def with_workers(plan: str, workers: int) -> str:
    """The plan text with `settings: {workers: N}`."""
    if "\nsettings:\n" in plan:
        return plan.replace("\nsettings:\n", f"\nsettings:\n  workers: {workers}\n", 1)
    head, tail = plan.split("\nphases:", 1)
    return f"{head}\nsettings:\n  workers: {workers}\nphases:{tail}"


def check_copied(conn: psycopg.Connection[Any], rows: int, shape: Shape) -> None:
    """Every row of the old table is in the new one with the same values, and nothing else."""
    columns = sql.SQL(shape.columns)
    old, new = sql.Identifier(shape.old), sql.Identifier(shape.new)
    row = conn.execute(
        sql.SQL(
            "SELECT (SELECT count(*) FROM {new}),"
            " (SELECT count(*) FROM (SELECT {columns} FROM {old}"
            " EXCEPT ALL SELECT {columns} FROM {new}) AS missing)"
        ).format(new=new, old=old, columns=columns)
    ).fetchone()
    if row is None or row[0] != rows or row[1] != 0:
        raise SystemExit(f"{shape.new}: {row} (rows, missing or different); expected ({rows}, 0)")


def pgshift(
    conn: psycopg.Connection[Any], dsn: str, rows: int, shape: Shape, workers: int = 1
) -> tuple[float, float, float, float, int]:
    """rows/s of the backfill phase (its start and end as the state records them), its
    slowest batch in ms, the WAL it wrote in MB, the seconds of its batches alone (the
    rest of the phase builds `create`'s indexes) and the workers that walked."""
    fresh(conn, rows, shape)
    loaded = load_plan_text(with_workers(shape.plan, workers))
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
    check_copied(conn, rows, shape)
    return (
        rows / float(row[1]),
        reporter.slowest_ms,
        (written[0] if written else 0.0) / 1e6,
        reporter.batches_seconds,
        reporter.workers,
    )


def load_average() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    server_arguments(parser)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--table", choices=sorted(SHAPES), default="narrow")
    parser.add_argument(
        "--workers",
        type=worker_counts,
        default=[1, 2],
        help="comma-separated worker counts, one pgshift arm each (default 1,2)",
    )
    args = parser.parse_args()
    configure("console", 0)  # warnings only: the numbers are the output
    with server(args) as dsn:
        measure(dsn, args.rows, args.runs, args.table, args.workers)


def measure(
    server_dsn: str, rows: int, runs: int, table: str = "narrow", workers: list[int] | None = None
) -> None:
    """Print each run and the medians; the database is a scratch one, dropped afterwards."""
    shape = SHAPES[table]
    counts = workers or [1]
    shifted = [f"pgshift w{n}" for n in counts]
    arms: dict[str, list[float]] = {"load then index": []}
    if table == "accounts":
        arms["INSERT ... SELECT"] = []
    arms |= {"+ FOR KEY SHARE": [], "+ ON CONFLICT": []}
    arms |= {arm: [] for arm in shifted}
    slowest: dict[str, list[float]] = {arm: [] for arm in shifted}
    wal: dict[str, list[float]] = {arm: [] for arm in shifted}
    with scratch_database(server_dsn, "copy") as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        print(
            f"server {version[0] if version else '?'}, {table}, {rows:,} rows, {runs} runs,"
            f" workers {', '.join(map(str, counts))}; {os.cpu_count()} cpus,"
            f" load average {load_average()}"
        )
        for run in range(runs):
            arms["load then index"].append(load_then_index(conn, rows, shape))
            if "INSERT ... SELECT" in arms:
                arms["INSERT ... SELECT"].append(into_create(conn, rows, shape))
            arms["+ FOR KEY SHARE"].append(load_then_index(conn, rows, shape, locks=True))
            arms["+ ON CONFLICT"].append(
                load_then_index(conn, rows, shape, locks=True, on_conflict=True)
            )
            details = []
            for n in counts if run % 2 == 0 else counts[::-1]:
                arm = f"pgshift w{n}"
                rate, batch_ms, written, batches_seconds, walked = pgshift(
                    conn, dsn, rows, shape, n
                )
                arms[arm].append(rate)
                slowest[arm].append(batch_ms)
                wal[arm].append(written)
                details.append(
                    f"{arm}: {walked} worker(s), batches {batches_seconds:.2f} s of"
                    f" {rows / rate:.2f} s, slowest batch {batch_ms:.0f} ms, WAL {written:.0f} MB"
                )
            print(
                f"run {run + 1}: "
                + ", ".join(f"{arm} {rates[-1]:,.0f} rows/s" for arm, rates in arms.items())
                + f" (load average {load_average()})\n  "
                + "\n  ".join(sorted(details)),
                flush=True,
            )
    median = {arm: statistics.median(rates) for arm, rates in arms.items()}
    bar = median["load then index"]
    print(
        f"median (load average {load_average()}): "
        + ", ".join(f"{arm} {rate:,.0f} rows/s" for arm, rate in median.items())
    )
    print(
        "against load then index: "
        + ", ".join(f"{arm} {rate / bar:.2f}" for arm, rate in median.items())
    )
    for arm in shifted:
        ratio = median[arm] / bar
        print(
            f"{arm} / load then index: {ratio:.2f} ({'meets' if ratio >= 0.8 else 'misses'} the"
            f" 0.8 bar); {arm} / + FOR KEY SHARE: {median[arm] / median['+ FOR KEY SHARE']:.2f};"
            f" slowest batch {max(slowest[arm]):.0f} ms; WAL {statistics.median(wal[arm]):.0f} MB"
        )
    if len(shifted) > 1:
        first, *others = shifted
        print(", ".join(f"{arm} / {first}: {median[arm] / median[first]:.2f}" for arm in others))


if __name__ == "__main__":
    main()
