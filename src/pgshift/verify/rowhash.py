"""Row-hash comparison of two sides by key.

The left side (the truth) is walked in key order, `chunk_size` rows at a time (keyset
pagination: the next chunk's end is the key `chunk_size` index entries after the previous end);
each chunk is the key range (previous end, this end], the first one open below and the last one
open above, so rows the right side holds anywhere in the key space fall in some chunk. Both
sides give count(*) and the sum of 64-bit row hashes over key ranges, computed in the database.
A range that differs is bisected by key until both sides hold at most `leaf_size` rows, whose
keys and hashes are then fetched and compared here to name each missing, extra or changed key;
the first `max_examples` also get their values and changed columns.

Why count and sum find every difference: the sum of bigint hashes is an exact numeric in
PostgreSQL (it cannot overflow), so a range's (count, sum) changes with any one row added,
removed or changed (its 64-bit hash changes, and with it the sum), unless two different rows
collide in 64 bits; several differences cancel only by such a chance (2^-64 a range). XOR would
cancel every pair of equal hashes, and bigint sums of halves would wrap.

In one database (`compare_same_db`) the walk is split from the hashing: the coordinator walks
the left side's key index ahead of the workers (one statement for up to `_WALK_KEYS` keys,
reading keys only) and cuts each chunk into buckets of `leaf_size` left keys; `workers` threads
each compare whole chunks. A worker reads a chunk's two sides side by side on two connections
in one REPEATABLE READ snapshot (the right side's transaction imports the left one's,
`pg_export_snapshot`), so a writer changing both sides in one transaction is seen on both or on
neither; every bucket's aggregate comes from one statement per side, so a difference costs only
its bucket's rows again. Chunks are reported in key order whatever order they finish in.

Across two connections (`compare_two_connections`) each side has a snapshot of its own; keys
found different are fetched again after `recheck_delay` seconds and reported only if they still
differ; each chunk is one aggregate per side, bisected where it differs.

The row hash is hashtextextended of the row's text (key included), with values of some types
hashed as they are, where one server hashes both sides, and the first 64 bits of the md5 of the
row's text across two connections (see side.RowHash and side.BINARY_TYPES).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

from pgshift import db
from pgshift.verify.diff import Difference, Kind, describe, diff_hashes
from pgshift.verify.reader import KEYS_PER_QUERY, Agg, Reader
from pgshift.verify.side import (
    ColumnSpec,
    Key,
    KeyRange,
    Side,
    begin_statements,
    binary_types,
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

# Keys walked at once to plan chunks (one statement, a few kB of keys, at most one walk ahead).
_WALK_KEYS = 100_000
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
    workers: int = 1,
    binary_values: bool = True,
) -> VerifyResult:
    """Compare two sides in one database, each chunk in one REPEATABLE READ snapshot.

    `conn` must be idle (no transaction open); it walks the keys, and each chunk is a short
    transaction of its own, so no snapshot is held for the whole run. With `parallel`, each of
    `workers` threads opens two connections like `conn` (left and right side, sharing each
    chunk's snapshot); connections that cannot be opened mean fewer workers, and with none
    everything runs on `conn`, one query at a time. `on_chunk` is called in key order, in the
    caller's thread, between chunks. With `binary_values` (PostgreSQL 14 and later), values
    of some types are hashed as they are instead of rendered as text (side.BINARY_TYPES):
    the same differences are found, with less work."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    _check_args(left, right, chunk_size, leaf_size, max_examples, start_after)
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("the connection must not be inside a transaction")
    started = time.monotonic()
    with ExitStack() as stack:
        comparers: list[_Comparer] = []
        for _ in range(workers if parallel else 0):
            pair = [_open_like(conn), _open_like(conn)]
            for opened in pair:
                if opened is not None:
                    stack.enter_context(opened)
            if pair[0] is None or pair[1] is None:
                break
            comparers.append(_same_db_comparer(pair[0], pair[1], left, right, leaf_size))
        serial = not comparers
        if serial:
            comparers.append(_same_db_comparer(conn, conn, left, right, leaf_size))
        for comparer in comparers:
            if comparer.right.conn is not comparer.left.conn:
                side_pool = ThreadPoolExecutor(1, "pgshift-verify-side")
                stack.callback(side_pool.shutdown, wait=True)
                comparer.pool = side_pool
        first = comparers[0]
        with first._snapshot():
            first._both(first.left.check_key, first.right.check_key)
            if binary_values and conn.info.server_version >= 140000:
                binary = binary_types(first.left.value_types(), first.right.value_types())
                for comparer in comparers:
                    comparer.left.hash_binary(binary)
                    comparer.right.hash_binary(binary)
        return _Chunks(
            Reader(conn, left, "hashtext"),
            comparers,
            stack,
            serial=serial,
            chunk_size=chunk_size,
            leaf_size=leaf_size,
            max_examples=max_examples,
            on_chunk=on_chunk,
            start_after=None if start_after is None else tuple(start_after),
            started=started,
        ).run()


def _check_args(
    left: Side,
    right: Side,
    chunk_size: int,
    leaf_size: int,
    max_examples: int,
    start_after: Key | None,
) -> None:
    check_pair(left, right)
    if chunk_size < 1 or leaf_size < 1 or max_examples < 0:
        raise ValueError("chunk_size and leaf_size must be positive, max_examples >= 0")
    if start_after is not None and len(start_after) != len(left.key):
        raise ValueError(f"start_after {start_after!r} does not match key {left.key}")


def _same_db_comparer(
    left_conn: Connection, right_conn: Connection, left: Side, right: Side, leaf_size: int
) -> _Comparer:
    return _Comparer(
        Reader(left_conn, left, "hashtext"),
        Reader(right_conn, right, "hashtext"),
        chunk_size=1,
        leaf_size=leaf_size,
        max_examples=0,
        on_chunk=None,
        start_after=None,
        recheck_delay=None,
    )


@dataclass(frozen=True)
class _Chunk:
    """One chunk to compare: its key range and its buckets (which tile the range)."""

    lo: Key | None
    hi: Key | None
    buckets: tuple[KeyRange, ...]


@dataclass
class _Outcome:
    """What comparing one chunk found."""

    rows: int
    found: list[tuple[Kind, Key]]
    examples: list[Difference]


class _Chunks:
    """The coordinator of a same-database comparison: walks the left side's keys one chunk ahead
    of the workers, hands out chunks, and folds the outcomes into the result in key order."""

    def __init__(
        self,
        walker: Reader,
        comparers: list[_Comparer],
        stack: ExitStack,
        *,
        serial: bool,
        chunk_size: int,
        leaf_size: int,
        max_examples: int,
        on_chunk: Callable[[ChunkProgress], None] | None,
        start_after: Key | None,
        started: float,
    ) -> None:
        self.walker = walker
        self.serial = serial
        self.free: queue.SimpleQueue[_Comparer] = queue.SimpleQueue()
        for comparer in comparers:
            self.free.put(comparer)
        self.workers = len(comparers)
        self.pool: ThreadPoolExecutor | None = None
        if not serial:
            self.pool = ThreadPoolExecutor(self.workers, "pgshift-verify")
            stack.callback(self.pool.shutdown, wait=True, cancel_futures=True)
        # Buckets of at most `leaf_size` left keys, as many as make up `chunk_size` keys.
        self.step = min(leaf_size, chunk_size)
        self.count = math.ceil(chunk_size / self.step)
        self.last = chunk_size - (self.count - 1) * self.step
        self.max_examples = max_examples
        self.claimed = 0
        self.claim_lock = threading.Lock()
        self.on_chunk = on_chunk
        self.start_after = start_after
        self.started = started
        self.result = VerifyResult()

    def _plan(self, lo: Key | None) -> list[_Chunk]:
        """The next chunks after `lo`, up to about `_WALK_KEYS` keys of them, from one walk of
        the left side's keys; the last chunk of the key space is open above."""
        chunks = max(1, _WALK_KEYS // (self.step * self.count))
        with self.walker.conn.transaction():
            self.walker.conn.execute(begin_statements())
            ends = self.walker.walk(lo, self.step, self.last, self.count, chunks * self.count)
        planned: list[_Chunk] = []
        for start in range(0, len(ends), self.count):
            group: list[Key | None] = list(ends[start : start + self.count])
            if len(group) < self.count:
                group.append(None)  # the keys ran out: the last bucket is open above
            planned.append(self._chunk(lo, group))
            lo = group[-1]
        if len(ends) < chunks * self.count and (not planned or planned[-1].hi is not None):
            planned.append(self._chunk(lo, [None]))  # past the last key, for the right side
        return planned

    @staticmethod
    def _chunk(lo: Key | None, ends: Sequence[Key | None]) -> _Chunk:
        starts = [lo, *ends[:-1]]
        buckets = tuple(KeyRange(a, b) for a, b in zip(starts, ends, strict=True))
        return _Chunk(lo, ends[-1], buckets)

    def _claim(self, wanted: int) -> int:
        """How many of `wanted` differences a chunk may describe (values fetched) as examples."""
        with self.claim_lock:
            room = min(wanted, self.max_examples - self.claimed)
            self.claimed += room
            return room

    def _compare(self, chunk: _Chunk) -> _Outcome:
        comparer = self.free.get()
        try:
            return comparer.compare_chunk(chunk.buckets, self._claim)
        finally:
            self.free.put(comparer)

    def run(self) -> VerifyResult:
        inflight: deque[tuple[_Chunk, Future[_Outcome]]] = deque()
        planned: deque[_Chunk] = deque()
        lo = self.start_after
        more = True
        while more or planned or inflight:
            # Keep every worker busy, with one chunk waiting.
            while (more or planned) and len(inflight) <= (0 if self.serial else self.workers):
                if not planned:
                    planned.extend(self._plan(lo))
                    lo = planned[-1].hi
                    more = lo is not None
                chunk = planned.popleft()
                if self.pool is None:
                    done: Future[_Outcome] = Future()
                    done.set_result(self._compare(chunk))
                    inflight.append((chunk, done))
                else:
                    inflight.append((chunk, self.pool.submit(self._compare, chunk)))
            chunk, future = inflight.popleft()
            self._fold(chunk, future.result(), last=not (more or planned or inflight))
        self.result.seconds = time.monotonic() - self.started
        return self.result

    def _fold(self, chunk: _Chunk, outcome: _Outcome, *, last: bool) -> None:
        for kind, _ in outcome.found:
            if kind == "missing":
                self.result.missing += 1
            elif kind == "extra":
                self.result.extra += 1
            else:
                self.result.changed += 1
        self.result.examples.extend(outcome.examples)
        self.result.chunks += 1
        self.result.rows_compared += outcome.rows
        self.result.seconds = time.monotonic() - self.started
        if self.on_chunk is not None:
            self.on_chunk(
                ChunkProgress(
                    chunks=self.result.chunks,
                    rows_compared=self.result.rows_compared,
                    last_key=chunk.hi if chunk.hi is not None else chunk.lo,
                    missing=self.result.missing,
                    extra=self.result.extra,
                    changed=self.result.changed,
                    done=last,
                )
            )


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
        Reader(left_conn, left, "md5"),
        Reader(right_conn, right, "md5"),
        chunk_size=chunk_size,
        leaf_size=leaf_size,
        max_examples=max_examples,
        on_chunk=on_chunk,
        start_after=start_after,
        recheck_delay=recheck_delay,
    ).run()


def _begin(conn: Connection, *, snapshot: str | None = None, export: bool = False) -> str | None:
    """Open a read transaction on an idle autocommit connection (see begin_statements), in one
    round trip; with `export`, the snapshot's name for another transaction to import."""
    query = sql.SQL("BEGIN; {}").format(begin_statements(snapshot))
    if export:
        query = sql.SQL("{}; SELECT pg_export_snapshot()").format(query)
    cursor = conn.execute(query)
    if not export:
        return None
    while cursor.nextset():  # the export's row comes with the last statement's result
        pass
    row = cursor.fetchone()
    assert row is not None
    return str(row[0])


def _rollback(conn: Connection) -> None:
    """End a transaction that failed or was stopped; a connection already broken stays so."""
    if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        with suppress(psycopg.Error):
            conn.execute("ROLLBACK")


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


class _Comparer:
    """A pair of readers: compares key ranges in one snapshot and bisects what differs. `run`
    walks every chunk itself (two connections); `compare_chunk` does one chunk for _Chunks."""

    def __init__(
        self,
        left: Reader,
        right: Reader,
        *,
        chunk_size: int,
        leaf_size: int,
        max_examples: int,
        on_chunk: Callable[[ChunkProgress], None] | None,
        start_after: Key | None,
        recheck_delay: float | None,
    ) -> None:
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
        _check_args(left.side, right.side, chunk_size, leaf_size, max_examples, start_after)

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
        one database the right side's transaction imports the left side's snapshot. Each side's
        transaction starts in one round trip (BEGIN, the settings and the export sent at once)."""
        conns = [self.left.conn]
        if self.right.conn is not self.left.conn:
            conns.append(self.right.conn)
        for conn in conns:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                raise ValueError("the connection must not be inside a transaction")
        export = len(conns) == 2 and self.recheck_delay is None
        started: list[Connection] = []
        try:
            started.append(self.left.conn)
            snapshot = _begin(self.left.conn, export=export)
            if len(conns) == 2:
                started.append(self.right.conn)
                _begin(self.right.conn, snapshot=snapshot)
            yield
        except BaseException:
            for conn in started:
                _rollback(conn)
            raise
        # Both at once: nothing is left to read.
        self._both(
            partial(self.left.conn.execute, "COMMIT"),
            partial(started[-1].execute, "COMMIT") if len(started) == 2 else lambda: None,
        )

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

    def _resolve(self, rng: KeyRange, left: Agg, right: Agg) -> list[tuple[Kind, Key]]:
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
        self.result.examples.extend(self._describe(found[: max(room, 0)]))

    def _describe(self, shown: Sequence[tuple[Kind, Key]]) -> list[Difference]:
        """The differences with their values (fetched in the current snapshot)."""
        if not shown:
            return []
        keys = list(dict.fromkeys(key for _, key in shown))
        left, right = self._both(lambda: self.left.details(keys), lambda: self.right.details(keys))
        names = self.left.side.column_names
        return [describe(kind, key, names, left, right) for kind, key in shown]

    def compare_chunk(self, buckets: Sequence[KeyRange], claim: Callable[[int], int]) -> _Outcome:
        """Compare one chunk of buckets in one snapshot: every bucket's aggregate on both sides
        at once, then the differing buckets down to their rows. `claim(n)` says how many of the
        n differences found may be described as examples."""
        with self._snapshot():
            left, right = self._both(
                partial(self.left.buckets, buckets), partial(self.right.buckets, buckets)
            )
            found: list[tuple[Kind, Key]] = []
            for rng, left_agg, right_agg in zip(buckets, left, right, strict=True):
                if left_agg != right_agg:
                    found.extend(self._resolve(rng, left_agg, right_agg))
            examples = self._describe(found[: claim(len(found))]) if found else []
        rows = max(sum(agg[0] for agg in left), sum(agg[0] for agg in right))
        return _Outcome(rows, found, examples)

    def _recheck(self) -> None:
        """Fetch the pending keys again from both sides, once `recheck_delay` has passed since
        the first of them was found, and record those that still differ."""
        wait = self.pending_since + (self.recheck_delay or 0.0) - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        keys = list(self.pending)
        self.pending.clear()
        everywhere = KeyRange()
        for start in range(0, len(keys), KEYS_PER_QUERY):
            batch = keys[start : start + KEYS_PER_QUERY]
            with self._snapshot():
                left, right = self._both(
                    partial(self.left.hashes, everywhere, batch),
                    partial(self.right.hashes, everywhere, batch),
                )
                self._record(diff_hashes(left, right))
