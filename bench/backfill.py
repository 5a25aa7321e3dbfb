"""Backfill benchmark: pgshift's keyset batches against one UPDATE over the whole table.

In a scratch database it creates on the `--dsn` server (or on an embedded server with
`--embedded`) and drops afterwards, it runs, interleaved `--runs` times, each arm on a fresh
`accounts` table of `--rows` rows (the demo's table: serial key, balance integer, email, status,
two timestamps; indexes on email and balance), loaded and `VACUUM ANALYZE`d before the clock
starts:

- pgshift wN, one arm per `--workers` count (default 1 and 2): a plan widening balance to
  bigint (expand, dual_write, backfill) with `settings: {workers: N}`, applied with
  `--until backfill` semantics through the Executor. Only the backfill phase is timed: by the
  phase's started_at/finished_at in the state schema (the number reported) and by the wall
  clock around the batch loop (a cross-check). The slowest batch comes from the runner, the
  workers that actually walked from its `backfill finished` event.
- baseline: `ALTER TABLE accounts ADD COLUMN new bigint`, then ONE
  `UPDATE accounts SET new = balance::bigint` over the whole table, timed alone: what an
  operator would run by hand.
- with `--context`, two more single UPDATEs that do pgshift's per-row work, to tell where
  a gap comes from: baseline+index, with an index on `new` in place (expand builds a copy of
  the balance index on the shadow column before the backfill, so every backfilled row also
  goes into it); and baseline+index+trigger, with that index and a BEFORE UPDATE trigger like
  the dual-write one, skipped by the same WHEN clause as in the backfill.

With `--table narrow` the table is `t (id bigint primary key, v int, pad text)` (no index but its
key) and `v` is widened; its context arm is baseline+trigger (the column has no index to copy).

Every arm ends with a check that each row's new value is the old one as bigint, outside the
timing. The pgshift arms run first in each run, their order swapped from one run to the next.
Autovacuum is off on the scratch table and a CHECKPOINT runs before each timed part, so no arm
pays for another's leftovers. When the server runs on this machine, the CPU time of the server
processes doing the work is shown too (with workers: the main connection's and each worker's,
sampled from /proc while the batches run): on a busy machine it moves less than the wall
clock. Prints rows/s per run and the medians, the ratio of each pgshift arm to each baseline,
the slowest batch, and per pgshift arm whether the bar is met (ratio >= 0.8 and slowest batch
< 500 ms). With 2 workers pgshift uses 2 server processes; the single statement uses one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
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

from pgshift import db
from pgshift.demo.seed import create_accounts
from pgshift.engine.executor import Executor
from pgshift.engine.progress import BatchReport, Reporter
from pgshift.engine.state import StateStore
from pgshift.phases.dual_write import BACKFILL_SETTING
from pgshift.plan.load import load_plan_text

NAME = "bench_backfill"
STATE_SCHEMA = "pgshift"
RATIO_BAR = 0.8
SLOWEST_BAR_MS = 500.0

PLAN = """\
version: 1
name: {name}
table: public.{table}
columns:
  {column}:
    type: bigint
    up: {column}::bigint
    down: {column}::integer
settings:
  lock_timeout: 1s
  batch_size: {batch_size}
  batch_time: {batch_time}
  workers: {workers}
phases:
  - expand
  - dual_write
  - backfill
"""


class ServerCpu:
    """CPU seconds (user + system) of server processes, read from /proc when the server runs on
    this machine; None otherwise."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        host = conn.info.host
        self.local = (host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")) and (
            Path("/proc") / str(conn.info.backend_pid) / "stat"
        ).exists()
        self.ticks = os.sysconf("SC_CLK_TCK") if self.local else 1

    def read(self, pids: list[int]) -> float | None:
        if not self.local or not pids:
            return None
        ticks = [self.ticks_of(pid) for pid in pids]
        known = [t for t in ticks if t is not None]
        return sum(known) / self.ticks if len(known) == len(ticks) else None

    def ticks_of(self, pid: int) -> int | None:
        try:
            fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            return None


class CpuSampler:
    """The CPU seconds the pgshift backends of the bench's migration use while the batches run,
    workers included: those connect after the batch loop starts and are gone when it ends, so
    a thread finds them in pg_stat_activity (until `expected` more are known, for at most
    FIND_SECONDS) and reads each one's /proc counters every EVERY seconds, keeping the last
    reading of each (a backend that has exited keeps its last one: at most EVERY seconds of its
    CPU are missed). Backends found after the start count from zero (their start-up is a few
    milliseconds)."""

    EVERY = 0.02
    FIND_SECONDS = 3.0

    def __init__(
        self, conn: psycopg.Connection[Any], cpu: ServerCpu, pattern: str, expected: int
    ) -> None:
        self.conn, self.cpu, self.pattern, self.expected = conn, cpu, pattern, expected
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="bench-cpu", daemon=True)
        self.failed = False

    def _find(self, initial: bool) -> None:
        for (pid,) in self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s", (self.pattern,)
        ):
            if pid not in self.first:
                ticks = self.cpu.ticks_of(pid)
                if ticks is not None:
                    self.first[pid] = ticks if initial else 0
                    self.last[pid] = ticks

    def _read(self) -> None:
        for pid in self.first:
            ticks = self.cpu.ticks_of(pid)
            if ticks is not None:
                self.last[pid] = ticks

    def start(self) -> None:
        self._find(initial=True)
        self.expected += len(self.first)  # the migration's own connections, there already
        self.thread.start()

    def _loop(self) -> None:
        started = time.monotonic()
        try:
            while not self.done.wait(self.EVERY):
                if (
                    len(self.first) < self.expected
                    and time.monotonic() - started < self.FIND_SECONDS
                ):
                    self._find(initial=False)
                self._read()
        except Exception:  # a lost sample must not break the measurement
            self.failed = True

    def stop(self) -> float | None:
        self.done.set()
        self.thread.join()
        self._read()
        if self.failed or not self.first:
            return None
        return sum(self.last[pid] - self.first[pid] for pid in self.first) / self.cpu.ticks

    @property
    def backends(self) -> int:
        return len(self.first)


@dataclass
class BenchReporter(Reporter):
    """Keeps what the runner reports instead of logging it: every batch, the wall clock and the
    server CPU around the batch loop, and the `backfill finished` event."""

    conn: psycopg.Connection[Any] | None = None  # the bench's own connection, to find the pids
    cpu: ServerCpu | None = None
    workers: int = 1  # the plan's: how many worker backends the CPU sampler looks for
    bar: bool = False
    batches: list[BatchReport] = field(default_factory=list)
    finished: dict[str, Any] = field(default_factory=dict)
    loop_started: float = 0.0
    loop_finished: float = 0.0
    sampler: CpuSampler | None = None
    cpu_seconds: float | None = None
    backends: int = 0  # server processes whose CPU was counted
    active: bool = False  # between the backfill phase's start and end

    def event(self, message: str, **fields: object) -> None:
        if message == "backfill finished":
            self.finished = dict(fields)

    def backfill_started(self, phase: str, rows_done: int, rows_total: int | None) -> None:
        self.active = phase == "backfill"  # dual_write's data check reports through here too
        if not self.active:
            return
        if self.conn is not None and self.cpu is not None and self.cpu.local:
            # the migration's connections, and with workers their own ones, opened next
            expected = self.workers if self.workers > 1 else 0
            self.sampler = CpuSampler(self.conn, self.cpu, f"pgshift apply {NAME} %", expected)
            self.sampler.start()
        self.loop_started = time.perf_counter()

    def batch(self, phase: str, report: BatchReport, work: str = "backfill") -> None:
        if work == "backfill" and phase == "backfill":  # not dual_write's data check
            self.batches.append(report)

    def backfill_finished(self) -> None:
        if self.active and self.loop_started and not self.loop_finished:
            self.loop_finished = time.perf_counter()
            if self.sampler is not None:
                self.cpu_seconds = self.sampler.stop()
                self.backends = self.sampler.backends


@dataclass
class Run:
    seconds: float
    rows: int
    cpu_seconds: float | None = None
    wall_seconds: float = 0.0  # pgshift: wall clock around the batch loop
    batches: int = 0
    slowest_ms: float = 0.0
    sizes: list[int] = field(default_factory=list)
    workers: int = 0  # pgshift: the workers that walked (the runner's `backfill finished`)
    backends: int = 0  # pgshift: the server processes whose CPU was counted

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_rate(self) -> float | None:
        return self.rows / self.cpu_seconds if self.cpu_seconds else None

    def line(self, baseline: Run | None = None) -> str:
        text = f"{self.seconds:7.2f} s {self.rate:9,.0f} rows/s"
        if self.cpu_seconds is not None:
            text += f" (server cpu {self.cpu_seconds:6.2f} s)"
        if baseline is not None:
            text += f"  ratio {self.rate / baseline.rate:.2f}"
        return text


@dataclass(frozen=True)
class Shape:
    """The table the backfill widens a column of."""

    table: str
    column: str  # integer, widened to bigint


SHAPES = {
    # the demo's table: serial key, balance integer, email, status, two timestamps; indexes on
    # email and balance
    "accounts": Shape("accounts", "balance"),
    # the table of issue 12's measurements: no index but its key
    "narrow": Shape("t", "v"),
}
shape = SHAPES["accounts"]  # set by --table


def fresh_table(conn: psycopg.Connection[Any], rows: int) -> None:
    """A new table of `rows` rows with nothing of an earlier run left."""
    for schema in (STATE_SCHEMA, f"pgshift_{NAME}"):
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    if shape.table == "accounts":
        create_accounts(conn, rows, replace=True)
        return
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(shape.table)))
    conn.execute(
        sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, v int, pad text)").format(
            sql.Identifier(shape.table)
        )
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO {} SELECT i, i %% 1000, md5(i::text) FROM generate_series(1, %s) i"
        ).format(sql.Identifier(shape.table)),
        (rows,),
    )


def settle(conn: psycopg.Connection[Any]) -> None:
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(shape.table)))
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
        conn.execute("CHECKPOINT")  # not a superuser (nor pg_checkpoint): only noisier


def check_filled(conn: psycopg.Connection[Any], column: str, rows: int) -> None:
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE {} IS DISTINCT FROM {}::bigint) FROM {}"
        ).format(sql.Identifier(column), sql.Identifier(shape.column), sql.Identifier(shape.table))
    ).fetchone()
    if row is None or row[0] != rows or row[1] != 0:
        raise SystemExit(f"{column}: {row} (rows, wrong); expected ({rows}, 0)")


# The dual-write trigger's shape: BEFORE INSERT OR UPDATE, skipped while the backfill runs.
TRIGGER = """
CREATE FUNCTION bench_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  SELECT {column}::bigint INTO NEW.new FROM (SELECT NEW.*) AS r;
  RETURN NEW;
END $$;
CREATE TRIGGER bench_sync BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW
  WHEN (current_setting({setting}, true) IS DISTINCT FROM 'on') EXECUTE FUNCTION bench_sync();
"""

BASELINES = {
    "baseline": (False, False),
    "baseline+index": (True, False),
    "baseline+index+trigger": (True, True),
    "baseline+trigger": (False, True),
}


def run_baseline(conn: psycopg.Connection[Any], rows: int, cpu: ServerCpu, arm: str) -> Run:
    index, trigger = BASELINES[arm]
    fresh_table(conn, rows)
    conn.execute("DROP FUNCTION IF EXISTS bench_sync() CASCADE")
    table = sql.Identifier(shape.table)
    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN new bigint").format(table))
    if index:
        conn.execute(sql.SQL("CREATE INDEX bench_new_idx ON {} (new)").format(table))
    if trigger:
        conn.execute(
            sql.SQL(TRIGGER).format(
                setting=sql.Literal(BACKFILL_SETTING),
                column=sql.Identifier(shape.column),
                table=table,
            )
        )
    settle(conn)
    pids = [conn.info.backend_pid]
    cpu_before = cpu.read(pids)
    started = time.perf_counter()
    with conn.transaction():
        if trigger:
            conn.execute("SELECT set_config(%s, 'on', true)", (BACKFILL_SETTING,))
        cur = conn.execute(
            sql.SQL("UPDATE {} SET new = {}::bigint").format(table, sql.Identifier(shape.column))
        )
    seconds = time.perf_counter() - started
    cpu_after = cpu.read(pids)
    check_filled(conn, "new", rows)
    used = cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
    return Run(seconds=seconds, rows=cur.rowcount, cpu_seconds=used)


def run_pgshift(
    conn: psycopg.Connection[Any], dsn: str, rows: int, plan_text: str, cpu: ServerCpu, workers: int
) -> Run:
    fresh_table(conn, rows)
    settle(conn)
    reporter = BenchReporter(conn=conn, cpu=cpu, workers=workers)
    executor = Executor(dsn, load_plan_text(plan_text), StateStore(STATE_SCHEMA), reporter)
    result = executor.apply(until="backfill")
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
    check_filled(conn, f"_pgshift_{shape.column}", rows)
    slowest = max((b.batch_seconds for b in reporter.batches), default=0.0) * 1000
    logged = reporter.finished.get("slowest_batch_ms", 0)
    walked = reporter.finished.get("workers", 1)
    return Run(
        seconds=seconds,
        rows=rows_done,
        cpu_seconds=reporter.cpu_seconds,
        wall_seconds=reporter.loop_finished - reporter.loop_started,
        batches=batches,
        slowest_ms=max(slowest, float(logged) if isinstance(logged, int | float) else 0.0),
        sizes=[b.batch_size for b in reporter.batches],
        workers=int(walked) if isinstance(walked, int) else 0,
        backends=reporter.backends,
    )


def sizes_summary(sizes: list[int]) -> str:
    if not sizes:
        return "-"
    steady = sizes[len(sizes) // 2 :]
    return f"{sizes[0]:,} first, {int(statistics.median(steady)):,} median of the second half"


def median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if len(known) == len(values) and known else None


def load_average() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "?"


def bench(dsn: str, args: argparse.Namespace) -> bool:
    plans = {
        f"pgshift w{n}": (
            n,
            PLAN.format(
                name=NAME,
                table=shape.table,
                column=shape.column,
                batch_size=args.batch_size,
                batch_time=args.batch_time,
                workers=n,
            ),
        )
        for n in args.workers
    }
    shifted_arms = list(plans)
    with db.connect(dsn, role="bench") as conn:
        row = conn.execute("SHOW server_version").fetchone()
        cpu = ServerCpu(conn)
        print(
            f"backfill bench: PostgreSQL {row[0] if row else '?'}, {shape.table}, {args.rows:,}"
            f" rows, {args.runs} runs, batch_size {args.batch_size}, batch_time"
            f" {args.batch_time}, workers {', '.join(map(str, args.workers))};"
            f" {os.cpu_count()} cpus, load average {load_average()}"
        )
        # context: the single UPDATE with pgshift's per-row work (the shadow index copy where
        # the column has an index, the skipped dual-write trigger) in place
        context = (
            ["baseline+index", "baseline+index+trigger"]
            if shape.table == "accounts"
            else ["baseline+trigger"]
        )
        baselines = ["baseline", *(context if args.context else [])]
        arms = [*shifted_arms, *baselines]
        runs: dict[str, list[Run]] = {arm: [] for arm in arms}
        for number in range(1, args.runs + 1):
            # the pgshift arms first, their order swapped every run
            order = shifted_arms if number % 2 else shifted_arms[::-1]
            for arm in order:
                workers, plan_text = plans[arm]
                runs[arm].append(run_pgshift(conn, dsn, args.rows, plan_text, cpu, workers))
            for arm in baselines:
                runs[arm].append(run_baseline(conn, args.rows, cpu, arm))
            print(f"run {number} (load average {load_average()}):")
            for arm in shifted_arms:
                shifted = runs[arm][-1]
                print(f"  {arm:22} {shifted.line(runs['baseline'][-1])}")
                cpu_note = (
                    f"; cpu of {shifted.backends} server processes" if shifted.backends else ""
                )
                print(
                    f"  {'':22} wall around the batch loop {shifted.wall_seconds:.2f} s;"
                    f" {shifted.batches} batches by {shifted.workers} worker(s), size"
                    f" {sizes_summary(shifted.sizes)}; slowest {shifted.slowest_ms:.0f} ms"
                    + cpu_note
                )
            for arm in baselines:
                print(f"  {arm:22} {runs[arm][-1].line()}")
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(shape.table)))

    rates = {arm: statistics.median(r.rate for r in rs) for arm, rs in runs.items()}
    cpu_rates = {arm: median_or_none([r.cpu_rate for r in rs]) for arm, rs in runs.items()}
    print(f"medians (load average {load_average()}):")
    for arm, rate in rates.items():
        per_cpu = cpu_rates[arm]
        extra = f" ({per_cpu:,.0f} rows per server cpu second)" if per_cpu else ""
        print(f"  {arm:22} {rate:10,.0f} rows/s{extra}")
    met_all = True
    for shifted_arm in shifted_arms:
        for arm in baselines:
            pg, base = cpu_rates[shifted_arm], cpu_rates[arm]
            label = f"ratio {shifted_arm}/{arm}:"
            note = f" (bar: >= {RATIO_BAR})" if arm == "baseline" else " (context)"
            cpu_note = f"; on server cpu time {pg / base:.2f}" if pg and base else ""
            print(f"{label:42} {rates[shifted_arm] / rates[arm]:.2f}{note}{cpu_note}")
    for shifted_arm in shifted_arms:
        ratio = rates[shifted_arm] / rates["baseline"]
        slowest = max(r.slowest_ms for r in runs[shifted_arm])
        print(
            f"{'slowest batch, ' + shifted_arm + ':':42} {slowest:.0f} ms over all runs"
            f" (bar: < {SLOWEST_BAR_MS:.0f} ms)"
        )
        met = ratio >= RATIO_BAR and slowest < SLOWEST_BAR_MS
        met_all = met_all and met
        print(f"bar met, {shifted_arm}: {'yes' if met else 'no'} (ratio {ratio:.2f})")
    if len(shifted_arms) > 1:
        first, *others = shifted_arms
        for arm in others:
            print(f"{arm + ' / ' + first + ':':42} {rates[arm] / rates[first]:.2f}")
    return met_all


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    server_arguments(parser)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--table", choices=sorted(SHAPES), default="accounts")
    parser.add_argument("--batch-size", default="auto", help="'auto' or a number of rows")
    parser.add_argument("--batch-time", default="200ms", help="the batch time 'auto' aims at")
    parser.add_argument(
        "--workers",
        type=worker_counts,
        default=[1, 2],
        help="comma-separated worker counts, one pgshift arm each (default 1,2)",
    )
    parser.add_argument(
        "--context",
        action="store_true",
        help="also time the baseline with pgshift's index and trigger in place",
    )
    parser.add_argument(
        "--table-copy",
        action="store_true",
        help="also measure the new_table copy against one INSERT ... SELECT (bench/table_copy.py)",
    )
    args = parser.parse_args()
    global shape
    shape = SHAPES[args.table]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    with server(args) as dsn, scratch_database(dsn, "backfill") as scratch:
        bench(scratch, args)
        if args.table_copy:
            from table_copy import measure  # bench/ is this script's own folder on sys.path

            print("\ntable copy:")
            measure(dsn, args.rows, args.runs, args.table, args.workers)


if __name__ == "__main__":
    main()
