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
- floor: the same statement with the cheapest exact-enough hash of a whole row,
  `sum(hashtextextended(t::text, 0)::numeric)` per side: one scan per side, nothing else;
- reladiff: reladiff's hashdiff (`diff_tables(..., algorithm="hashdiff")`, its defaults), when
  the `reladiff` package is installed (`--no-reladiff` skips it);
- pgshift: `compare_same_db` with its defaults (as `migrate verify` runs it).

With `--gap N`, both tables lose the keys of a gap of N rows in the middle (the issue's pair:
`--rows 1000000 --gap 300000`, 700,000 rows per side). It prints rows/s (rows of both tables per
second; medians) and each arm's time over pgshift's, from the same run.
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


def build(conn: psycopg.Connection[Any], rows: int, gap: int = 0) -> None:
    for table in ("a", "b"):
        conn.execute(sql.SQL(CREATE).format(table=sql.Identifier(table)))
    conn.execute(sql.SQL(FILL).format(table=sql.Identifier("a")), [rows])
    if gap:
        # A gap of keys in the middle, clear of the planted keys (they sit at rows/10 .. rows/2+1
        # and near both ends).
        start = rows // 2 + 10
        conn.execute("DELETE FROM a WHERE id > %s AND id <= %s", [start, start + gap])
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
    parser.add_argument("--gap", type=int, default=0, help="keys missing from both tables")
    parser.add_argument("--no-join", action="store_true", help="skip the full outer join run")
    parser.add_argument("--no-reladiff", action="store_true", help="skip reladiff's hashdiff")
    args = parser.parse_args()

    with (
        server(args) as server_dsn,
        scratch_database(server_dsn, "verify") as dsn,
        db.connect(dsn, role="bench") as conn,
    ):
        row = conn.execute("SHOW server_version").fetchone()
        version = row[0] if row else "?"
        started = time.perf_counter()
        build(conn, args.rows, args.gap)
        print(
            f"verify bench: PostgreSQL {version}, {args.rows - args.gap:,} rows per table, "
            f"built in {time.perf_counter() - started:.1f} s"
        )
        run_bench(conn, args, dsn)


def reladiff_arm(dsn: str) -> Callable[[], dict[str, int]] | None:
    """reladiff's hashdiff of a and b, if the package is installed: the counts it finds."""
    try:
        import reladiff  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    # psycopg2's connection keywords (a socket folder as host too, as the embedded server has)
    database = {"driver": "postgresql", **psycopg.conninfo.conninfo_to_dict(dsn)}

    def run() -> dict[str, int]:
        a = reladiff.connect_to_table(database, "a", "id", extra_columns=tuple(COLUMNS))
        b = reladiff.connect_to_table(database, "b", "id", extra_columns=tuple(COLUMNS))
        found = {"-": 0, "+": 0}
        for sign, _ in reladiff.diff_tables(a, b, algorithm="hashdiff", skip_sort_results=True):
            found[sign] += 1
        # A changed row comes out as one '-' and one '+'.
        changed = PLANTED["changed"]
        return {"missing": found["-"] - changed, "extra": found["+"] - changed, "changed": changed}

    return run


def run_bench(conn: psycopg.Connection[Any], args: argparse.Namespace, dsn: str) -> None:
    left = Side(sql.Identifier("a"), ["id"], COLUMNS)
    right = Side(sql.Identifier("b"), ["id"], COLUMNS)
    hash_a = SideQueries(left).row_hash
    hash_b = SideQueries(right).row_hash
    baseline = sql.SQL(
        "SELECT * FROM (SELECT count(*), sum({ha}) FROM a) AS l, "
        "(SELECT count(*), sum({hb}) FROM b) AS r"
    ).format(ha=hash_a, hb=hash_b)
    floor = sql.SQL(
        "SELECT * FROM (SELECT count(*), sum(hashtextextended(a::text, 0)::numeric) FROM a) AS l, "
        "(SELECT count(*), sum(hashtextextended(b::text, 0)::numeric) FROM b) AS r"
    )
    join = sql.SQL(
        "SELECT count(*) FILTER (WHERE r.id IS NULL), count(*) FILTER (WHERE l.id IS NULL), "
        "count(*) FILTER (WHERE l.h <> r.h) "
        "FROM (SELECT id, {ha} AS h FROM a) AS l FULL JOIN (SELECT id, {hb} AS h FROM b) AS r "
        "ON l.id = r.id"
    ).format(ha=hash_a, hb=hash_b)
    total = sum(
        row[0] for row in conn.execute("SELECT count(*) FROM a UNION ALL SELECT count(*) FROM b")
    )

    rela = None if args.no_reladiff else reladiff_arm(dsn)
    times: dict[str, list[float]] = {
        "baseline": [],
        "floor": [],
        "join": [],
        "reladiff": [],
        "pgshift": [],
    }
    for run in range(1, args.runs + 1):
        seconds, _ = timed(lambda: conn.execute(baseline).fetchall())
        times["baseline"].append(seconds)
        seconds, _ = timed(lambda: conn.execute(floor).fetchall())
        times["floor"].append(seconds)
        if rela is not None:
            seconds, found = timed(rela)
            times["reladiff"].append(seconds)
            if found != PLANTED:
                raise SystemExit(f"reladiff found {found}, planted {PLANTED}")
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

    medians = {name: statistics.median(values) for name, values in times.items() if values}
    for name, seconds in medians.items():
        print(
            f"median {name:9} {seconds:7.2f} s {total / seconds:12,.0f} rows/s  "
            f"{name}/pgshift time {seconds / medians['pgshift']:5.2f}"
        )
    print(f"ratio pgshift/baseline (speed): {medians['baseline'] / medians['pgshift']:.2f}")
    print(f"ratio pgshift/floor (speed):    {medians['floor'] / medians['pgshift']:.2f}")
    if "reladiff" in medians:
        print(f"pgshift is {medians['reladiff'] / medians['pgshift']:.1f}x faster than reladiff")


def check(result: VerifyResult) -> None:
    found = {"missing": result.missing, "extra": result.extra, "changed": result.changed}
    if found != PLANTED:
        raise SystemExit(f"pgshift found {found}, planted {PLANTED}")


if __name__ == "__main__":
    main()
