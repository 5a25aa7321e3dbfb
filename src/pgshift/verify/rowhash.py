"""Row-hash comparison of two sides by key.

The left side (the truth) is walked in key order, `chunk_size` rows at a time (keyset
pagination: the next chunk's end is the key `chunk_size` index entries after the previous end);
each chunk is the key range (previous end, this end], the first one open below and the last one
open above, so rows the right side holds anywhere in the key space fall in some chunk. For each
chunk both sides give count(*) and the sum of 64-bit row hashes, computed in the database. A
chunk that differs is bisected by key until both sides hold at most `leaf_size` rows, whose keys
and hashes are then fetched and compared here to name each missing, extra or changed key; the
first `max_examples` also get their values and changed columns.

In one database both sides of a chunk, its bisection and its fetches see one REPEATABLE READ
snapshot, so a writer changing both sides in one transaction is seen on both or on neither. The
right side is read on a second connection that imports the left transaction's snapshot
(`pg_export_snapshot`), so both sides are hashed at once on two server processes. Across two
connections each side has a snapshot of its own; keys found different are fetched again after
`recheck_delay` seconds and reported only if they still differ.

The row hash is hashtextextended of the row's text where one server hashes both sides, and the
first 64 bits of its md5 across two connections (see side.RowHash).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

from pgshift import db
from pgshift.errors import PgshiftError
from pgshift.verify.diff import (
    Details,
    Difference,
    Hashes,
    Kind,
    collect_details,
    collect_hashes,
    describe,
    diff_hashes,
)
from pgshift.verify.side import (
    ColumnSpec,
    Key,
    KeyRange,
    RowHash,
    Side,
    SideQueries,
    begin_statements,
    check_pair,
)

__all__ = [
    "ChunkProgress",
    "ColumnSpec",
    "Difference",
    "Side",
    "VerifyResult",
    "compare_same_db",
    "compare_two_connections",
]

Connection = psycopg.Connection[Any]
_T = TypeVar("_T")
_U = TypeVar("_U")

# Keys per query when fetching rows by key (rechecks, example values).
_KEYS_PER_QUERY = 500
# Pending keys that trigger a recheck before `recheck_delay` has passed (the wait then is only
# what remains of the delay since the first of them was found).
_RECHECK_LIMIT = 5_000


@dataclass(frozen=True)
class ChunkProgress:
    """Reported after each chunk, outside any transaction (the callback may sleep to throttle,
    or raise to stop).

    `last_key` is the resume point: every key up to it is compared and its differences are in
    the counts; pass it as `start_after` to go on from there. `done` is set on the last call."""

    chunks: int
    rows_compared: int
    last_key: Key | None
    missing: int
    extra: int
    changed: int
    done: bool


@dataclass
class VerifyResult:
    """What a comparison found. With `start_after`, it covers the keys after that key only.
    `rows_compared` counts, per chunk, the rows of the side holding more."""

    rows_compared: int = 0
    chunks: int = 0
    missing: int = 0
    extra: int = 0
    changed: int = 0
    examples: list[Difference] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def differences(self) -> int:
        return self.missing + self.extra + self.changed

    def to_json(self) -> dict[str, Any]:
        """As `migrate verify --json` prints it."""
        return {
            "rows_compared": self.rows_compared,
            "chunks": self.chunks,
            "differences": {"missing": self.missing, "extra": self.extra, "changed": self.changed},
            "examples": [example.to_json() for example in self.examples],
            "seconds": round(self.seconds, 3),
        }


def compare_same_db(
    conn: Connection,
    left: Side,
    right: Side,
    *,
    chunk_size: int = 10_000,
    leaf_size: int = 1_000,
    max_examples: int = 100,
    on_chunk: Callable[[ChunkProgress], None] | None = None,
    start_after: Key | None = None,
    parallel: bool = True,
) -> VerifyResult:
    """Compare two sides in one database, each chunk in one REPEATABLE READ snapshot.

    `conn` must be idle (no transaction open); each chunk is a short transaction of its own, so
    no snapshot is held for the whole run. With `parallel`, the right side is read on a second
    connection opened like `conn` that shares each chunk's snapshot; if it cannot be opened,
    everything runs on `conn`."""
    helper = _open_like(conn) if parallel else None
    try:
        return _Comparer(
            _Reader(conn, left, "hashtext"),
            _Reader(helper or conn, right, "hashtext"),
            chunk_size=chunk_size,
            leaf_size=leaf_size,
            max_examples=max_examples,
            on_chunk=on_chunk,
            start_after=start_after,
            recheck_delay=None,
        ).run()
    finally:
        if helper is not None:
            helper.close()


def compare_two_connections(
    left_conn: Connection,
    right_conn: Connection,
    left: Side,
    right: Side,
    *,
    chunk_size: int = 10_000,
    leaf_size: int = 1_000,
    max_examples: int = 100,
    on_chunk: Callable[[ChunkProgress], None] | None = None,
    start_after: Key | None = None,
    recheck_delay: float = 1.0,
) -> VerifyResult:
    """Compare two sides each read on its own connection (two databases or servers).

    The two sides' snapshots are not the same instant, so keys found different are fetched
    again from both sides at least `recheck_delay` seconds later (in batches, while the walk goes
    on) and reported only if they still differ. Keys must sort the same on both sides: with text
    keys, both databases need the same collation (or a subquery source with an explicit
    COLLATE). Both connections must be idle."""
    if left_conn is right_conn:
        raise ValueError("compare_two_connections needs two connections; use compare_same_db")
    return _Comparer(
        _Reader(left_conn, left, "md5"),
        _Reader(right_conn, right, "md5"),
        chunk_size=chunk_size,
        leaf_size=leaf_size,
        max_examples=max_examples,
        on_chunk=on_chunk,
        start_after=start_after,
        recheck_delay=recheck_delay,
    ).run()


def _open_like(conn: Connection) -> Connection | None:
    """A second connection to the same database as `conn`, or None if that fails (too many
    connections, say): the comparison then runs on `conn` alone, only slower."""
    dsn = conn.info.dsn
    if conn.info.password:
        dsn = make_conninfo(dsn, password=conn.info.password)
    try:
        return db.connect(dsn, role="verify")
    except psycopg.Error:
        return None


# A side's count and sum of row hashes over a key range. Both are exact (the sum of bigints is a
# numeric in PostgreSQL), so the second half of a split is the whole minus the first half.
_Agg = tuple[int, int]


class _Reader:
    """One side's queries, run on that side's connection."""

    def __init__(self, conn: Connection, side: Side, row_hash: RowHash) -> None:
        self.conn = conn
        self.side = side
        self.queries = SideQueries(side, row_hash)
        self.width = len(side.key)

    def _row(self, query: tuple[sql.Composed, list[Any]]) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(*query).fetchone()
        return row

    def _rows(self, query: tuple[sql.Composed, list[Any]]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.conn.execute(*query).fetchall()
        return rows

    def aggregate(self, rng: KeyRange) -> _Agg:
        row = self._row(self.queries.aggregate(rng))
        assert row is not None
        return int(row[0]), int(row[1] or 0)

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
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            batch = keys[start : start + _KEYS_PER_QUERY]
            found.update(collect_hashes(self._rows(self.queries.hashes(rng, batch)), self.width))
        return found

    def details(self, keys: Sequence[Key]) -> Details:
        found: Details = {}
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            batch = keys[start : start + _KEYS_PER_QUERY]
            found.update(collect_details(self._rows(self.queries.details(batch)), self.width))
        return found


class _Comparer:
    def __init__(
        self,
        left: _Reader,
        right: _Reader,
        *,
        chunk_size: int,
        leaf_size: int,
        max_examples: int,
        on_chunk: Callable[[ChunkProgress], None] | None,
        start_after: Key | None,
        recheck_delay: float | None,
    ) -> None:
        check_pair(left.side, right.side)
        if chunk_size < 1 or leaf_size < 1 or max_examples < 0:
            raise ValueError("chunk_size and leaf_size must be positive, max_examples >= 0")
        if start_after is not None and len(start_after) != left.width:
            raise ValueError(f"start_after {start_after!r} does not match key {left.side.key}")
        self.left = left
        self.right = right
        self.chunk_size = chunk_size
        self.leaf_size = leaf_size
        self.max_examples = max_examples
        self.on_chunk = on_chunk
        self.start_after = None if start_after is None else tuple(start_after)
        # None: one database, the sides share each snapshot and nothing needs a recheck.
        self.recheck_delay = recheck_delay
        self.result = VerifyResult()
        # Keys found different across two connections, waiting for their recheck.
        self.pending: dict[Key, None] = {}
        self.pending_since = 0.0
        self.pool: ThreadPoolExecutor | None = None

    def _both(self, on_left: Callable[[], _T], on_right: Callable[[], _U]) -> tuple[_T, _U]:
        """Run one call per side, at once when the sides have connections of their own."""
        if self.pool is None:
            return on_left(), on_right()
        future = self.pool.submit(on_right)
        try:
            left = on_left()
        except BaseException:
            future.exception()  # let the right side's statement end before the transaction does
            raise
        return left, future.result()

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A REPEATABLE READ, read-only transaction with pinned settings on each connection; in
        one database the right side's transaction imports the left side's snapshot."""
        with ExitStack() as stack:
            conns = [self.left.conn]
            if self.right.conn is not self.left.conn:
                conns.append(self.right.conn)
            for conn in conns:
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    raise ValueError("the connection must not be inside a transaction")
            stack.enter_context(self.left.conn.transaction())
            self.left.conn.execute(begin_statements())
            if len(conns) == 2:
                snapshot = None
                if self.recheck_delay is None:
                    row = self.left.conn.execute("SELECT pg_export_snapshot()").fetchone()
                    assert row is not None
                    snapshot = str(row[0])
                stack.enter_context(self.right.conn.transaction())
                self.right.conn.execute(begin_statements(snapshot))
            yield

    def run(self) -> VerifyResult:
        started = time.monotonic()
        lo = self.start_after
        settled = self.start_after
        done = False
        with ExitStack() as stack:
            if self.right.conn is not self.left.conn:
                self.pool = stack.enter_context(ThreadPoolExecutor(1, "pgshift-verify"))
            with self._snapshot():
                self._both(self.left.check_key, self.right.check_key)
            while not done:
                with self._snapshot():
                    hi = self.left.nth_key(KeyRange(lo, None), self.chunk_size - 1)
                    done = hi is None
                    rng = KeyRange(lo, hi)
                    left_agg, right_agg = self._both(
                        partial(self.left.aggregate, rng), partial(self.right.aggregate, rng)
                    )
                    found = [] if left_agg == right_agg else self._resolve(rng, left_agg, right_agg)
                    if self.recheck_delay is None:
                        self._record(found)
                    elif found:
                        if not self.pending:
                            self.pending_since = time.monotonic()
                        self.pending.update((key, None) for _, key in found)
                self.result.chunks += 1
                self.result.rows_compared += max(left_agg[0], right_agg[0])
                if self.pending and (
                    done
                    or len(self.pending) >= _RECHECK_LIMIT
                    or time.monotonic() - self.pending_since >= (self.recheck_delay or 0.0)
                ):
                    self._recheck()
                if not self.pending:
                    settled = hi if hi is not None else lo
                lo = hi
                self.result.seconds = time.monotonic() - started
                if self.on_chunk is not None:
                    self.on_chunk(
                        ChunkProgress(
                            chunks=self.result.chunks,
                            rows_compared=self.result.rows_compared,
                            last_key=settled,
                            missing=self.result.missing,
                            extra=self.result.extra,
                            changed=self.result.changed,
                            done=done,
                        )
                    )
        self.pool = None
        self.result.seconds = time.monotonic() - started
        return self.result

    def _resolve(self, rng: KeyRange, left: _Agg, right: _Agg) -> list[tuple[Kind, Key]]:
        """The differing keys of a range whose aggregates differ: bisect, then fetch rows."""
        if left[0] <= self.leaf_size and right[0] <= self.leaf_size:
            return self._leaf(rng)
        # Split at the middle key of the side holding more rows: the left side's keys alone
        # cannot split a range where the right side has many rows the left lacks.
        bigger, rows = (self.left, left[0]) if left[0] >= right[0] else (self.right, right[0])
        middle = bigger.nth_key(rng, rows // 2 - 1)
        if middle is None:  # the rows went away: impossible inside one snapshot
            return self._leaf(rng)
        first = KeyRange(rng.lo, middle)
        second = KeyRange(middle, rng.hi)
        left_first, right_first = self._both(
            lambda: self.left.aggregate(first), lambda: self.right.aggregate(first)
        )
        if (left_first if bigger is self.left else right_first)[0] in (0, rows):
            # No progress: one key holds all those rows (a side whose key is not unique).
            return self._leaf(rng)
        left_second = (left[0] - left_first[0], left[1] - left_first[1])
        right_second = (right[0] - right_first[0], right[1] - right_first[1])
        found: list[tuple[Kind, Key]] = []
        if left_first != right_first:
            found.extend(self._resolve(first, left_first, right_first))
        if left_second != right_second:
            found.extend(self._resolve(second, left_second, right_second))
        return found

    def _leaf(self, rng: KeyRange) -> list[tuple[Kind, Key]]:
        left, right = self._both(lambda: self.left.hashes(rng), lambda: self.right.hashes(rng))
        return diff_hashes(left, right)

    def _record(self, found: Sequence[tuple[Kind, Key]]) -> None:
        """Count differences; describe the first ones as examples (in the current snapshot)."""
        for kind, _ in found:
            if kind == "missing":
                self.result.missing += 1
            elif kind == "extra":
                self.result.extra += 1
            else:
                self.result.changed += 1
        room = self.max_examples - len(self.result.examples)
        if room <= 0 or not found:
            return
        shown = found[:room]
        keys = list(dict.fromkeys(key for _, key in shown))
        left, right = self._both(lambda: self.left.details(keys), lambda: self.right.details(keys))
        names = self.left.side.column_names
        self.result.examples.extend(describe(kind, key, names, left, right) for kind, key in shown)

    def _recheck(self) -> None:
        """Fetch the pending keys again from both sides, once `recheck_delay` has passed since
        the first of them was found, and record those that still differ."""
        wait = self.pending_since + (self.recheck_delay or 0.0) - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        keys = list(self.pending)
        self.pending.clear()
        everywhere = KeyRange()
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            batch = keys[start : start + _KEYS_PER_QUERY]
            with self._snapshot():
                left, right = self._both(
                    partial(self.left.hashes, everywhere, batch),
                    partial(self.right.hashes, everywhere, batch),
                )
                self._record(diff_hashes(left, right))
