"""The row hash of a same-database verify against a real PostgreSQL: values hashed as they are
(text, uuid, integers, bool, date, bytea) find exactly what rendering every value as text finds,
rows swapping their values are found, and a column of another type on each side is compared by
its text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgshift import db
from pgshift.verify.rowhash import Side, VerifyResult, compare_same_db

Connection = psycopg.Connection[Any]


@pytest.fixture
def pg(dsn: str) -> Iterator[Connection]:
    with db.connect(dsn, role="test") as connection:
        yield connection


def found(result: VerifyResult) -> set[tuple[str, tuple[Any, ...], tuple[str, ...]]]:
    return {(d.kind, d.key, d.columns) for d in result.examples}


def both_hashes(conn: Connection, left: Side, right: Side, **options: Any) -> VerifyResult:
    """Compare with values hashed as they are and with every value rendered: the same found."""
    binary = compare_same_db(conn, left, right, binary_values=True, **options)
    text = compare_same_db(conn, left, right, binary_values=False, **options)
    assert (binary.missing, binary.extra, binary.changed) == (
        text.missing,
        text.extra,
        text.changed,
    )
    assert found(binary) == found(text)
    return binary


def pair(conn: Connection, left_columns: str, right_columns: str | None = None) -> None:
    conn.execute(
        sql.SQL("CREATE TABLE a (id integer PRIMARY KEY, {})").format(sql.SQL(left_columns))
    )
    conn.execute(
        sql.SQL("CREATE TABLE b (id integer PRIMARY KEY, {})").format(
            sql.SQL(right_columns or left_columns)
        )
    )


MIXED = (
    "t text, v varchar(20), u uuid, n integer, s smallint, f boolean, d date, raw bytea, x numeric"
)
NAMES = ["t", "v", "u", "n", "s", "f", "d", "raw", "x"]


def test_values_hashed_as_they_are_find_what_text_finds(pg: Connection) -> None:
    pair(pg, MIXED)
    pg.execute(
        "INSERT INTO a SELECT g, 't' || g, 'v' || g, md5(g::text)::uuid, g, (g % 100)::smallint,"
        " g % 2 = 0, date '2020-01-01' + g, decode(md5(g::text), 'hex'), g / 4.0"
        " FROM generate_series(1, 3000) AS g"
    )
    pg.execute("INSERT INTO b SELECT * FROM a")
    changes = {
        "t": "UPDATE b SET t = upper(t) WHERE id = 10",
        "v": "UPDATE b SET v = NULL WHERE id = 20",
        "u": "UPDATE b SET u = md5('x')::uuid WHERE id = 30",
        "n": "UPDATE b SET n = -n WHERE id = 40",
        "s": "UPDATE b SET s = NULL WHERE id = 50",
        "f": "UPDATE b SET f = NOT f WHERE id = 60",
        "d": "UPDATE b SET d = d + 1 WHERE id = 70",
        "raw": "UPDATE b SET raw = ''::bytea WHERE id = 80",
        "x": "UPDATE b SET x = x::numeric(10, 3) WHERE id = 90",  # 22.5 -> 22.500
    }
    for statement in changes.values():
        pg.execute(statement)
    pg.execute("UPDATE b SET t = '' WHERE id = 100 AND t IS NOT NULL")
    pg.execute("UPDATE a SET t = NULL WHERE id = 100")  # NULL against ''
    pg.execute("DELETE FROM b WHERE id = 2000")
    pg.execute("INSERT INTO b (id) VALUES (3001)")
    result = both_hashes(
        pg,
        Side(sql.Identifier("a"), ["id"], NAMES),
        Side(sql.Identifier("b"), ["id"], NAMES),
        chunk_size=500,
        leaf_size=50,
        max_examples=100,
    )
    expected = {
        ("changed", (key,), (column,))
        for key, column in zip(range(10, 100, 10), changes, strict=True)
    }
    expected |= {("changed", (100,), ("t",)), ("missing", (2000,), ()), ("extra", (3001,), ())}
    assert found(result) == expected


@pytest.mark.parametrize("column", ["t text", "u uuid", "n integer", "x numeric"])
def test_rows_swapping_values_are_found(pg: Connection, column: str) -> None:
    """Two rows in one bucket swap a value, or all their values: the multiset of values is the
    same, the rows are not."""
    pair(pg, f"{column}, w text")
    name = column.split()[0]
    pg.execute(
        "INSERT INTO a SELECT g, (ARRAY[{v1}, {v2}])[1 + g % 2], 'w' || g FROM generate_series(1, 40) AS g".format(
            v1={"t": "'p'", "u": "md5('p')::uuid", "n": "1", "x": "1.5"}[name],
            v2={"t": "'q'", "u": "md5('q')::uuid", "n": "2", "x": "2.5"}[name],
        )
    )
    pg.execute("INSERT INTO b SELECT * FROM a")
    swap = sql.SQL("UPDATE b SET {c} = a.{c} FROM a WHERE b.id = %s AND a.id = %s").format(
        c=sql.Identifier(name)
    )
    pg.execute(swap, [4, 5])
    pg.execute(swap, [5, 4])
    pg.execute(f"UPDATE b SET ({name}, w) = (SELECT {name}, w FROM a WHERE id = 21) WHERE id = 22")
    pg.execute(f"UPDATE b SET ({name}, w) = (SELECT {name}, w FROM a WHERE id = 22) WHERE id = 21")
    pg.execute(f"UPDATE b SET ({name}, w) = (SELECT {name}, w FROM a WHERE id = 22) WHERE id = 21")
    left = Side(sql.Identifier("a"), ["id"], [name, "w"])
    right = Side(sql.Identifier("b"), ["id"], [name, "w"])
    result = both_hashes(pg, left, right, chunk_size=40, leaf_size=40)
    assert {(d.key, d.columns) for d in result.examples} == {
        ((4,), (name,)),
        ((5,), (name,)),
        ((21,), (name, "w")),
        ((22,), (name, "w")),
    }


def test_columns_of_other_types_compare_by_their_text(pg: Connection) -> None:
    """integer against bigint and text against varchar: equal text, no difference; the values
    of such a column are rendered on both sides, not hashed as they are."""
    pair(pg, "n integer, t text, f boolean", "n bigint, t varchar(10), f boolean")
    pg.execute(
        "INSERT INTO a SELECT g, g * 7, 'x' || g, g % 3 = 0 FROM generate_series(1, 500) AS g"
    )
    pg.execute("INSERT INTO b SELECT * FROM a")
    columns = ["n", "t", "f"]
    left = Side(sql.Identifier("a"), ["id"], columns)
    right = Side(sql.Identifier("b"), ["id"], columns)
    assert found(both_hashes(pg, left, right, chunk_size=100)) == set()
    pg.execute("UPDATE b SET n = n + 4294967296 WHERE id = 3")  # beyond integer's 32 bits
    pg.execute("UPDATE b SET t = 'y3' WHERE id = 4")
    result = both_hashes(pg, left, right, chunk_size=100)
    assert found(result) == {("changed", (3,), ("n",)), ("changed", (4,), ("t",))}


def test_only_values_hashed_as_they_are(pg: Connection) -> None:
    """A key and one boolean: no value left to render."""
    pair(pg, "f boolean")
    pg.execute("INSERT INTO a SELECT g, g % 2 = 0 FROM generate_series(1, 100) AS g")
    pg.execute("INSERT INTO b SELECT * FROM a")
    pg.execute("UPDATE b SET f = NULL WHERE id = 7")
    left, right = Side(sql.Identifier("a"), ["id"], ["f"]), Side(sql.Identifier("b"), ["id"], ["f"])
    assert found(both_hashes(pg, left, right, chunk_size=30)) == {("changed", (7,), ("f",))}


def test_text_under_a_case_insensitive_collation_is_compared_by_its_bytes(pg: Connection) -> None:
    try:
        pg.execute(
            "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
        )
    except psycopg.errors.Error as error:  # a server built without ICU
        pytest.skip(f"no ICU collation: {error}")
    pair(pg, "t text COLLATE ci")
    pg.execute("INSERT INTO a SELECT g, 'name' || g FROM generate_series(1, 100) AS g")
    pg.execute("INSERT INTO b SELECT * FROM a")
    pg.execute("UPDATE b SET t = upper(t) WHERE id = 9")  # equal under ci, not the same text
    left, right = Side(sql.Identifier("a"), ["id"], ["t"]), Side(sql.Identifier("b"), ["id"], ["t"])
    assert found(both_hashes(pg, left, right, chunk_size=30)) == {("changed", (9,), ("t",))}


# (type, left value, right value, same text?): values whose types' own hash functions would get
# them wrong; verify must follow their text.
TRICKY = [
    ("bigint", "0", "4294967297", False),  # int8's hash folds 2^32 + 1 onto 0
    ("bigint", "-1", "4294967295", False),
    (
        "timestamptz",
        "'2024-01-01+00'",
        "'2024-01-01+00'::timestamptz + 4294967297 * interval '1 microsecond'",
        False,
    ),
    ("numeric", "1.0", "1.00", False),
    ("numeric", "-0.0", "0.0", True),
    ("float8", "'-0'", "'0'", False),
    ("float8", "'NaN'", "'Infinity'::float8 - 'Infinity'::float8", True),
    ("interval", "'1 day'", "'24 hours'", False),
    ("interval", "'1 day'", "'1 day'::interval", True),
]


@pytest.mark.parametrize(("coltype", "left_value", "right_value", "same"), TRICKY)
def test_values_whose_own_hash_is_not_exact(
    pg: Connection, coltype: str, left_value: str, right_value: str, same: bool
) -> None:
    pair(pg, f"v {coltype}")
    pg.execute(
        sql.SQL("INSERT INTO a SELECT g, {} FROM generate_series(1, 20) AS g").format(
            sql.SQL(left_value)
        )
    )
    pg.execute("INSERT INTO b SELECT * FROM a")
    pg.execute(sql.SQL("UPDATE b SET v = {} WHERE id = 11").format(sql.SQL(right_value)))
    left, right = Side(sql.Identifier("a"), ["id"], ["v"]), Side(sql.Identifier("b"), ["id"], ["v"])
    result = both_hashes(pg, left, right, chunk_size=10)
    assert found(result) == (set() if same else {("changed", (11,), ("v",))})


def test_values_of_other_types_compare_as_the_record_shows_them(pg: Connection) -> None:
    """A boolean against text holding 't' is the same text; char(3) against char(4) is not
    (the record shows the padding), though their casts to text would agree."""
    pair(pg, "k boolean, c char(3), j jsonb", "k text, c char(4), j jsonb")
    pg.execute(
        "INSERT INTO a SELECT g, g % 2 = 0, 'x', '{\"n\": 1}' FROM generate_series(1, 40) AS g"
    )
    pg.execute("INSERT INTO b SELECT id, k::text, c, j FROM a")
    pg.execute("UPDATE b SET k = left(k, 1)")  # 'true' -> 't', as a boolean shows in a record
    pg.execute("UPDATE b SET j = '{\"n\": 1.0}' WHERE id = 7")
    columns = ["k", "c", "j"]
    left, right = (
        Side(sql.Identifier("a"), ["id"], columns),
        Side(sql.Identifier("b"), ["id"], columns),
    )
    result = both_hashes(pg, left, right, chunk_size=10)
    assert {(d.key, d.columns) for d in result.examples} == {
        *(((key,), ("c",)) for key in range(1, 41) if key != 7),
        ((7,), ("c", "j")),
    }
