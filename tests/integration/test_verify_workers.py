"""Verify with several workers against a real PostgreSQL: two workers find exactly the
differences one worker finds (missing, extra and changed rows at chunk and bucket edges,
composite and text keys, NULLs), report chunks in key order, resume where a stop left off, and
see no false difference under writers changing both sides at once."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgshift import db
from pgshift.verify.rowhash import ChunkProgress, Side, VerifyResult, compare_same_db
from tests.integration.helpers import cli, error_line, run_process, write_plan

Connection = psycopg.Connection[Any]

# Small chunks and buckets, so that 1,000 rows make 10 chunks of 10 buckets each.
CHUNK = 100
LEAF = 10


@pytest.fixture
def pg(dsn: str) -> Iterator[Connection]:
    with db.connect(dsn, role="test") as connection:
        yield connection


def found(result: VerifyResult) -> set[tuple[str, tuple[Any, ...], tuple[str, ...]]]:
    return {(d.kind, d.key, d.columns) for d in result.examples}


def compare(conn: Connection, left: Side, right: Side, **options: Any) -> VerifyResult:
    return compare_same_db(
        conn, left, right, chunk_size=CHUNK, leaf_size=LEAF, max_examples=1_000, **options
    )


def same_by_every_engine(conn: Connection, left: Side, right: Side) -> VerifyResult:
    """One worker, two workers and no helper connection at all agree on everything found."""
    one = compare(conn, left, right, workers=1)
    two = compare(conn, left, right, workers=2)
    alone = compare(conn, left, right, parallel=False)
    for other in (two, alone):
        assert (other.missing, other.extra, other.changed) == (one.missing, one.extra, one.changed)
        assert found(other) == found(one)
        assert (other.rows_compared, other.chunks) == (one.rows_compared, one.chunks)
    return two


def test_integer_key_differences_at_chunk_and_bucket_edges(pg: Connection) -> None:
    for table in ("a", "b"):
        pg.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, v integer, t text)").format(
                sql.Identifier(table)
            )
        )
    pg.execute(
        "INSERT INTO a SELECT g, g % 7, CASE WHEN g % 5 = 0 THEN NULL ELSE 't' || g END"
        " FROM generate_series(1, 1000) AS g"
    )
    pg.execute("INSERT INTO b SELECT * FROM a")
    # chunk ends are at keys 100, 200, ...; bucket ends at 10, 20, ...
    pg.execute("DELETE FROM b WHERE id IN (1, 100, 101, 500, 1000)")  # missing
    pg.execute("INSERT INTO b VALUES (0, 0, 'below'), (1001, 1, 'above'), (5000, 2, NULL)")
    pg.execute("UPDATE b SET t = NULL WHERE id IN (9, 301)")  # a value to NULL
    pg.execute("UPDATE b SET t = 'set' WHERE id IN (5, 10, 200)")  # NULL to a value
    pg.execute("UPDATE b SET t = '' WHERE id = 15")  # NULL to '': not the same
    pg.execute("UPDATE b SET v = v + 1 WHERE id IN (11, 199, 201, 999)")
    pg.execute("UPDATE b SET v = v + 1, t = 'both' WHERE id = 110")
    left = Side(sql.Identifier("a"), ["id"], ["v", "t"])
    right = Side(sql.Identifier("b"), ["id"], ["v", "t"])

    result = same_by_every_engine(pg, left, right)
    missing = {("missing", (k,), ()) for k in (1, 100, 101, 500, 1000)}
    extra = {("extra", (k,), ()) for k in (0, 1001, 5000)}
    changed = {("changed", (k,), ("t",)) for k in (5, 9, 10, 15, 200, 301)}
    changed |= {("changed", (k,), ("v",)) for k in (11, 199, 201, 999)}
    changed |= {("changed", (110,), ("v", "t"))}
    assert found(result) == missing | extra | changed
    assert (result.missing, result.extra, result.changed) == (5, 3, 11)
    assert result.chunks == 11  # 1,000 keys of a, 100 a chunk, and one past the last key


def test_composite_and_text_keys(pg: Connection) -> None:
    for table in ("a", "b"):
        pg.execute(
            sql.SQL(
                'CREATE TABLE {} (region text, n integer, label text COLLATE "C",'
                " amount numeric, PRIMARY KEY (region, n))"
            ).format(sql.Identifier(table))
        )
    pg.execute(
        "INSERT INTO a SELECT r, n, 'x' || n, n * 1.5 FROM unnest(ARRAY['eu', 'us', 'ÿ']) AS r,"
        " generate_series(1, 300) AS n"
    )
    pg.execute("INSERT INTO b SELECT * FROM a")
    pg.execute("DELETE FROM b WHERE (region, n) IN (('eu', 1), ('eu', 100), ('us', 300))")
    pg.execute("INSERT INTO b VALUES ('', 1, 'first', 1), ('eu', 301, 'between', 2)")
    pg.execute("UPDATE b SET amount = 3.00 WHERE (region, n) = ('us', 2)")  # was 3.0
    pg.execute("UPDATE b SET amount = amount * 2 WHERE (region, n) IN (('us', 1), ('ÿ', 300))")
    pg.execute("UPDATE b SET label = NULL WHERE (region, n) = ('eu', 200)")
    columns = ["label", "amount"]
    left = Side(sql.Identifier("a"), ["region", "n"], columns)
    right = Side(sql.Identifier("b"), ["region", "n"], columns)
    result = same_by_every_engine(pg, left, right)
    assert (result.missing, result.extra, result.changed) == (3, 2, 4)
    assert {(d.kind, d.key) for d in result.examples} == {
        ("changed", ("us", 2)),
        ("missing", ("eu", 1)),
        ("missing", ("eu", 100)),
        ("missing", ("us", 300)),
        ("extra", ("", 1)),
        ("extra", ("eu", 301)),
        ("changed", ("us", 1)),
        ("changed", ("ÿ", 300)),
        ("changed", ("eu", 200)),
    }

    # a text key alone, compared through subquery sources
    text_left = Side(sql.SQL("(SELECT region || n AS k, label FROM a) AS s"), ["k"], ["label"])
    text_right = Side(sql.SQL("(SELECT region || n AS k, label FROM b) AS s"), ["k"], ["label"])
    pg.execute("CREATE UNIQUE INDEX ON a ((region || n))")
    pg.execute("CREATE UNIQUE INDEX ON b ((region || n))")
    result = same_by_every_engine(pg, text_left, text_right)
    assert (result.missing, result.extra, result.changed) == (3, 2, 1)
    assert ("changed", ("eu200",), ("label",)) in found(result)


def test_two_workers_report_in_key_order_and_resume(pg: Connection) -> None:
    for table in ("a", "b"):
        pg.execute(
            sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, v integer)").format(
                sql.Identifier(table)
            )
        )
    pg.execute("INSERT INTO a SELECT g, g FROM generate_series(1, 2000) AS g")
    pg.execute("INSERT INTO b SELECT * FROM a")
    pg.execute("UPDATE b SET v = 0 WHERE id IN (50, 450, 1250, 1950)")
    left = Side(sql.Identifier("a"), ["id"], ["v"])
    right = Side(sql.Identifier("b"), ["id"], ["v"])

    seen: list[ChunkProgress] = []

    def stop_after_five(progress: ChunkProgress) -> None:
        seen.append(progress)
        if progress.chunks == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare(pg, left, right, workers=2, on_chunk=stop_after_five)
    # in key order whatever order the workers finished in, and nothing counted past the stop
    assert [p.last_key for p in seen] == [(100,), (200,), (300,), (400,), (500,)]
    assert [p.rows_compared for p in seen] == [100, 200, 300, 400, 500]
    assert [p.changed for p in seen] == [1, 1, 1, 1, 2]
    assert pg.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    rest = compare(pg, left, right, workers=2, start_after=seen[-1].last_key)
    assert (rest.changed, rest.rows_compared) == (2, 1500)
    assert {d.key for d in rest.examples} == {(1250,), (1950,)}


def test_two_workers_under_concurrent_writes_find_no_false_difference(
    dsn: str, pg: Connection
) -> None:
    """Writers change a and b together in one transaction, whole runs of keys at a time, while
    two workers compare: each chunk's two sides are read in one snapshot, whichever worker
    reads them, so no chunk sees a writer's change on one side only."""
    for table in ("a", "b"):
        pg.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, v integer, t text)").format(
                sql.Identifier(table)
            )
        )
    pg.execute("INSERT INTO a SELECT g, g, md5(g::text) FROM generate_series(1, 3000) AS g")
    pg.execute("INSERT INTO b SELECT * FROM a")
    stop = threading.Event()
    commits = [0]
    errors: list[BaseException] = []
    statements = [
        "UPDATE {} SET v = v + 1, t = %(t)s WHERE id > %(k)s AND id <= %(k)s + 40",
        "DELETE FROM {} WHERE id = %(k)s",
        "INSERT INTO {} VALUES (%(k)s, 0, %(t)s) ON CONFLICT (id) DO UPDATE SET t = excluded.t",
    ]

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with db.connect(dsn, role="writer") as conn:
                # One snapshot for both statements: under READ COMMITTED the second could see
                # a row another writer committed in between (an insert the first missed) and
                # the tables would really differ. A conflict rolls back both: they stay equal.
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                while not stop.is_set():
                    try:
                        with conn.transaction():
                            statement = rng.choices(statements, weights=[6, 1, 1])[0]
                            params = {"k": rng.randrange(3_200), "t": f"w{rng.random()}"}
                            for table in ("a", "b"):
                                conn.execute(
                                    sql.SQL(statement).format(sql.Identifier(table)), params
                                )
                    except psycopg.errors.SerializationFailure:
                        continue
                    commits[0] += 1
        except psycopg.errors.DeadlockDetected:
            pass  # two writers' runs of keys crossed: that writer stops, the others go on
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    results: list[VerifyResult] = []
    try:
        time.sleep(0.2)
        before = commits[0]
        for _ in range(3):
            results.append(
                compare_same_db(
                    pg,
                    Side(sql.Identifier("a"), ["id"], ["v", "t"]),
                    Side(sql.Identifier("b"), ["id"], ["v", "t"]),
                    chunk_size=100,
                    leaf_size=10,
                    workers=2,
                )
            )
        assert commits[0] - before > 20, "the writers did not write during the comparison"
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    for result in results:
        assert (result.missing, result.extra, result.changed) == (0, 0, 0), result.examples[:5]
        assert result.rows_compared >= 2_500


PLAN = """version: 1
name: verified
table: public.items
columns:
  qty: {{type: bigint}}
settings:
  workers: {workers}
phases:
  - expand
  - dual_write
  - backfill
  - {{verify: {{chunk_size: 100}}}}
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_plan_workers_setting_finds_planted_differences(
    dsn: str, conn: Connection, tmp_path: Path, workers: int
) -> None:
    conn.execute("CREATE TABLE items (id integer PRIMARY KEY, qty integer)")
    conn.execute("INSERT INTO items SELECT g, g FROM generate_series(1, 1000) AS g")
    path = write_plan(tmp_path, PLAN.format(workers=workers))
    assert cli(dsn, "apply", path, "--until", "backfill").exit_code == 0
    with conn.transaction():
        conn.execute("SET LOCAL pgshift.backfill = 'on'")  # around the sync trigger
        conn.execute("UPDATE items SET _pgshift_qty = -1 WHERE id IN (1, 100, 101, 1000)")
    result = cli(dsn, "verify", path, "--json", "--chunk-size", "100")
    assert result.exit_code == 4, result.output
    report = json.loads(result.stdout)
    assert report["differences"] == {"missing": 0, "extra": 0, "changed": 4}
    assert sorted(e["key"] for e in report["examples"]) == [[1], [100], [101], [1000]]
    assert report["rows_compared"] == 1000 and report["chunks"] == 11


def test_plan_workers_setting_is_checked(dsn: str, tmp_path: Path) -> None:
    path = write_plan(tmp_path, PLAN.format(workers=0))
    result = cli(dsn, "plan", path)
    assert result.exit_code == 2
    assert "workers" in error_line(result)


def test_two_workers_resume_after_a_kill_without_counting_twice(
    dsn: str, conn: Connection, tmp_path: Path
) -> None:
    """The verify phase with 2 workers is killed after its 4th chunk: the checkpoint is a key
    below which everything was compared, so the rerun counts every row and difference once."""
    conn.execute("CREATE TABLE items (id integer PRIMARY KEY, qty integer)")
    conn.execute("INSERT INTO items SELECT g, g FROM generate_series(1, 1000) AS g")
    path = write_plan(tmp_path, PLAN.format(workers=2))
    assert cli(dsn, "apply", path, "--until", "backfill").exit_code == 0
    with conn.transaction():
        conn.execute("SET LOCAL pgshift.backfill = 'on'")
        conn.execute("UPDATE items SET _pgshift_qty = 0 WHERE id IN (50, 350, 351, 950)")
    crashed = run_process(
        dsn, "apply", path, "--until", "verify", env={"PGSHIFT_FAILPOINT": "verify:chunk:4"}
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    checkpoint = conn.execute(
        "SELECT checkpoint FROM pgshift.phases WHERE kind = 'verify'"
    ).fetchone()[0]  # type: ignore[index]
    assert checkpoint["last_key"] == [400] and checkpoint["rows_compared"] == 400
    assert checkpoint["changed"] == 3

    result = cli(dsn, "apply", path, "--until", "verify")
    assert result.exit_code == 4, result.output  # the differences fail the phase
    assert "verify found 4 difference(s) in 1,000 rows: 0 missing, 0 extra, 4 changed" in (
        error_line(result)
    )
