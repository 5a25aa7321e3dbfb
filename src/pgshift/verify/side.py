"""One side of a row-hash comparison, and the SQL that reads it.

A side is a FROM item (a table, or a parenthesised subquery with an alias) whose rows are
(key columns..., value columns...). Every query here is built with psycopg.sql; key values are
always bound parameters, never text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg import sql

from pgshift.db import PINNED_SETTINGS

Key = tuple[Any, ...]

# A compared value: a column name exposed by the source, or (name, SQL expression over the
# source's columns). The name labels the column in differences; the expression is what is hashed.
ColumnSpec = str | tuple[str, sql.Composable]

# The 64-bit hash of a row's text. `hashtext`: PostgreSQL's hashtextextended (the hash of hash
# partitioning), about half the cost of md5, but the same only within one server build (it
# depends on the CPU's byte order), so it is used where one server hashes both sides. `md5`:
# its first 64 bits, the same on every PostgreSQL version and CPU, for sides on two servers.
RowHash = Literal["hashtext", "md5"]

# Characters of a value kept for display in an example; comparison always uses the full value.
DISPLAY_CHARS = 200


@dataclass(frozen=True)
class KeyRange:
    """Keys k with lo < k <= hi; None is open on that end."""

    lo: Key | None = None
    hi: Key | None = None


@dataclass(frozen=True)
class Side:
    """A relation-like source compared by key.

    `source` is a FROM item, e.g. `sql.Identifier("public", "accounts")` or
    `sql.SQL("(SELECT id, balance::bigint AS balance FROM t) s")`. `key` names the key columns
    as the source exposes them; the key must be unique, NOT NULL and indexed (btree) so that key
    ranges are cheap. `columns` are the compared values, in the same order and under the same
    names on both sides; a column is a name, or a `(name, expression)` pair whose expression is
    evaluated over the source's row (`("balance", sql.SQL("balance::bigint"))`).
    """

    source: sql.Composable
    key: Sequence[str]
    columns: Sequence[ColumnSpec] = ()
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _exprs: tuple[sql.Composable, ...] = field(init=False, repr=False, compare=False)
    _source: sql.Composable = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a side needs at least one key column")
        names: list[str] = []
        exprs: list[sql.Composable] = []
        for spec in self.columns:
            if isinstance(spec, str):
                names.append(spec)
                exprs.append(sql.Identifier(spec))
            else:
                name, expr = spec
                names.append(name)
                exprs.append(sql.SQL("({})").format(_verbatim(expr)))
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate compared column names: {names}")
        object.__setattr__(self, "key", tuple(self.key))
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "_names", tuple(names))
        object.__setattr__(self, "_exprs", tuple(exprs))
        object.__setattr__(self, "_source", _verbatim(self.source))

    @property
    def column_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def expressions(self) -> tuple[sql.Composable, ...]:
        """The compared values as SQL over the source's row, in order."""
        return self._exprs

    @property
    def from_item(self) -> sql.Composable:
        """`source`, ready to go into a query that carries parameters."""
        return self._source


def _verbatim(piece: sql.Composable) -> sql.Composable:
    """A caller's SQL as fixed text. Its `%` (as in `id % 2`) is doubled: the queries it goes
    into carry parameters, and psycopg would read a bare `%` as a placeholder."""
    return sql.SQL(piece.as_string(None).replace("%", "%%"))


def check_pair(left: Side, right: Side) -> None:
    """Both sides must line up: same key width, same compared columns in the same order."""
    if len(left.key) != len(right.key):
        raise ValueError(f"key {list(left.key)} and key {list(right.key)} differ in width")
    if left.column_names != right.column_names:
        raise ValueError(
            f"compared columns differ: {list(left.column_names)} vs {list(right.column_names)}; "
            "give a (name, expression) pair to compare differently named columns"
        )


# Every query reads one key range (at most a chunk) through the key's index. A filtered subquery
# source can make the planner misjudge a range as tiny, or huge, and pick a whole-table scan, a
# parallel plan or JIT compilation: each costs far more than the range itself.
PLANNER_SETTINGS: dict[str, str] = {
    "enable_seqscan": "off",
    "max_parallel_workers_per_gather": "0",
    "jit": "off",
}


def begin_statements(snapshot: str | None = None) -> sql.Composed:
    """First statements of every read transaction: one snapshot for the whole chunk (`snapshot`:
    the one another transaction exported), the pinned rendering settings, so hashes never depend
    on how the caller's session is set up, and the planner settings above."""
    statements: list[sql.Composable] = [
        sql.SQL("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    ]
    if snapshot is not None:
        statements.append(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
    statements.extend(
        sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(name), sql.Literal(value))
        for name, value in {**PINNED_SETTINGS, **PLANNER_SETTINGS}.items()
    )
    return sql.SQL("; ").join(statements)


def _tuple(items: Sequence[sql.Composable]) -> sql.Composable:
    if len(items) == 1:
        return items[0]
    return sql.SQL("({})").format(sql.SQL(", ").join(items))


class SideQueries:
    """The queries of one side. Key bounds are bound parameters; sizes are literals so a cached
    generic plan still sees them."""

    def __init__(self, side: Side, row_hash: RowHash = "hashtext") -> None:
        self.side = side
        self._key_ids = [sql.Identifier(k) for k in side.key]
        self._key_list = sql.SQL(", ").join(self._key_ids)
        self._key_tuple = _tuple(self._key_ids)
        self._order_asc = self._key_list
        self.row_hash = self._row_hash(side.expressions, row_hash)

    @staticmethod
    def _row_hash(exprs: Sequence[sql.Composable], kind: RowHash) -> sql.Composable:
        # The row's text is the record output of its values: each value in its type's output
        # format (under the pinned settings), NULL as nothing, '' as "", and any value holding a
        # separator, quote or backslash quoted and escaped, so distinct rows give distinct text
        # (NULL, '' and 'NULL' included). Its hash is 64 bits either way.
        row = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(exprs))
        if kind == "hashtext":
            return sql.SQL("hashtextextended({}, 0)").format(row)
        return sql.SQL("('x' || substr(md5({}), 1, 16))::bit(64)::bigint").format(row)

    def _where(self, rng: KeyRange) -> tuple[sql.Composable, list[Any]]:
        parts: list[sql.Composable] = []
        params: list[Any] = []
        marks = _tuple([sql.Placeholder()] * len(self._key_ids))
        if rng.lo is not None:
            parts.append(sql.SQL("{} > {}").format(self._key_tuple, marks))
            params.extend(rng.lo)
        if rng.hi is not None:
            parts.append(sql.SQL("{} <= {}").format(self._key_tuple, marks))
            params.extend(rng.hi)
        if not parts:
            return sql.SQL("true"), params
        return sql.SQL(" AND ").join(parts), params

    def _where_keys(self, keys: Sequence[Key]) -> tuple[sql.Composed, list[Any]]:
        # A plain IN list: each value is an untyped parameter that takes the key column's type
        # (an array parameter would need the type spelled out: uuid = ANY(text[]) fails).
        marks = _tuple([sql.Placeholder()] * len(self._key_ids))
        items = sql.SQL(", ").join([marks] * len(keys))
        params = [value for key in keys for value in key]
        return sql.SQL("{} IN ({})").format(self._key_tuple, items), params

    def aggregate(self, rng: KeyRange) -> tuple[sql.Composed, list[Any]]:
        """Count and hash sum of a key range: (count, sum).

        The sum of bigints is an exact numeric (it never wraps), so count and sum agree on
        different rows only by a 64-bit chance collision. XOR would be as cheap but cancels every
        pair of equal hashes: a row present twice looks like a row absent, and the rows {A, A, B}
        and {B, C, C} would match in count and XOR alike (a side whose key is not unique)."""
        where, params = self._where(rng)
        query = sql.SQL("SELECT count(*), sum({hash}) FROM {src} WHERE {where}").format(
            hash=self.row_hash, src=self.side.from_item, where=where
        )
        return query, params

    def nth_key(self, rng: KeyRange, offset: int) -> tuple[sql.Composed, list[Any]]:
        """The key `offset` rows into a range, in key order: an index walk of `offset` entries
        (at most one chunk), never a scan from the start of the table."""
        where, params = self._where(rng)
        query = sql.SQL(
            "SELECT {keys} FROM {src} WHERE {where} ORDER BY {asc} OFFSET {offset} LIMIT 1"
        ).format(
            keys=self._key_list,
            src=self.side.from_item,
            where=where,
            asc=self._order_asc,
            offset=sql.Literal(offset),
        )
        return query, params

    def null_key(self) -> tuple[sql.Composed, list[Any]]:
        """Whether any row's key holds NULL. A table whose key columns are all declared NOT NULL
        (a primary key's are) is answered from the catalog; anything else is probed (one index
        lookup for a one-column key, an index scan for a longer one)."""
        declared = sql.SQL("true")
        params: list[Any] = []
        if isinstance(self.side.source, sql.Identifier):
            declared = sql.SQL(
                "(SELECT count(*) FILTER (WHERE attnotnull) <> %s FROM pg_attribute "
                "WHERE attrelid = to_regclass(%s) AND attname = ANY(%s) AND NOT attisdropped)"
            )
            params = [len(self.side.key), self.side.source.as_string(None), list(self.side.key)]
        nulls = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(k) for k in self._key_ids)
        query = sql.SQL("SELECT {declared} AND EXISTS (SELECT FROM {src} WHERE {nulls})").format(
            declared=declared, src=self.side.from_item, nulls=nulls
        )
        return query, params

    def hashes(
        self, rng: KeyRange, keys: Sequence[Key] | None = None
    ) -> tuple[sql.Composed, list[Any]]:
        """Key and row hash of each row in a range (and, if given, among `keys`), in key order."""
        where, params = self._where(rng)
        if keys is not None:
            in_keys, key_params = self._where_keys(keys)
            where = sql.SQL("{} AND {}").format(where, in_keys)
            params.extend(key_params)
        query = sql.SQL("SELECT {keys}, {hash} FROM {src} WHERE {where} ORDER BY {asc}").format(
            keys=self._key_list,
            hash=self.row_hash,
            src=self.side.from_item,
            where=where,
            asc=self._order_asc,
        )
        return query, params

    def details(self, keys: Sequence[Key]) -> tuple[sql.Composed, list[Any]]:
        """Per column: the md5 of the value as the row hash renders it (so columns differ exactly
        when rows do), and its text cut for display (NULL stays NULL)."""
        where, params = self._where_keys(keys)
        values: list[sql.Composable] = []
        for expr in self.side.expressions:
            values.append(sql.SQL("md5(ROW({})::text)").format(expr))
            values.append(
                sql.SQL(
                    "CASE WHEN num_nulls({e}) = 0 THEN left(format('%%s', {e}), {n}) END"
                ).format(e=expr, n=sql.Literal(DISPLAY_CHARS))
            )
        query = sql.SQL("SELECT {keys}{sep}{values} FROM {src} WHERE {where}").format(
            keys=self._key_list,
            sep=sql.SQL(", ") if values else sql.SQL(""),
            values=sql.SQL(", ").join(values),
            src=self.side.from_item,
            where=where,
        )
        return query, params
