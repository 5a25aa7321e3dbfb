"""Table copy (`new_table`) while the application deletes: the delete fence against row locks.

    python bench/copy_under_deletes.py [--dsn DSN | --embedded] [--rows 1000000] [--runs 3]
        [--clients 4] [--mix reinsert|delete]

`t (id bigint primary key, v int, pad text)` is copied into `t2` by pgshift's backfill (one
worker) while `--clients` connections each run, as fast as they can, one short transaction
after another on random keys of the whole table: `reinsert` (the default) deletes a row and
inserts it again with new values, `delete` deletes one and inserts a new key above the table's.
Set-up is not timed; each arm starts from a fresh, vacuumed, checkpointed table. The arms,
alternating:

- **idle**: the copy with nobody writing (the copy's own speed on this server);
- **fence**: the copy under the clients, its batches closed by the delete fence;
- **row locks**: the same, the copy trigger's call of the fence removed after dual_write, so
  the batches read the rows they copy FOR KEY SHARE (what every copy did before the fence).

Per arm: the copy's rows/s (the phase's start and end as the state records them), its slowest
batch, the rows the fence swept, the lock waits it retried; the clients' transactions per
second, their slowest transaction, their 99th percentile and failed transactions. Afterwards
(not timed) the new table must equal the live one, row for row.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from common import (  # bench/ is on sys.path
    narrow_table,
    scratch_database,
    server,
    server_arguments,
)
from table_copy import NARROW_PLAN

from pgshift.engine.executor import Executor
from pgshift.engine.progress import Reporter
from pgshift.engine.state import StateStore
from pgshift.log import configure
from pgshift.plan.load import load_plan_text


class Outcome(Reporter):
    """What the backfill reports when it finishes."""

    slowest_ms: float = 0.0
    swept: int = 0

    def event(self, message: str, **fields: object) -> None:
        if message == "backfill finished":
            self.slowest_ms = float(fields["slowest_batch_ms"])  # type: ignore[arg-type]
            self.swept = int(fields.get("rows_swept", 0))  # type: ignore[call-overload]


@dataclass
class Clients:
    """`count` connections writing in a loop until stopped."""

    dsn: str
    count: int
    rows: int
    mix: str
    stop: threading.Event = field(default_factory=threading.Event)
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    started: float = 0.0
    ended: float = 0.0
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Clients:
        self.started = time.perf_counter()
        for number in range(self.count):
            thread = threading.Thread(target=self._run, args=(number,))
            thread.start()
            self.threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.ended = time.perf_counter()

    def _run(self, number: int) -> None:
        chance = random.Random(number)
        mine: list[float] = []
        failed = 0
        next_key = self.rows + 1 + number * 10_000_000
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SET statement_timeout = '30s'")
            while not self.stop.is_set():
                key = chance.randint(1, self.rows)
                began = time.perf_counter()
                try:
                    with conn.transaction():
                        conn.execute("DELETE FROM t WHERE id = %s", (key,))
                        if self.mix == "reinsert":
                            conn.execute(
                                "INSERT INTO t VALUES (%s, %s, 'again') ON CONFLICT DO NOTHING",
                                (key, chance.randint(0, 999)),
                            )
                        else:
                            next_key += 1
                            conn.execute("INSERT INTO t VALUES (%s, 1, 'new')", (next_key,))
                except psycopg.Error:
                    failed += 1
                mine.append(time.perf_counter() - began)
        with self.lock:
            self.latencies += mine
            self.failed += failed

    def summary(self) -> tuple[float, float, float, int]:
        """Transactions per second, the slowest and the 99th percentile in ms, failures."""
        done = sorted(self.latencies)
        if not done:
            return 0.0, 0.0, 0.0, self.failed
        p99 = done[min(len(done) - 1, int(len(done) * 0.99))]
        return len(done) / (self.ended - self.started), done[-1] * 1e3, p99 * 1e3, self.failed


def without_fence(conn: psycopg.Connection[Any]) -> None:
    """The copy trigger as a pgshift without the fence installed it: the backfill then locks
    the rows it copies."""
    row = conn.execute(
        "SELECT p.oid::regprocedure::text, p.prosrc FROM pg_proc p"
        " WHERE p.proname = 'copy_narrow_copy' AND p.prorettype = 'trigger'::regtype"
    ).fetchone()
    assert row is not None and "copy_delete_fence" in row[1]
    body = "\n".join(line for line in row[1].splitlines() if "copy_delete_fence" not in line)
    conn.execute(
        psycopg.sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}"
        ).format(psycopg.sql.SQL(row[0].removesuffix("()")), psycopg.sql.Literal(body))
    )


def copy(
    conn: psycopg.Connection[Any], dsn: str, rows: int, arm: str, clients: int, mix: str
) -> dict[str, float]:
    narrow_table(conn, rows, "pgshift_narrow_copy")
    conn.execute("DROP TABLE IF EXISTS t2")
    loaded = load_plan_text(NARROW_PLAN)
    Executor(dsn, loaded, StateStore()).apply(until="dual_write")
    if arm == "row locks":
        without_fence(conn)
    reporter = Outcome(bar=False)
    writers = Clients(dsn, clients if arm != "idle" else 0, rows, mix)
    with writers:
        Executor(dsn, loaded, StateStore(), reporter).apply(until="backfill")
    waits = conn.execute(
        "SELECT count(*) FROM pgshift.events WHERE event = 'lock not granted'"
    ).fetchone()
    row = conn.execute(
        "SELECT extract(epoch FROM finished_at - started_at) FROM pgshift.phases"
        " WHERE kind = 'backfill'"
    ).fetchone()
    assert row is not None
    differ = conn.execute(
        "SELECT (SELECT count(*) FROM (TABLE t EXCEPT ALL TABLE t2) a)"
        " + (SELECT count(*) FROM (TABLE t2 EXCEPT ALL TABLE t) b)"
    ).fetchone()
    if differ is None or differ[0] != 0:
        raise SystemExit(f"{arm}: t2 differs from t in {differ} rows")
    tps, slowest, p99, failed = writers.summary()
    return {
        "rows/s": rows / float(row[0]),
        "slowest batch ms": reporter.slowest_ms,
        "swept": reporter.swept,
        "lock waits": waits[0] if waits else 0,
        "client tps": tps,
        "client max ms": slowest,
        "client p99 ms": p99,
        "client failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    server_arguments(parser)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--mix", choices=("reinsert", "delete"), default="reinsert")
    args = parser.parse_args()
    configure("console", 0)  # warnings only: the numbers are the output
    arms = ["idle", "fence", "row locks"]
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
    with (
        server(args) as server_dsn,
        scratch_database(server_dsn, "deletes") as dsn,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        version = conn.execute("SHOW server_version").fetchone()
        print(
            f"server {version[0] if version else '?'}, {args.rows:,} rows, {args.runs} runs,"
            f" {args.clients} clients ({args.mix})"
        )
        for run in range(args.runs):
            for arm in arms if run % 2 == 0 else arms[::-1]:
                found = copy(conn, dsn, args.rows, arm, args.clients, args.mix)
                results[arm].append(found)
                print(
                    f"run {run + 1} {arm}: " + ", ".join(f"{k} {v:,.0f}" for k, v in found.items()),
                    flush=True,
                )
    for arm in arms:
        medians = {k: statistics.median(r[k] for r in results[arm]) for k in results[arm][0]}
        print(f"median {arm}: " + ", ".join(f"{k} {v:,.0f}" for k, v in medians.items()))
    idle = statistics.median(r["rows/s"] for r in results["idle"])
    for arm in ("fence", "row locks"):
        rate = statistics.median(r["rows/s"] for r in results[arm])
        print(f"{arm}: copy at {rate / idle:.2f} of its idle speed")


if __name__ == "__main__":
    main()
