"""Verify benchmark: pgshift's chunked row-hash comparison against one statement.

Builds two tables of `--rows` rows (bigint key; text with non-ASCII, numeric, float8,
timestamptz, boolean, jsonb, uuid) in a scratch database it creates on the `--dsn` server and
drops afterwards, plants 10 differences, then runs, interleaved `--runs` times:

- baseline: ONE statement hashing both whole tables, `SELECT * FROM (SELECT count(*),
  sum(hash) FROM a), (SELECT count(*), sum(hash) FROM b)` with the same per-row hash pgshift
  uses. Two full-table aggregates are the cheapest single statement that detects a difference
  (PostgreSQL runs each as a parallel seq scan), so this is the bar;
- join: one full outer join on the key comparing row hashes, the single statement that also
  names the differing keys (shown for context);
- pgshift: `compare_same_db` with its defaults.

It prints rows/s (rows of both tables per second; medians) and the ratio pgshift/baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
from common import scratch_database, server, server_arguments  # bench/ is on sys.path
from psycopg import sql

from pgshift import db
from pgshift.verify.rowhash import Side, VerifyResult, compare_same_db
from pgshift.verify.side import SideQueries

COLUMNS = ["name", "amount", "ratio", "created", "active", "doc", "ref"]

CREATE = """
CREATE TABLE {table} (
    id bigint PRIMARY KEY, name text, amount numeric(12,2), ratio float8,
    created timestamptz, active boolean, doc jsonb, ref uuid
)"""

FILL = """
INSERT INTO {table}
SELECT g,
       'name-' || g || CASE WHEN g %% 7 = 0 THEN ' été ✓' ELSE '' END,
       (g %% 100000) / 100.0,
       g / 3.0,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1.000001 second',
       g %% 2 = 0,
       jsonb_build_object('n', g, 'tag', 't' || (g %% 10), 'nested', jsonb_build_array(g, NULL)),
       md5(g::text)::uuid
FROM generate_series(1, %s) AS g"""

# 2 missing, 2 extra, 6 changed (each in a different column), at keys that exist for any --rows
# from 100 on.
PLANT = [
    "DELETE FROM b WHERE id IN (17, {mid})",
    "INSERT INTO b (id, name) VALUES ({rows} + 5, 'extra'), (0, 'extra')",
    "UPDATE b SET amount = amount + 0.01 WHERE id = {rows} / 10",
    "UPDATE b SET name = name || ' ' WHERE id = {mid} + 1",
    "UPDATE b SET ratio = -ratio WHERE id = {rows} - 3",
    "UPDATE b SET created = created + interval '1 microsecond' WHERE id = {rows} / 5 + 2",
    "UPDATE b SET doc = doc || '{{\"x\": 1}}' WHERE id = {rows} / 4 + 1",
    "UPDATE b SET active = NULL WHERE id = {rows} / 3 + 3",
]
PLANTED = {"missing": 2, "extra": 2, "changed": 6}


def build(conn: psycopg.Connection[Any], rows: int) -> None:
    for table in ("a", "b"):
        conn.execute(sql.SQL(CREATE).format(table=sql.Identifier(table)))
    conn.execute(sql.SQL(FILL).format(table=sql.Identifier("a")), [rows])
    conn.execute("INSERT INTO b SELECT * FROM a")
    for statement in PLANT:
        conn.execute(statement.format(rows=rows, mid=rows // 2))
    conn.execute("VACUUM ANALYZE a")
    conn.execute("VACUUM ANALYZE b")


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = run()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    server_arguments(parser)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--no-join", action="store_true", help="skip the full outer join run")
    args = parser.parse_args()

    with (
        server(args) as server_dsn,
        scratch_database(server_dsn, "verify") as dsn,
        db.connect(dsn, role="bench") as conn,
    ):
        row = conn.execute("SHOW server_version").fetchone()
        version = row[0] if row else "?"
        started = time.perf_counter()
        build(conn, args.rows)
        print(
            f"verify bench: PostgreSQL {version}, {args.rows:,} rows per table, "
            f"built in {time.perf_counter() - started:.1f} s"
        )
        run_bench(conn, args)


def run_bench(conn: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    left = Side(sql.Identifier("a"), ["id"], COLUMNS)
    right = Side(sql.Identifier("b"), ["id"], COLUMNS)
    hash_a = SideQueries(left).row_hash
    hash_b = SideQueries(right).row_hash
    baseline = sql.SQL(
        "SELECT * FROM (SELECT count(*), sum({ha}) FROM a) AS l, "
        "(SELECT count(*), sum({hb}) FROM b) AS r"
    ).format(ha=hash_a, hb=hash_b)
    join = sql.SQL(
        "SELECT count(*) FILTER (WHERE r.id IS NULL), count(*) FILTER (WHERE l.id IS NULL), "
        "count(*) FILTER (WHERE l.h <> r.h) "
        "FROM (SELECT id, {ha} AS h FROM a) AS l FULL JOIN (SELECT id, {hb} AS h FROM b) AS r "
        "ON l.id = r.id"
    ).format(ha=hash_a, hb=hash_b)
    total = sum(
        row[0] for row in conn.execute("SELECT count(*) FROM a UNION ALL SELECT count(*) FROM b")
    )

    times: dict[str, list[float]] = {"baseline": [], "join": [], "pgshift": []}
    for run in range(1, args.runs + 1):
        seconds, _ = timed(lambda: conn.execute(baseline).fetchall())
        times["baseline"].append(seconds)
        if not args.no_join:
            seconds, counts = timed(lambda: conn.execute(join).fetchone())
            times["join"].append(seconds)
            if tuple(counts) != tuple(PLANTED.values()):
                raise SystemExit(f"the join found {counts}, planted {PLANTED}")
        seconds, result = timed(
            lambda: compare_same_db(conn, left, right, chunk_size=args.chunk_size)
        )
        times["pgshift"].append(seconds)
        check(result)
        line = "  ".join(f"{name} {values[-1]:6.2f} s" for name, values in times.items() if values)
        print(f"run {run}: {line}")

    rates = {name: total / statistics.median(values) for name, values in times.items() if values}
    for name, rate in rates.items():
        print(f"median {name:9} {rate:12,.0f} rows/s")
    print(f"ratio pgshift/baseline: {rates['pgshift'] / rates['baseline']:.2f} (bar: 0.5)")
    if "join" in rates:
        print(f"ratio pgshift/join:     {rates['pgshift'] / rates['join']:.2f}")


def check(result: VerifyResult) -> None:
    found = {"missing": result.missing, "extra": result.extra, "changed": result.changed}
    if found != PLANTED:
        raise SystemExit(f"pgshift found {found}, planted {PLANTED}")


if __name__ == "__main__":
    main()
