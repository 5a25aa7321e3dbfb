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


# The row's text is the record output of its values: each value in its type's output format
# (under the pinned settings), NULL as nothing, '' as "", and any value holding a separator,
# quote or backslash quoted and escaped, so distinct rows give distinct text (NULL, '' and 'NULL'
# included). Its hash is 64 bits either way.


def _text_hash(values: Sequence[sql.Composable]) -> sql.Composable:
    # The key is hashed too: a range's sum of hashes then also changes when two rows swap their
    # values (without the key, the same multiset of hashes sums the same).
    row = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(values))
    return sql.SQL("hashtextextended({}, 0)").format(row)


def _md5_hash(exprs: Sequence[sql.Composable]) -> sql.Composable:
    row = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(exprs))
    return sql.SQL("('x' || substr(md5({}), 1, 16))::bit(64)::bigint").format(row)


# How a value is hashed as it is, by type OID, where both sides hold the same type: for these,
# two values hash alike exactly when their text is the same (but for a 2^-64 chance), and no
# value is rendered. hash_record_extended hashes each one with its type's 64-bit hash function:
# text and varchar under COLLATE "C" and bytea and uuid as their bytes, bool, int2, int4, oid
# and date as a 32-bit value mixed into 64 bits. The others go in as their binary form (the
# send function: bytea, hashed as bytes), because their own hash is not exact: int8, timestamps,
# time and interval (the hash folds 64 bits into 32, and '1 day' hashes as '24 hours'), numeric
# (1.0 hashes as 1.00; its binary form keeps the scale) and float (0 hashes as -0; any NaN is
# made the one NaN first, as they all print 'NaN').
_AS_IS = "{}"
BINARY_TYPES: dict[int, str] = {
    16: _AS_IS,  # bool
    17: _AS_IS,  # bytea
    21: _AS_IS,  # int2
    23: _AS_IS,  # int4
    26: _AS_IS,  # oid
    1082: _AS_IS,  # date
    2950: _AS_IS,  # uuid
    25: '({}) COLLATE "C"',  # text
    1043: '({}) COLLATE "C"',  # varchar
    20: "int8send({})",
    1083: "time_send({})",
    1114: "timestamp_send({})",
    1184: "timestamptz_send({})",
    1186: "interval_send({})",
    1266: "timetz_send({})",
    1700: "numeric_send({})",
    700: "float4send(CASE WHEN {0} = 'NaN' THEN 'NaN'::float4 ELSE {0} END)",
    701: "float8send(CASE WHEN {0} = 'NaN' THEN 'NaN'::float8 ELSE {0} END)",
}
# Any other type the same on both sides (jsonb: numbers inside it hash by value; arrays, enums,
# composites, ...) is rendered as text on its own, hashed as bytes. Not bpchar (its cast to text
# drops the trailing blanks its output keeps), nor a value whose type differs between the sides:
# those are rendered together as one record's text, exactly as the record shows them.
RENDERED = '(({})::text) COLLATE "C"'
_IN_RECORD = {1042}  # bpchar


def binary_types(left: Sequence[int], right: Sequence[int]) -> list[str | None]:
    """Per value (key columns first), how it goes into the row hash by itself (a template of
    BINARY_TYPES, or RENDERED) where both sides' type OIDs are the same, else None (rendered
    as part of one record's text)."""
    return [
        None if a != b or a in _IN_RECORD else BINARY_TYPES.get(a, RENDERED)
        for a, b in zip(left, right, strict=True)
    ]


def _mixed_hash(values: Sequence[sql.Composable], binary: Sequence[str | None]) -> sql.Composable:
    """The values with a template hashed by themselves, the rest rendered as one record's text,
    all through hash_record_extended (PostgreSQL 14 and later). That combines the values' hashes
    linearly (h = 31 h + h_i, mod 2^64), so one changed value always changes it (31^k is odd),
    but rows swapping a value between them would keep a range's sum: its result is hashed again
    (as text: 64 bits in, 64 bits out), which makes the row hash no sum of its parts."""
    parts: list[sql.Composable] = []
    rendered: list[sql.Composable] = []
    for value, template in zip(values, binary, strict=True):
        if template is None:
            rendered.append(value)
        else:
            parts.append(sql.SQL(template).format(value))
    if rendered:
        parts.append(sql.SQL('(ROW({})::text) COLLATE "C"').format(sql.SQL(", ").join(rendered)))
    row = sql.SQL("ROW({})").format(sql.SQL(", ").join(parts))
    return sql.SQL("hashtextextended(hash_record_extended({}, 0)::text, 0)").format(row)


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

    def __init__(
        self,
        side: Side,
        row_hash: RowHash = "hashtext",
        binary: Sequence[str | None] | None = None,
    ) -> None:
        """`binary` (hashtext only): per key column, then per compared value, how it is hashed
        as it is rather than rendered (see `binary_types`), or None; both sides of a comparison
        must get the same."""
        self.side = side
        self._key_ids = [sql.Identifier(k) for k in side.key]
        self._key_list = sql.SQL(", ").join(self._key_ids)
        self._key_tuple = _tuple(self._key_ids)
        self._order_asc = self._key_list
        values = [*self._key_ids, *side.expressions]
        if row_hash == "md5":
            self.row_hash = _md5_hash(side.expressions)
        elif binary is None or not any(binary):
            self.row_hash = _text_hash(values)
        else:
            self.row_hash = _mixed_hash(values, binary)

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

    def value_types(self) -> sql.Composed:
        """No rows, only the key columns and the compared values: their types are read off the
        result's description."""
        return sql.SQL("SELECT {} FROM {} WHERE false").format(
            sql.SQL(", ").join([*self._key_ids, *self.side.expressions]), self.side.from_item
        )

    def key_types(self) -> sql.Composed:
        """No rows, only the key columns: their types are read off the result's description."""
        return sql.SQL("SELECT {keys} FROM {src} WHERE false").format(
            keys=self._key_list, src=self.side.from_item
        )

    def walk(
        self, lo: Key | None, step: int, last: int, every: int, count: int
    ) -> tuple[sql.Composed, list[Any]]:
        """Up to `count` keys after `lo`, in key order, each `step` keys after the one before
        it, except every `every`-th, which is `last` keys after the one before it (buckets of
        `step` keys, `every` to a chunk, the last one of a chunk `last` keys). One statement:
        an index walk that skips that many entries at a time (OFFSET in an index scan of the
        key, no compared value read), each step a lateral lookup after the previous key."""
        where, params = self._where(KeyRange(lo, None))
        prev = sql.SQL(", ").join(sql.Identifier("pgshift_w", k) for k in self.side.key)
        nxt = sql.SQL(", ").join(sql.Identifier("pgshift_n", k) for k in self.side.key)
        query = sql.SQL(
            "WITH RECURSIVE pgshift_w(pgshift_step, {keys}) AS ("
            " SELECT 1, {keys} FROM (SELECT {keys} FROM {src} WHERE {where}"
            " ORDER BY {asc} OFFSET {first} LIMIT 1) AS pgshift_first"
            " UNION ALL"
            " SELECT pgshift_w.pgshift_step + 1, {nxt} FROM pgshift_w CROSS JOIN LATERAL"
            " (SELECT {keys} FROM {src} WHERE {key_tuple} > ({prev}) ORDER BY {asc}"
            " OFFSET (CASE WHEN (pgshift_w.pgshift_step + 1) %% {every} = 0 THEN {last}"
            " ELSE {step} END) - 1 LIMIT 1) AS pgshift_n"
            " WHERE pgshift_w.pgshift_step < {count})"
            " SELECT {keys} FROM pgshift_w ORDER BY pgshift_step"
        ).format(
            keys=self._key_list,
            src=self.side.from_item,
            where=where,
            asc=self._order_asc,
            first=sql.Literal((last if every == 1 else step) - 1),
            key_tuple=self._key_tuple,
            prev=prev,
            nxt=nxt,
            every=sql.Literal(every),
            count=sql.Literal(count),
            last=sql.Literal(last),
            step=sql.Literal(step),
        )
        return query, params

    def bucket_aggregates(
        self, key_types: Sequence[str], buckets: Sequence[KeyRange]
    ) -> tuple[sql.Composed, list[Any]]:
        """Count and hash sum of each of `buckets` (closed key ranges), in their order, in one
        statement: the bounds go in as arrays of the key's types, and each bucket is one index
        range scan of a lateral subquery. `key_types` are the key columns' type names as the
        server's format_type spells them (quoted where needed)."""
        width = len(self._key_ids)
        arrays: list[sql.Composable] = []
        params: list[Any] = []
        for end in ("lo", "hi"):
            for i, type_name in enumerate(key_types):
                # A type name from the server's own format_type, not text from a user.
                arrays.append(sql.SQL("%s::{}[]").format(sql.SQL(type_name)))
                params.append([getattr(b, end)[i] for b in buckets])
        names = [sql.Identifier(f"{end}{i}") for end in ("lo", "hi") for i in range(width)]
        lo = _tuple([sql.SQL("pgshift_b.{}").format(n) for n in names[:width]])
        hi = _tuple([sql.SQL("pgshift_b.{}").format(n) for n in names[width:]])
        query = sql.SQL(
            "SELECT pgshift_a.n, pgshift_a.s FROM unnest({arrays}) WITH ORDINALITY"
            " AS pgshift_b({names}, pgshift_i) CROSS JOIN LATERAL"
            " (SELECT count(*) AS n, sum({hash}) AS s FROM {src}"
            " WHERE {key_tuple} > {lo} AND {key_tuple} <= {hi}) AS pgshift_a"
            " ORDER BY pgshift_b.pgshift_i"
        ).format(
            arrays=sql.SQL(", ").join(arrays),
            names=sql.SQL(", ").join(names),
            hash=self.row_hash,
            src=self.side.from_item,
            key_tuple=self._key_tuple,
            lo=lo,
            hi=hi,
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
