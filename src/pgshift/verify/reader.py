"""One side's reads, run on that side's connection: aggregates over key ranges, key walks, and
the rows of a small range."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from pgshift.errors import PgshiftError
from pgshift.verify.diff import Details, Hashes, collect_details, collect_hashes
from pgshift.verify.side import Key, KeyRange, RowHash, Side, SideQueries

Connection = psycopg.Connection[Any]

# Keys per query when fetching rows by key (rechecks, example values).
KEYS_PER_QUERY = 500

# A side's count and sum of row hashes over a key range. Both are exact (the sum of bigints is a
# numeric in PostgreSQL, it never wraps), so the second half of a split is the whole minus the
# first half.
Agg = tuple[int, int]


class Reader:
    """One side's queries, run on `conn`."""

    def __init__(self, conn: Connection, side: Side, row_hash: RowHash) -> None:
        self.conn = conn
        self.side = side
        self.row_hash: RowHash = row_hash
        self.queries = SideQueries(side, row_hash)
        self.width = len(side.key)
        self._key_types: list[str] | None = None

    def value_types(self) -> list[int]:
        """The type OIDs of the key columns, then of the compared values."""
        # With parameters (none), so that a source's doubled `%%` is read as `%`.
        cursor = self.conn.execute(self.queries.value_types(), [])
        return [column.type_code for column in cursor.description or ()]

    def hash_binary(self, binary: Sequence[str | None]) -> None:
        """Hash the values named in `binary` as they are (see SideQueries)."""
        self.queries = SideQueries(self.side, self.row_hash, binary)

    def _row(self, query: tuple[sql.Composed, list[Any]]) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(*query).fetchone()
        return row

    def _rows(self, query: tuple[sql.Composed, list[Any]]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.conn.execute(*query).fetchall()
        return rows

    def aggregate(self, rng: KeyRange) -> Agg:
        row = self._row(self.queries.aggregate(rng))
        assert row is not None
        return int(row[0]), int(row[1] or 0)

    def key_types(self) -> list[str]:
        """The key columns' type names (format_type), read once."""
        if self._key_types is None:
            # With parameters (none), so that a source's doubled `%%` is read as `%`.
            cursor = self.conn.execute(self.queries.key_types(), [])
            oids = [column.type_code for column in cursor.description or ()]
            rows = self.conn.execute(
                "SELECT format_type(t, NULL) FROM unnest(%s::oid[]) WITH ORDINALITY AS u(t, i)"
                " ORDER BY i",
                [oids],
            ).fetchall()
            self._key_types = [str(row[0]) for row in rows]
        return self._key_types

    def buckets(self, ranges: Sequence[KeyRange]) -> list[Agg]:
        """The aggregate of each range, in order: the closed ones in one statement, a range open
        at an end (the first or last of the whole key space) on its own."""
        closed = [r for r in ranges if r.lo is not None and r.hi is not None]
        found: list[Agg] = []
        if closed:
            query = self.queries.bucket_aggregates(self.key_types(), closed)
            found = [(int(n), int(s or 0)) for n, s in self._rows(query)]
        aggs = iter(found)
        return [
            next(aggs) if r.lo is not None and r.hi is not None else self.aggregate(r)
            for r in ranges
        ]

    def walk(self, lo: Key | None, step: int, last: int, every: int, count: int) -> list[Key]:
        """Up to `count` keys after `lo` (see SideQueries.walk); fewer where the keys run out."""
        return [tuple(row) for row in self._rows(self.queries.walk(lo, step, last, every, count))]

    def nth_key(self, rng: KeyRange, offset: int) -> Key | None:
        row = self._row(self.queries.nth_key(rng, offset))
        return None if row is None else tuple(row)

    def check_key(self) -> None:
        """Refuse a key holding NULL: such rows fall in no key range and would go unchecked."""
        row = self._row(self.queries.null_key())
        if row is not None and row[0]:
            raise PgshiftError(
                f"key ({', '.join(self.side.key)}) of {self.side.source.as_string(None)} holds "
                "NULL; the key compared by verify must be NOT NULL"
            )

    def hashes(self, rng: KeyRange, keys: Sequence[Key] | None = None) -> Hashes:
        if keys is None:
            return collect_hashes(self._rows(self.queries.hashes(rng)), self.width)
        found: Hashes = {}
        for start in range(0, len(keys), KEYS_PER_QUERY):
            batch = keys[start : start + KEYS_PER_QUERY]
            found.update(collect_hashes(self._rows(self.queries.hashes(rng, batch)), self.width))
        return found

    def details(self, keys: Sequence[Key]) -> Details:
        found: Details = {}
        for start in range(0, len(keys), KEYS_PER_QUERY):
            batch = keys[start : start + KEYS_PER_QUERY]
            found.update(collect_details(self._rows(self.queries.details(batch)), self.width))
        return found
