"""A move between two servers against `pg_dump | psql` of the same tables, same run; and the
write-blocked window of cutover under load.

    python bench/move.py [--scale 10] [--runs 3] [--clients 4]

Starts its own pair of servers (tests/integration/servers.py: the machine's PostgreSQL 15 as
source, the embedded 18 as destination; both 18 without PostgreSQL 15 binaries) and builds
`pgbench -i -s SCALE` (with its foreign keys) plus a `transfers` table on the source. Then, run
after run:

- **copy**: the baseline (the bar) is ONE `pg_dump --table ... | psql` of the same tables into
  an empty database of the destination (schema, rows, then indexes and foreign keys: what an
  operator does with the application stopped), timed from start to end. pgshift's arm is
  `migrate apply --until backfill` into another empty database: the schema, publication and
  subscription, the initial copy (the subscription's table-sync workers, several tables at
  once), the indexes and foreign keys after it, and the wait until the destination streams;
  timed end to end, and the backfill phase alone as the state records it. Both end with every
  row on the destination. The move is then rolled back (its slot dropped).
- **cutover**: CLIENTS application clients (tests/integration/move_load.py: pgbench's TPC-B-like
  transaction plus an insert taking a sequence value, retried when a fence refuses it) write
  to the source; `migrate apply --until cutover` fences the source, lets the destination catch
  up, sets the sequences, starts the replication back and runs the `after_fence` hook, which
  points the clients at the destination. Printed: the window pgshift records (from the fence's
  commit to the hook's end) and the gap the clients saw (from the last commit on the source to
  the first on the destination). Then `migrate rollback --to verify` moves them back (its window
  is measured the same way), ready for the next run.

Medians over the runs are printed beside each run.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the server pair and the load live with the tests

from pgshift.engine.progress import Reporter  # noqa: E402
from pgshift.engine.state import StateStore  # noqa: E402
from pgshift.log import configure  # noqa: E402
from pgshift.move.executor import MoveExecutor  # noqa: E402
from pgshift.plan.load import load_plan_text  # noqa: E402
from tests.integration.move_load import SwitchingLoad, create_transfers  # noqa: E402
from tests.integration.servers import (  # noqa: E402
    PAIR,
    ServerPair,
    drop_database,
    drop_subscriptions,
    pgbench_init,
    server_pair,
    with_dbname,
)

TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "transfers"]
PLAN = """
version: 1
name: bench_move
move:
  tables: [{tables}]
  hooks:
    after_fence: {hook}
phases: [expand, dual_write, backfill, verify, cutover, contract]
"""


def create(dsn: str, name: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_dbname(dsn, name)


def rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT {}").format(
                sql.SQL(" + ").join(
                    sql.SQL("(SELECT count(*) FROM {})").format(sql.Identifier(t)) for t in TABLES
                )
            )
        ).fetchone()
    return int(row[0]) if row else 0


def dump_restore(pair: ServerPair, source: str, target: str) -> float:
    """Seconds of one `pg_dump | psql` of the tables (the destination's client programs)."""
    dump = [str(pair.destination.program("pg_dump")), "--no-owner", "--dbname", source]
    for table in TABLES:
        dump += ["--table", table]
    started = time.perf_counter()
    with subprocess.Popen(dump, stdout=subprocess.PIPE) as producer:
        restore = subprocess.run(
            [str(pair.destination.program("psql")), "-q", "-X", "--dbname", target],
            stdin=producer.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
    seconds = time.perf_counter() - started
    # this machine's PostgreSQL 15 gives each column an option PostgreSQL 18 refuses: those
    # ALTER statements fail, and nothing else may
    errors = [
        line for line in restore.stderr.splitlines() if "ERROR" in line and "pg_attver" not in line
    ]
    if errors:
        raise RuntimeError(f"pg_dump | psql failed: {errors[:3]}")
    return seconds


def executor(source: str, target: str, plan: str) -> MoveExecutor:
    return MoveExecutor(
        source, target, load_plan_text(plan, "bench.yaml"), StateStore(), Reporter(bar=False)
    )


def pgshift_copy(source: str, target: str, plan: str) -> tuple[float, float]:
    """(seconds of apply --until backfill, seconds of its backfill phase)."""
    started = time.perf_counter()
    executor(source, target, plan).apply(until="backfill")
    seconds = time.perf_counter() - started
    with psycopg.connect(source) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM finished_at - started_at) FROM pgshift.phases"
            " WHERE migration = 'bench_move' AND kind = 'backfill'"
        ).fetchone()
    assert row is not None
    return seconds, float(row[0])


def window(source: str) -> float:
    with psycopg.connect(source) as conn:
        row = conn.execute(
            "SELECT (checkpoint->>'write_blocked_seconds')::float FROM pgshift.phases"
            " WHERE migration = 'bench_move' AND kind = 'cutover'"
        ).fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale (100,000 rows each)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    configure("console", 0)  # warnings only: the numbers are the output
    with server_pair() as pair, tempfile.TemporaryDirectory() as folder:
        measure(pair, args.scale, args.runs, args.clients, Path(folder))


def measure(pair: ServerPair, scale: int, runs: int, clients: int, folder: Path) -> None:
    source = create(pair.source_dsn, "bench_source")
    pgbench_init(pair.source_bindir, source, scale=scale, steps="dtgvpf", timeout=1800)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        create_transfers(conn)
        conn.execute("VACUUM ANALYZE")
        size = conn.execute(
            "SELECT sum(pg_total_relation_size(c)) FROM unnest(%s::regclass[]) c", (TABLES,)
        ).fetchone()
    target_file = folder / "writes_go_to"
    hook = shlex.quote(f'printf %s "$PGSHIFT_WRITES_GO_TO" > {shlex.quote(str(target_file))}')
    plan = PLAN.format(tables=", ".join(TABLES), hook=hook)
    print(
        f"servers {PAIR}; {rows(source):,} rows in {len(TABLES)} tables,"
        f" {int(size[0] if size else 0) / 1048576:,.0f} MiB with indexes; {runs} runs"
    )
    base: list[float] = []
    ours: list[float] = []
    phase: list[float] = []
    recorded: list[float] = []
    gaps: list[float] = []
    back: list[float] = []
    for run in range(runs):
        total_rows = rows(source)  # the clients of the run before added some
        restore = create(pair.destination_dsn, f"bench_restore_{run}")
        base.append(dump_restore(pair, source, restore))
        assert rows(restore) == total_rows
        drop_database(pair.destination_dsn, f"bench_restore_{run}")

        target = create(pair.destination_dsn, f"bench_move_{run}")
        seconds, backfill = pgshift_copy(source, target, plan)
        ours.append(seconds)
        phase.append(backfill)
        assert rows(target) == total_rows

        target_file.write_text("source")
        with SwitchingLoad({"source": source, "destination": target}, target_file, clients) as app:
            app.wait_commits("source", 200)
            executor(source, target, plan).apply(until="cutover")
            app.wait_commits("destination", 200)
            recorded.append(window(source))
            gap = app.stats.gap("source", "destination")
            gaps.append(gap if gap is not None else float("nan"))
            executor(source, target, plan).rollback(to="verify")
            app.wait_commits("source", 200)
            gap = app.stats.gap("destination", "source")
            back.append(gap if gap is not None else float("nan"))
        if app.stats.errors:
            raise RuntimeError(f"the clients saw errors: {app.stats.errors[:3]}")
        executor(source, target, plan).rollback()
        drop_subscriptions(target)
        drop_database(pair.destination_dsn, f"bench_move_{run}")
        print(
            f"run {run + 1}: pg_dump | psql {base[-1]:.2f}s ({total_rows / base[-1]:,.0f} rows/s);"
            f" pgshift to streaming {ours[-1]:.2f}s ({total_rows / ours[-1]:,.0f} rows/s),"
            f" backfill phase {phase[-1]:.2f}s; cutover window recorded {recorded[-1]:.3f}s,"
            f" seen by the clients {gaps[-1]:.3f}s; rollback's {back[-1]:.3f}s"
        )
    print(
        f"median: pg_dump | psql {median(base):.2f}s, pgshift {median(ours):.2f}s,"
        f" pgshift / pg_dump | psql throughput {median(base) / median(ours):.2f};"
        f" cutover write-blocked window recorded {median(recorded):.3f}s, seen by the clients"
        f" {median(gaps):.3f}s (target <= 2s), back at rollback {median(back):.3f}s"
    )


if __name__ == "__main__":
    main()
