"""Scale: backfill, copy and verify at growing row counts, to show time linear in rows, the
process's memory flat and the state schema's size independent of the row count.

    python bench/scale.py [--dsn DSN | --embedded] [--rows 1000000 --rows 10000000]
        [--workers 1,2]

`--rows` may be given several times (default: 100,000 and 1,000,000; 10,000,000 is opt-in: it
takes a while). For each row count, on a fresh table `t (id bigint primary key, v int, pad
text)` each time:

- **backfill + verify**: a plan widening `v` to bigint (expand, dual_write, backfill, verify);
- **copy + verify**: a plan copying `t` into `t2 (id bigint primary key, v bigint, pad text)`
  (expand, dual_write, backfill, verify).

Beside each, on a fresh table too, the single statement doing the same by hand (`UPDATE t SET
v2 = v` after adding `v2`; `INSERT INTO t2 SELECT ...` into `t2` with only its key), so a
growing cost per row that is the server's own (the table outgrowing shared_buffers,
checkpoints during a long write) shows in both.

Each plan is applied once per `--workers` count (default 1 and 2: the plan's `settings:
{workers: N}`, which the backfill and the verify both use), each time in a process of its own, which reports its peak resident memory
(`getrusage` ru_maxrss); the phases' times come from the state schema, and the state schema's
size (every relation in it, indexes and TOAST included) is read when the plan is done.
Prints, per row count, seconds and rows/s of each phase, the peak memory and the state size,
then each phase's seconds per million rows at every count (linear: the same figure). With 2
workers pgshift uses 2 server processes, the single statements one.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import structlog
from common import (  # bench/ is on sys.path
    scratch_database,
    server,
    server_arguments,
    worker_counts,
)
from psycopg import sql

from pgshift.engine.executor import Executor
from pgshift.engine.state import StateStore
from pgshift.plan.load import load_plan_text

PLANS = {
    "backfill": """\
version: 1
name: scale_backfill
table: public.t
columns:
  v:
    type: bigint
phases: [expand, dual_write, backfill, verify]
""",
    "copy": """\
version: 1
name: scale_copy
table: public.t
new_table:
  name: public.t2
  create: |
    CREATE TABLE public.t2 (id bigint PRIMARY KEY, v bigint, pad text);
phases: [expand, dual_write, backfill, verify]
""",
}

STATE_SIZE = """
SELECT coalesce(sum(pg_relation_size(c.oid)), 0)::bigint
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'pgshift' AND c.relkind IN ('r', 'i', 't')
"""


def fresh_table(conn: psycopg.Connection[Any], rows: int) -> None:
    for schema in ("pgshift", "pgshift_scale_backfill", "pgshift_scale_copy"):
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.execute("DROP TABLE IF EXISTS t, t2")
    conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, v int, pad text)")
    conn.execute(
        "INSERT INTO t SELECT i, i %% 1000, md5(i::text) FROM generate_series(1, %s) i", (rows,)
    )
    conn.execute("VACUUM ANALYZE t")
    conn.execute("CHECKPOINT")


# The single statements each pgshift figure is put beside, timed on the same fresh table.
BASELINES = {
    "backfill": (
        "ALTER TABLE t ADD COLUMN v2 bigint",
        "UPDATE t SET v2 = v",
    ),
    "copy": (
        "CREATE TABLE t2 (id bigint PRIMARY KEY, v bigint, pad text)",
        "INSERT INTO t2 SELECT id, v, pad FROM t",
    ),
}


def baseline(conn: psycopg.Connection[Any], rows: int, work: str) -> float:
    """Seconds of the single statement doing `work` by hand, on a fresh table."""
    fresh_table(conn, rows)
    prepare, statement = BASELINES[work]
    conn.execute(sql.SQL(prepare))  # type: ignore[arg-type]
    conn.execute("CHECKPOINT")
    started = time.perf_counter()
    conn.execute(sql.SQL(statement))  # type: ignore[arg-type]
    return time.perf_counter() - started


def plan_text(work: str, workers: int) -> str:
    """The plan of `work` with `settings: {workers: N}`."""
    head, tail = PLANS[work].split("\nphases:", 1)
    return f"{head}\nsettings:\n  workers: {workers}\nphases:{tail}"


def child(dsn: str, work: str, workers: int) -> None:
    """Apply one plan in this process; print its phases' seconds, peak memory, state size."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    loaded = load_plan_text(plan_text(work, workers))
    result = Executor(dsn, loaded, StateStore()).apply(until="verify")
    if result.status != "paused":
        raise SystemExit(f"{work}: apply ended {result.status}: {result.message}")
    with psycopg.connect(dsn) as conn:
        phases = {
            kind: float(seconds)
            for kind, seconds in conn.execute(
                "SELECT kind, extract(epoch FROM finished_at - started_at)"
                " FROM pgshift.phases WHERE kind IN ('backfill', 'verify')"
            )
        }
        size = conn.execute(STATE_SIZE).fetchone()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {"phases": phases, "peak_mib": peak_kib / 1024, "state_bytes": size[0] if size else 0}
        )
    )


def measure(
    dsn: str, conn: psycopg.Connection[Any], rows: int, work: str, workers: int
) -> dict[str, Any]:
    fresh_table(conn, rows)
    started = time.perf_counter()
    script = str(Path(__file__).resolve())
    done = subprocess.run(
        [sys.executable, script, "--child", work, "--dsn", dsn, "--workers", str(workers)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(
            f"{work} at {rows:,} rows, {workers} workers, failed:\n{done.stdout}{done.stderr}"
        )
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_seconds"] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    server_arguments(parser)
    parser.add_argument("--rows", type=int, action="append", help="a row count (repeatable)")
    parser.add_argument(
        "--workers",
        type=worker_counts,
        default=[1, 2],
        help="comma-separated worker counts, one pgshift arm each (default 1,2)",
    )
    parser.add_argument("--child", choices=sorted(PLANS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.dsn, args.child, args.workers[0])
        return
    counts = sorted(args.rows or [100_000, 1_000_000])
    results: dict[tuple[int, str, int], dict[str, Any]] = {}
    singles: dict[tuple[int, str], float] = {}
    with (
        server(args) as dsn,
        scratch_database(dsn, "scale") as scratch,
        psycopg.connect(scratch, autocommit=True) as conn,
    ):
        version = conn.execute("SHOW server_version").fetchone()
        load = (
            Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
        )
        print(f"scale: PostgreSQL {version[0] if version else '?'}, load average {' '.join(load)}")
        for rows in counts:
            for work in PLANS:
                single = baseline(conn, rows, work)
                singles[rows, work] = single
                for workers in args.workers:
                    got = measure(scratch, conn, rows, work, workers)
                    results[rows, work, workers] = got
                    phases = got["phases"]
                    print(
                        f"{rows:>11,} rows {work:8} w{workers}: "
                        + ", ".join(
                            f"{kind} {seconds:.2f} s ({rows / seconds:,.0f} rows/s)"
                            for kind, seconds in sorted(phases.items())
                        )
                        + f"; single statement {single:.2f} s"
                        f" (backfill / single {single / phases['backfill']:.2f})"
                        + f"; peak memory {got['peak_mib']:.0f} MiB;"
                        f" state schema {got['state_bytes'] / 1024:.0f} KiB",
                        flush=True,
                    )
        load = (
            Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
        )
        print(f"load average at the end {' '.join(load)}")
    print("seconds per million rows (linear in rows: the same figure on every line):")
    for work in PLANS:
        per = [f"{rows:,}: {singles[rows, work] / rows * 1e6:.2f}" for rows in counts]
        print(f"  {work:8} {'single':11} " + "  ".join(per))
        for workers in args.workers:
            for kind in ("backfill", "verify"):
                per = [
                    f"{rows:,}: {results[rows, work, workers]['phases'][kind] / rows * 1e6:.2f}"
                    for rows in counts
                ]
                print(f"  {work:8} {kind + ' w' + str(workers):11} " + "  ".join(per))


if __name__ == "__main__":
    main()
