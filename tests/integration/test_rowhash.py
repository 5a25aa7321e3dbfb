"""The row-hash comparison engine against a real PostgreSQL: planted differences are found exactly
(no more, no fewer), equal data gives none, and concurrent writers make no false differences."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgshift import db
from pgshift.errors import PgshiftError
from pgshift.verify.rowhash import (
    ChunkProgress,
    Side,
    VerifyResult,
    compare_same_db,
    compare_two_connections,
)

Connection = psycopg.Connection[Any]


@pytest.fixture
def pg(dsn: str) -> Iterator[Connection]:
    with db.connect(dsn, role="test") as connection:
        yield connection


def side(table: str, columns: Sequence[Any], key: Sequence[str] = ("id",)) -> Side:
    return Side(sql.Identifier(table), key, columns)


def counts(result: VerifyResult) -> tuple[int, int, int]:
    return result.missing, result.extra, result.changed


def kinds(result: VerifyResult) -> set[tuple[str, tuple[Any, ...]]]:
    return {(d.kind, d.key) for d in result.examples}


def make_pair(conn: Connection, columns: str, fill: str, rows: int) -> None:
    """Tables a and b with the same `rows` rows from `fill` (an expression list over g)."""
    for table in ("a", "b"):
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, {})").format(
                sql.Identifier(table), sql.SQL(columns)
            )
        )
    conn.execute(
        sql.SQL("INSERT INTO a SELECT g, {} FROM generate_series(1, %s) AS g").format(
            sql.SQL(fill)
        ),
        [rows],
    )
    conn.execute("INSERT INTO b SELECT * FROM a")


WIDE_COLUMNS = (
    "name text, amount numeric(12,2), ratio float8, created timestamptz, active boolean, "
    "doc jsonb, ref uuid, raw bytea, span interval, day date"
)
WIDE_FILL = (
    "'name-' || g || CASE WHEN g %% 3 = 0 THEN ' été ✓' ELSE '' END, (g %% 1000) / 100.0, "
    "g / 3.0, timestamptz '2024-01-01 00:00:00+00' + g * interval '1.000001 second', "
    "CASE WHEN g %% 5 = 0 THEN NULL ELSE g %% 2 = 0 END, "
    "jsonb_build_object('n', g, 'tags', jsonb_build_array('x', NULL)), md5(g::text)::uuid, "
    "decode(md5(g::text), 'hex'), g * interval '1 minute 0.5 second', date '2020-01-01' + g"
)
WIDE_NAMES = ["name", "amount", "ratio", "created", "active", "doc", "ref", "raw", "span", "day"]


@pytest.mark.parametrize("parallel", [True, False])
def test_identical_tables_have_no_differences(pg: Connection, parallel: bool) -> None:
    make_pair(pg, WIDE_COLUMNS, WIDE_FILL, 5_000)
    result = compare_same_db(
        pg, side("a", WIDE_NAMES), side("b", WIDE_NAMES), chunk_size=500, parallel=parallel
    )
    assert counts(result) == (0, 0, 0)
    assert result.examples == []
    assert result.rows_compared == 5_000
    assert result.chunks == 11  # 10 full chunks, then the open-ended tail (empty on the left)


@pytest.mark.parametrize("parallel", [True, False])
def test_missing_extra_and_changed_are_found_and_named(pg: Connection, parallel: bool) -> None:
    make_pair(pg, WIDE_COLUMNS, WIDE_FILL, 5_000)
    pg.execute("DELETE FROM b WHERE id IN (1, 2500, 5000)")  # first, middle and last key
    pg.execute("INSERT INTO b (id, name) VALUES (-7, 'below'), (2500, 'name-2500'), (9999, 'x')")
    pg.execute("UPDATE b SET amount = amount + 1 WHERE id = 42")
    pg.execute("UPDATE b SET doc = doc || '{\"n\": 0}', ratio = 0 WHERE id = 4321")
    result = compare_same_db(
        pg, side("a", WIDE_NAMES), side("b", WIDE_NAMES), chunk_size=700, parallel=parallel
    )
    assert counts(result) == (2, 2, 3)
    assert kinds(result) == {
        ("missing", (1,)),
        ("missing", (5000,)),
        ("extra", (-7,)),
        ("extra", (9999,)),
        ("changed", (2500,)),
        ("changed", (42,)),
        ("changed", (4321,)),
    }
    by_key = {d.key: d for d in result.examples}
    assert by_key[(42,)].columns == ("amount",)
    assert by_key[(42,)].left == {"amount": "0.42"}
    assert by_key[(42,)].right == {"amount": "1.42"}
    assert by_key[(4321,)].columns == ("ratio", "doc")
    assert by_key[(1,)].right is None
    assert by_key[(1,)].left is not None and by_key[(1,)].left["name"] == "name-1"
    assert by_key[(-7,)].left is None
    assert by_key[(-7,)].right == {n: ("below" if n == "name" else None) for n in WIDE_NAMES}
    # active was NULL already (2500 % 5 == 0)
    assert set(by_key[(2500,)].columns) == set(WIDE_NAMES) - {"name", "active"}


# (column type, left value, right value): each pair must be reported as one changed column.
DIFFERENT_VALUES = [
    ("text", "NULL", "''"),
    ("text", "NULL", "'NULL'"),
    ("text", "''", "'NULL'"),
    ("text", "''", "'\"\"'"),
    ("text", "'a'", "'a '"),
    ("text", "'naïve ✓'", "'naive ✓'"),
    ("text", "'日本'", "'日本語'"),
    ("text", "E'a\\\\b'", "'a\"b'"),
    ("integer", "NULL", "0"),
    ("float8", "'-0'", "'0'"),
    ("float8", "0.1::float8 + 0.2::float8", "0.3"),
    ("numeric", "1.10", "1.1"),
    ("numeric", "NULL", "'NaN'"),
    ("timestamptz", "'2024-05-01 12:00:00.000001+00'", "'2024-05-01 12:00:00+00'"),
    ("timestamp", "'2024-05-01 12:00:00.999999'", "'2024-05-01 12:00:01'"),
    ("jsonb", "'{\"a\": 1}'", "'{\"a\": 1.0}'"),
    ("jsonb", "'{\"a\": null}'", "'{}'"),
    ("jsonb", "'null'", "NULL"),
    ("interval", "'1 day'", "'24 hours'"),
    ("bytea", "'\\x00'", "''"),
    ("boolean", "NULL", "false"),
    ("text[]", "ARRAY[NULL]::text[]", "ARRAY['NULL']"),
    ("text[]", "'{}'", "NULL"),
]


@pytest.mark.parametrize(("coltype", "left_value", "right_value"), DIFFERENT_VALUES)
def test_values_compare_by_their_text(
    pg: Connection, coltype: str, left_value: str, right_value: str
) -> None:
    for table in ("a", "b"):
        pg.execute(
            sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v {}, w text)").format(
                sql.Identifier(table), sql.SQL(coltype)
            )
        )
        pg.execute(
            sql.SQL("INSERT INTO {} SELECT g, NULL, 'same' FROM generate_series(1, 50) g").format(
                sql.Identifier(table)
            )
        )
    pg.execute(sql.SQL("UPDATE a SET v = {} WHERE id = 20").format(sql.SQL(left_value)))
    pg.execute(sql.SQL("UPDATE b SET v = {} WHERE id = 20").format(sql.SQL(right_value)))
    result = compare_same_db(pg, side("a", ["v", "w"]), side("b", ["v", "w"]), chunk_size=16)
    assert counts(result) == (0, 0, 1)
    (difference,) = result.examples
    assert difference.key == (20,)
    assert difference.columns == ("v",)


# Equal under pinned settings, though written differently (or by different session settings).
EQUAL_VALUES = [
    (
        "jsonb",
        '\'{"b": [1, 2], "a": {"y": 1, "x": null}}\'',
        '\'{"a":{"x":null,"y":1},"b":[1,2]}\'',
    ),
    ("numeric", "1.10", "1.10::numeric(5,2)"),
    ("float8", "0.1::float8 * 3", "0.30000000000000004"),
    ("timestamptz", "'2024-05-01 14:00:00.5+02'", "'2024-05-01 12:00:00.5+00'"),
    ("text", "'ünïcödé ✓ 日本'", "'ünïcödé ✓ 日本'"),
    ("text", "NULL", "NULL"),
    ("uuid", "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"),
]


@pytest.mark.parametrize(("coltype", "left_value", "right_value"), EQUAL_VALUES)
def test_equal_values_are_equal(
    pg: Connection, coltype: str, left_value: str, right_value: str
) -> None:
    for table, value in (("a", left_value), ("b", right_value)):
        pg.execute(
            sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v {})").format(
                sql.Identifier(table), sql.SQL(coltype)
            )
        )
        pg.execute(
            sql.SQL("INSERT INTO {} SELECT g, {} FROM generate_series(1, 30) g").format(
                sql.Identifier(table), sql.SQL(value)
            )
        )
    result = compare_same_db(pg, side("a", ["v"]), side("b", ["v"]), chunk_size=7)
    assert counts(result) == (0, 0, 0)


def test_column_boundaries_are_part_of_the_hash(pg: Connection) -> None:
    """('a,b', 'c') and ('a', 'b,c') hold the same characters; NULLs shift between columns."""
    for table in ("a", "b"):
        pg.execute(
            sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, x text, y text)").format(
                sql.Identifier(table)
            )
        )
    pg.execute("INSERT INTO a VALUES (1, 'a,b', 'c'), (2, NULL, ''), (3, 'a', NULL), (4, '(', ')')")
    pg.execute("INSERT INTO b VALUES (1, 'a', 'b,c'), (2, '', NULL), (3, NULL, 'a'), (4, '()', '')")
    result = compare_same_db(pg, side("a", ["x", "y"]), side("b", ["x", "y"]))
    assert counts(result) == (0, 0, 4)
    assert {d.key: d.columns for d in result.examples} == {
        (1,): ("x", "y"),
        (2,): ("x", "y"),
        (3,): ("x", "y"),
        (4,): ("x", "y"),
    }


def test_values_ignore_the_callers_session_settings(dsn: str, pg: Connection) -> None:
    """Hashes use the pinned settings even on a connection set up otherwise."""
    make_pair(pg, WIDE_COLUMNS, WIDE_FILL, 300)
    with psycopg.connect(
        dsn,
        autocommit=True,
        options="-c TimeZone=Asia/Kolkata -c DateStyle=German -c extra_float_digits=-2 "
        "-c IntervalStyle=postgres_verbose -c bytea_output=escape",
    ) as odd:
        odd_result = compare_same_db(odd, side("a", WIDE_NAMES), side("b", WIDE_NAMES))
        pg.execute("UPDATE b SET ratio = ratio + 1e-15, created = created + '1us' WHERE id = 7")
        changed = compare_same_db(odd, side("a", WIDE_NAMES), side("b", WIDE_NAMES))
    assert counts(odd_result) == (0, 0, 0)
    assert counts(changed) == (0, 0, 1)
    assert changed.examples[0].columns == ("ratio", "created")
    assert changed.examples[0].left == {
        "ratio": "2.3333333333333335",
        "created": "2024-01-01 00:00:07.000007+00",
    }


@pytest.mark.parametrize(
    ("keytype", "make_key"),
    [
        ("integer", "g"),
        ("bigint", "g::bigint * 1000000007"),
        ("text", "'k' || lpad(g::text, 4, '0') || CASE WHEN g % 2 = 0 THEN 'é' ELSE '' END"),
        ("uuid", "md5(g::text)::uuid"),
    ],
)
def test_key_types(pg: Connection, keytype: str, make_key: str) -> None:
    for table in ("a", "b"):
        pg.execute(
            sql.SQL("CREATE TABLE {} (k {} PRIMARY KEY, v integer)").format(
                sql.Identifier(table), sql.SQL(keytype)
            )
        )
    pg.execute(
        sql.SQL("INSERT INTO a SELECT {}, g FROM generate_series(1, 2000) g").format(
            sql.SQL(make_key)
        )
    )
    pg.execute("INSERT INTO b SELECT * FROM a")
    gone, changed = pg.execute("SELECT k FROM a ORDER BY k OFFSET 100 LIMIT 2").fetchall()
    pg.execute("DELETE FROM b WHERE k = %s", gone)
    pg.execute("UPDATE b SET v = -v WHERE k = %s", changed)
    extra = pg.execute(
        sql.SQL("SELECT {} FROM generate_series(5000, 5000) g").format(sql.SQL(make_key))
    ).fetchone()
    assert extra is not None
    pg.execute("INSERT INTO b VALUES (%s, 0)", extra)
    result = compare_same_db(pg, side("a", ["v"], ["k"]), side("b", ["v"], ["k"]), chunk_size=300)
    assert counts(result) == (1, 1, 1)
    assert kinds(result) == {
        ("missing", tuple(gone)),
        ("changed", tuple(changed)),
        ("extra", tuple(extra)),
    }
    assert result.to_json()["examples"][0]["key"] == [
        str(gone[0]) if keytype == "uuid" else gone[0]
    ]


@pytest.mark.parametrize("parallel", [True, False])
def test_composite_keys(pg: Connection, parallel: bool) -> None:
    for table in ("a", "b"):
        pg.execute(
            sql.SQL(
                "CREATE TABLE {} (tenant text, n integer, ref uuid, v text, "
                "PRIMARY KEY (tenant, n, ref))"
            ).format(sql.Identifier(table))
        )
    pg.execute(
        "INSERT INTO a SELECT 't' || (g % 7), g / 7, md5(g::text)::uuid, 'v' || g "
        "FROM generate_series(1, 3000) g"
    )
    pg.execute("INSERT INTO b SELECT * FROM a")
    rows = pg.execute("SELECT tenant, n, ref FROM a ORDER BY 1, 2, 3").fetchall()
    missing, changed = rows[10], rows[1500]
    pg.execute("DELETE FROM b WHERE (tenant, n, ref) = (%s, %s, %s)", missing)
    pg.execute("UPDATE b SET v = NULL WHERE (tenant, n, ref) = (%s, %s, %s)", changed)
    # Same tenant and n as an existing row, another ref: inside a chunk, between two left keys.
    extra = (rows[700][0], rows[700][1], uuid.UUID(int=0))
    pg.execute("INSERT INTO b VALUES (%s, %s, %s, 'x')", extra)
    key = ["tenant", "n", "ref"]
    result = compare_same_db(
        pg, side("a", ["v"], key), side("b", ["v"], key), chunk_size=128, parallel=parallel
    )
    assert counts(result) == (1, 1, 1)
    assert kinds(result) == {
        ("missing", tuple(missing)),
        ("changed", tuple(changed)),
        ("extra", extra),
    }
    progress: list[ChunkProgress] = []
    resumed = compare_same_db(
        pg,
        side("a", ["v"], key),
        side("b", ["v"], key),
        chunk_size=1000,
        start_after=tuple(rows[1000]),
        on_chunk=progress.append,
    )
    assert counts(resumed) == (0, 0, 1)
    assert progress[0].last_key == tuple(rows[2000])


def test_large_key_gaps(pg: Connection) -> None:
    for table in ("a", "b"):
        pg.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, v integer)").format(
                sql.Identifier(table)
            )
        )
    pg.execute(
        "INSERT INTO a SELECT g, g % 1000 FROM generate_series(1, 1000) g "
        "UNION ALL SELECT g, g % 1000 FROM generate_series(1000000000000, 1000000001000) g"
    )
    pg.execute("INSERT INTO b SELECT * FROM a")
    pg.execute("DELETE FROM b WHERE id = 1000000000500")
    pg.execute("INSERT INTO b VALUES (500000000000, 0), (9000000000000000000, 0), (-5, 0)")
    # Many rows the left side lacks, all inside one left chunk: split by the right side's keys.
    pg.execute("INSERT INTO b SELECT g, 0 FROM generate_series(700000000000, 700000004999) g")
    progress: list[ChunkProgress] = []
    result = compare_same_db(
        pg,
        side("a", ["v"]),
        side("b", ["v"]),
        chunk_size=400,
        on_chunk=progress.append,
        max_examples=10_000,
    )
    assert counts(result) == (1, 5003, 0)
    assert kinds(result) == {
        ("missing", (1000000000500,)),
        ("extra", (500000000000,)),
        ("extra", (9000000000000000000,)),
        ("extra", (-5,)),
        *(("extra", (k,)) for k in range(700000000000, 700000005000)),
    }
    assert len(result.examples) == 5004
    assert result.chunks == 6  # 2001 rows / 400 per chunk: no empty chunks across the gaps
    assert [p.chunks for p in progress] == [1, 2, 3, 4, 5, 6]
    assert [p.done for p in progress] == [False] * 5 + [True]


def test_progress_and_resume_after_a_stop(pg: Connection) -> None:
    make_pair(pg, "v integer, t text", "g, 'x' || g", 10_000)
    pg.execute("UPDATE b SET t = 'changed' WHERE id IN (10, 3010, 6010, 9010)")
    pg.execute("DELETE FROM b WHERE id IN (5000, 10000)")
    left, right = side("a", ["v", "t"]), side("b", ["v", "t"])
    whole = compare_same_db(pg, left, right, chunk_size=1000)
    assert counts(whole) == (2, 0, 4)

    seen: list[ChunkProgress] = []

    def stop_after_four(progress: ChunkProgress) -> None:
        seen.append(progress)
        if progress.chunks == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare_same_db(pg, left, right, chunk_size=1000, on_chunk=stop_after_four)
    assert [p.rows_compared for p in seen] == [1000, 2000, 3000, 4000]
    assert [p.last_key for p in seen] == [(1000,), (2000,), (3000,), (4000,)]
    assert (seen[-1].missing, seen[-1].extra, seen[-1].changed) == (0, 0, 2)
    rest = compare_same_db(pg, left, right, chunk_size=1000, start_after=seen[-1].last_key)
    assert counts(rest) == (2, 0, 2)
    assert rest.rows_compared == 6000
    assert pg.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_subquery_sources_and_expression_columns(pg: Connection) -> None:
    """The verify phase's shape: the live rows through `up` expressions against the new shape."""
    pg.execute("CREATE TABLE live (id integer PRIMARY KEY, balance integer, email text)")
    pg.execute('CREATE TABLE "New Shape" ("ID" bigint PRIMARY KEY, "Balance" bigint, mail text)')
    pg.execute(
        "INSERT INTO live SELECT g, g * 10, 'User' || g || '@Example.com' "
        "FROM generate_series(1, 3000) g"
    )
    pg.execute(
        'INSERT INTO "New Shape" SELECT id, balance, lower(email) FROM live WHERE id % 1000 <> 0'
    )
    pg.execute('UPDATE "New Shape" SET "Balance" = 0 WHERE "ID" = 77')
    left = Side(
        sql.SQL("(SELECT id, balance::bigint AS balance, email FROM live WHERE id % 2 = 0) s"),
        ["id"],
        ["balance", ("email", sql.SQL("lower(email)"))],
    )
    right = Side(
        sql.SQL('(SELECT * FROM "New Shape" WHERE "ID" % 2 = 0) n'),
        ["ID"],
        [("balance", sql.Identifier("Balance")), ("email", sql.Identifier("mail"))],
    )
    result = compare_same_db(pg, left, right, chunk_size=250)
    assert counts(result) == (3, 0, 0)
    assert kinds(result) == {("missing", (1000,)), ("missing", (2000,)), ("missing", (3000,))}
    odd_left = Side(sql.Identifier("live"), ["id"], [("balance", sql.SQL("balance::bigint"))])
    odd_right = Side(sql.Identifier("New Shape"), ["ID"], [("balance", sql.Identifier("Balance"))])
    result = compare_same_db(pg, odd_left, odd_right, chunk_size=250)
    assert counts(result) == (3, 0, 1)
    assert ("changed", (77,)) in kinds(result)


def test_duplicate_keys_on_the_right_are_extra(pg: Connection) -> None:
    pg.execute("CREATE TABLE a (id integer PRIMARY KEY, v text)")
    pg.execute("CREATE TABLE b (id integer, v text)")  # no key: a copy gone wrong
    pg.execute("CREATE INDEX ON b (id)")
    pg.execute("INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, 3000) g")
    pg.execute("INSERT INTO b SELECT * FROM a")
    pg.execute("INSERT INTO b VALUES (10, 'v10'), (2000, 'other')")
    pg.execute("INSERT INTO b SELECT 2500, 'v2500' FROM generate_series(1, 1500)")
    result = compare_same_db(pg, side("a", ["v"]), side("b", ["v"]), chunk_size=1000)
    assert counts(result) == (0, 1 + 1 + 1500, 0)
    assert {d.key for d in result.examples} == {(10,), (2000,), (2500,)}


def test_invalid_arguments(pg: Connection) -> None:
    pg.execute("CREATE TABLE a (id integer PRIMARY KEY, v text, w text)")
    with pytest.raises(ValueError, match="compared columns differ"):
        compare_same_db(pg, side("a", ["v", "w"]), side("a", ["w", "v"]))
    with pytest.raises(ValueError, match="key"):
        compare_same_db(pg, side("a", ["v"]), side("a", ["v"], ["id", "v"]))
    with pytest.raises(ValueError, match="at least one key"):
        side("a", ["v"], [])
    with pytest.raises(ValueError, match="inside a transaction"), pg.transaction():
        compare_same_db(pg, side("a", ["v"]), side("a", ["v"]))


def test_a_null_key_is_refused_not_skipped(pg: Connection) -> None:
    pg.execute("CREATE TABLE a (id integer, v text)")
    pg.execute(
        "INSERT INTO a SELECT CASE WHEN g > 90 THEN NULL ELSE g END, 'v' FROM generate_series(1, 100) g"
    )
    with pytest.raises(PgshiftError, match="NOT NULL"):
        compare_same_db(pg, side("a", ["v"]), side("a", ["v"]), chunk_size=30)


def test_to_json_is_the_spec_shape(pg: Connection) -> None:
    make_pair(pg, "t timestamptz, u uuid", "timestamptz 'epoch' + g * interval '1s', NULL", 20)
    pg.execute("UPDATE b SET u = '00000000-0000-0000-0000-000000000001' WHERE id = 3")
    pg.execute("DELETE FROM b WHERE id = 4")
    result = compare_same_db(pg, side("a", ["t", "u"]), side("b", ["t", "u"]), max_examples=1)
    report = result.to_json()
    assert set(report) == {"rows_compared", "chunks", "differences", "examples", "seconds"}
    assert report["rows_compared"] == 20
    assert report["differences"] == {"missing": 1, "extra": 0, "changed": 1}
    assert report["examples"] == [
        {
            "kind": "changed",
            "key": [3],
            "columns": ["u"],
            "left": {"u": None},
            "right": {"u": "00000000-0000-0000-0000-000000000001"},
        }
    ]
    assert isinstance(report["seconds"], float)


def test_concurrent_writers_make_no_false_differences(dsn: str, pg: Connection) -> None:
    """Writers change a and b together in one transaction (updates, inserts, deletes, spread
    over the key space) while the comparison runs: each chunk sees both sides at one instant."""
    make_pair(pg, "v integer, t text", "g, md5(g::text)", 40_000)
    stop = threading.Event()
    commits = [0]
    errors: list[BaseException] = []

    update = "UPDATE {} SET v = v + 1, t = %s WHERE id = %s"
    upsert = "INSERT INTO {} VALUES (%s, %s, 'new') ON CONFLICT (id) DO UPDATE SET v = excluded.v"
    delete = "DELETE FROM {} WHERE id = %s"

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with db.connect(dsn, role="writer") as conn:
                while not stop.is_set():
                    with conn.transaction():
                        for _ in range(5):
                            # Each writer its own keys: no deadlocks between writers.
                            k = rng.randrange(seed + 1, 45_000, 3)
                            action = rng.random()
                            if action < 0.6:
                                statement, params = update, [f"w{rng.random()}", k]
                            elif action < 0.8:
                                statement, params = upsert, [k, seed]
                            else:
                                statement, params = delete, [k]
                            for table in ("a", "b"):
                                conn.execute(
                                    sql.SQL(statement).format(sql.Identifier(table)), params
                                )
                    commits[0] += 1
        except BaseException as error:  # reported by the test below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.2)
        results = []
        for parallel in (True, False):
            before = commits[0]
            results.append(
                compare_same_db(
                    pg,
                    side("a", ["v", "t"]),
                    side("b", ["v", "t"]),
                    chunk_size=500,
                    leaf_size=100,
                    parallel=parallel,
                )
            )
            assert commits[0] - before > 20, "the writers did not write during the comparison"
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    for result in results:
        assert counts(result) == (0, 0, 0), result.examples[:5]


@pytest.fixture
def other_db(server_dsn: str) -> Iterator[str]:
    name = f"pgshift_test_other_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _fill_accounts(conn: Connection, rows: int) -> None:
    conn.execute(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, balance numeric, note text, at timestamptz)"
    )
    conn.execute(
        "INSERT INTO accounts SELECT g, g * 1.5, CASE WHEN g %% 4 = 0 THEN NULL ELSE 'ü' || g END, "
        "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' "
        "FROM generate_series(1, %s) g",
        [rows],
    )


ACCOUNT_COLUMNS = ["balance", "note", "at"]


def test_two_connections_across_databases(pg: Connection, other_db: str) -> None:
    with db.connect(other_db, role="test") as other:
        _fill_accounts(pg, 4000)
        _fill_accounts(other, 4000)
        other.execute("DELETE FROM accounts WHERE id = 1234")
        other.execute("INSERT INTO accounts (id) VALUES (4001), (0)")
        other.execute("UPDATE accounts SET note = '' WHERE id = 8")  # NULL on the left
        other.execute("UPDATE accounts SET balance = 3.00 WHERE id = 2")  # 3.0 on the left
        accounts = side("accounts", ACCOUNT_COLUMNS)
        progress: list[ChunkProgress] = []
        started = time.monotonic()
        result = compare_two_connections(
            pg,
            other,
            accounts,
            accounts,
            chunk_size=700,
            recheck_delay=0.3,
            on_chunk=progress.append,
        )
        assert time.monotonic() - started >= 0.3
        assert counts(result) == (1, 2, 2)
        assert kinds(result) == {
            ("missing", (1234,)),
            ("extra", (4001,)),
            ("extra", (0,)),
            ("changed", (8,)),
            ("changed", (2,)),
        }
        by_key = {d.key: d for d in result.examples}
        assert by_key[(8,)].left == {"note": None}
        assert by_key[(8,)].right == {"note": ""}
        assert by_key[(2,)].left == {"balance": "3.0"}
        assert progress[-1].done
        assert progress[-1].last_key == (3500,)  # the open-ended last chunk starts there


def test_two_connections_report_only_what_still_differs(pg: Connection, other_db: str) -> None:
    """A difference fixed before the recheck (a replica catching up, a write in flight) is not
    reported; one that stays is."""
    with db.connect(other_db, role="test") as other:
        _fill_accounts(pg, 3000)
        _fill_accounts(other, 3000)
        other.execute("UPDATE accounts SET note = 'late' WHERE id = 10")
        other.execute("DELETE FROM accounts WHERE id = 20")
        other.execute("UPDATE accounts SET note = 'stays' WHERE id = 2990")
        fixed: list[int] = []

        def fix_after_first_chunk(progress: ChunkProgress) -> None:
            if progress.chunks == 1:
                assert progress.last_key is None  # its differences wait for their recheck
                with db.connect(other_db, role="fixer") as fixer:
                    fixer.execute("UPDATE accounts SET note = 'ü10' WHERE id = 10")
                    fixer.execute(
                        "INSERT INTO accounts SELECT 20, 20 * 1.5, NULL, "
                        "timestamptz '2024-01-01 00:00:20+00'"
                    )
                fixed.append(progress.chunks)

        accounts = side("accounts", ACCOUNT_COLUMNS)
        result = compare_two_connections(
            pg,
            other,
            accounts,
            accounts,
            chunk_size=1000,
            recheck_delay=1.0,
            on_chunk=fix_after_first_chunk,
        )
        assert fixed == [1]
        assert counts(result) == (0, 0, 1)
        assert kinds(result) == {("changed", (2990,))}
        with pytest.raises(ValueError, match="two connections"):
            compare_two_connections(pg, pg, accounts, accounts)


def test_a_million_rows_with_ten_planted_differences(pg: Connection) -> None:
    """1,000,000 rows per side, 10 differences: every one is reported with its key. Builds its
    tables with generate_series (unlogged); 10 to 15 s on a 2-core machine, most of it the build."""
    for table in ("a", "b"):
        pg.execute(
            sql.SQL(
                "CREATE UNLOGGED TABLE {} (id bigint PRIMARY KEY, v integer, t text, x float8)"
            ).format(sql.Identifier(table))
        )
    pg.execute(
        "INSERT INTO a SELECT g, g % 1000, md5(g::text), g / 7.0 FROM generate_series(1, 1000000) g"
    )
    pg.execute("INSERT INTO b SELECT * FROM a")
    pg.execute("DELETE FROM b WHERE id IN (1, 500000, 1000000)")
    pg.execute("INSERT INTO b (id) VALUES (0), (1000001), (123456789012)")
    pg.execute("UPDATE b SET v = v + 1 WHERE id = 17")
    pg.execute("UPDATE b SET t = upper(t) WHERE id = 250000")
    pg.execute("UPDATE b SET x = -x WHERE id = 777777")
    pg.execute("UPDATE b SET v = NULL WHERE id = 999999")
    pg.execute("VACUUM ANALYZE a")
    pg.execute("VACUUM ANALYZE b")
    columns = ["v", "t", "x"]
    result = compare_same_db(pg, side("a", columns), side("b", columns))
    assert result.rows_compared == 1_000_002  # 100 full chunks, then two extras above the end
    assert counts(result) == (3, 3, 4)
    assert kinds(result) == {
        ("missing", (1,)),
        ("missing", (500000,)),
        ("missing", (1000000,)),
        ("extra", (0,)),
        ("extra", (1000001,)),
        ("extra", (123456789012,)),
        ("changed", (17,)),
        ("changed", (250000,)),
        ("changed", (777777,)),
        ("changed", (999999,)),
    }
    assert {d.key: d.columns for d in result.examples if d.kind == "changed"} == {
        (17,): ("v",),
        (250000,): ("t",),
        (777777,): ("x",),
        (999999,): ("v",),
    }
