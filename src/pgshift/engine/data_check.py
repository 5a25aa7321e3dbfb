"""Run a DataCheckStep: every existing row's new values, checked in keyset batches, read only.

Batches walk the key like the backfill's (the same bounds queries, sized by batch_time, the
same throttle between them), and each runs the step's DO block over its key range. A batch that
fails is bisected by key range down to its failing rows, at most MAX_REPORTED in all; each is
then checked column by column to name the column at fault. Nothing is written to the table: no
temporary table, no subtransaction. `apply` saves a checkpoint after each clean batch (so a
resumed apply goes on from there) and none once a row has failed, so the next attempt checks
again from before the first failure; `migrate plan --check-data` saves nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from pgshift.compile import CompiledPlan
from pgshift.db import Query
from pgshift.engine.backfill_runner import AUTO_START, BatchPolicy
from pgshift.engine.failpoints import failpoint
from pgshift.engine.locks import below_deadlock_timeout, set_timeouts, with_lock_retries
from pgshift.engine.progress import BatchReport, Reporter
from pgshift.engine.state import MigrationState, StateStore
from pgshift.engine.throttle import Throttle
from pgshift.errors import MigrationFailed, UsageError
from pgshift.phases.base import DataCheckStep, Phase
from pgshift.plan.model import Settings

MAX_REPORTED = 5
# SQLSTATE classes that say nothing about a row: connection, transaction state, deadlock and
# serialization, resources, locks, cancellation and shutdown, system and internal errors
NOT_ABOUT_ROWS = ("08", "25", "40", "53", "55", "57", "58", "XX")
PROGRESS = "data check"
MAX_DEPTH = 64  # bisection: far more halvings than any batch needs

T = TypeVar("T")
Key = list[str]  # a key's values as text, in key order


@dataclass(frozen=True)
class RowFailure:
    key: tuple[str, ...]
    column: str | None  # None when no column fails alone
    message: str
    sqlstate: str | None

    def describe(self, names: tuple[str, ...]) -> str:
        """`(id)=(42): integer out of range (22003)`"""
        code = f" ({self.sqlstate})" if self.sqlstate else ""
        return f"{key_text(names, self.key)}: {self.message}{code}"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": list(self.key),
            "column": self.column,
            "message": self.message,
            "sqlstate": self.sqlstate,
        }


@dataclass
class DataCheckResult:
    rows: int  # rows read, this run and the runs before it resumed from
    batches: int = 0
    seconds: float = 0.0
    failures: list[RowFailure] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every failing row was found (it stops looking at MAX_REPORTED)."""
        return len(self.failures) < MAX_REPORTED


def key_text(names: tuple[str, ...], values: tuple[str, ...] | list[str]) -> str:
    """`(id)=(42)`, as PostgreSQL writes a key in its messages."""
    return f"({', '.join(names)})=({', '.join(values)})"


def failure_message(step: DataCheckStep, result: DataCheckResult) -> str:
    """The one line a failed check ends with."""
    columns = list(dict.fromkeys(f.column for f in result.failures if f.column is not None))
    subject = step.what
    if columns:
        subject += f" of column{'s' if len(columns) > 1 else ''} {', '.join(columns)}"
    rows = (
        f"{len(result.failures)} row(s)"
        if result.complete
        else f"at least {len(result.failures)} rows"
    )
    return (
        f"{subject} fails for {rows}, first {result.failures[0].describe(step.key)}; fix those"
        f" rows or the plan's {step.what} before dual_write installs the trigger"
    )


def success_message(step: DataCheckStep, result: DataCheckResult) -> str:
    return f"{step.what} holds for all {result.rows:,} rows"


def _about_rows(error: psycopg.Error) -> bool:
    """An error one of the rows caused (a failed cast, a value out of range, a NULL), rather
    than the connection, a lock or the server."""
    return error.sqlstate is not None and error.sqlstate[:2] not in NOT_ABOUT_ROWS


def fingerprint(step: DataCheckStep) -> str:
    """What a checkpoint was saved for: a resumed check must check the same expressions."""
    return hashlib.sha256(step.check(None, None).as_string().encode()).hexdigest()[:16]


class _Checker:
    """The check's queries, each in a short transaction of its own under lock_timeout (with
    the lock retries), without statement_timeout: a batch is bounded by batch_time."""

    def __init__(
        self, conn: psycopg.Connection[Any], step: DataCheckStep, settings: Settings
    ) -> None:
        self.conn = conn
        self.step = step
        self.settings = settings

    def transaction(self, action: Callable[[], T]) -> T:
        def once() -> T:
            with self.conn.transaction():
                set_timeouts(self.conn, self.settings.lock_timeout, timedelta(0), local=True)
                return action()

        return with_lock_retries(
            once,
            attempts=self.settings.lock_retries,
            what="data check",
            lock_timeout=self.settings.lock_timeout,
        )

    def literal(self, key: Key | None) -> Query | None:
        return self.step.key_value(key) if key is not None else None

    def key_at(self, lower: Key | None, offset: int) -> Key | None:
        """The key `offset` rows after `lower` (from the start when None), or None."""
        if lower is None:
            row = self.conn.execute(self.step.first_bounds, (offset,)).fetchone()
        else:
            row = self.conn.execute(self.step.bounds, (*lower, offset)).fetchone()
        return list(row) if row else None

    def count(self, lower: Key | None, upper: Key | None) -> int:
        condition = self.step.condition(self.literal(lower), self.literal(upper))

        def run() -> int:
            row = self.conn.execute(self.step.count(condition)).fetchone()
            return int(row[0]) if row else 0

        return self.transaction(run)

    def fails(self, query: Query) -> psycopg.Error | None:
        """The error a row caused, or None when the query passes."""
        try:
            self.transaction(lambda: self.conn.execute(query))
        except psycopg.Error as error:
            if _about_rows(error):
                return error
            raise
        return None

    def range_fails(self, lower: Key | None, upper: Key | None) -> psycopg.Error | None:
        return self.fails(self.step.check(self.literal(lower), self.literal(upper)))

    def key_after(self, lower: Key | None, offset: int) -> Key | None:
        return self.transaction(lambda: self.key_at(lower, offset))

    def bisect(
        self, lower: Key | None, upper: Key | None, rows: int, room: int, depth: int = 0
    ) -> list[RowFailure]:
        """The failing rows of (lower, upper], which fails and holds about `rows` rows, in key
        order, at most `room` of them: halves by key, the first half first, each half only
        when it fails. Rows the application changes meanwhile can only make it find fewer."""
        if room <= 0 or depth > MAX_DEPTH:
            return []
        if rows <= 1:
            key = self.key_after(lower, 0)
            failure = self.row_failure(key) if key is not None else None
            return [failure] if failure is not None else []
        half = rows // 2
        mid = self.key_after(lower, half - 1)
        if mid is None:  # rows went away meanwhile: count again
            again = self.count(lower, upper)
            return self.bisect(lower, upper, again, room, depth + 1) if 0 < again < rows else []
        found: list[RowFailure] = []
        if self.range_fails(lower, mid) is not None:
            found += self.bisect(lower, mid, half, room, depth + 1)
        if len(found) < room and self.range_fails(mid, upper) is not None:
            found += self.bisect(mid, upper, rows - half, room - len(found), depth + 1)
        return found

    def row_failure(self, key: Key) -> RowFailure | None:
        """One row: the first column (in the plan's order) whose value fails alone, with its
        error; else the whole row's error (None when the row passes by now)."""
        at = sql.SQL("{} = {}").format(self.step.key_columns, self.step.key_value(key))
        columns = self.step.columns
        tries: list[tuple[str | None, tuple[int, ...]]] = [
            (column, (i,)) for i, column in enumerate(columns)
        ]
        if len(columns) > 1:
            tries.append((None, tuple(range(len(columns)))))
        for column, only in tries:
            error = self.fails(self.step.statement(at, only))
            if error is not None:
                message = error.diag.message_primary or str(error).splitlines()[0]
                return RowFailure(tuple(key), column, message, error.sqlstate)
        return None


def check_rows(
    conn: psycopg.Connection[Any],
    step: DataCheckStep,
    *,
    settings: Settings,
    policy: BatchPolicy,
    throttle: Throttle | None,
    reporter: Reporter,
    checkpoint: Any = None,
    rows_done: int = 0,
    rows_total: int | None = None,
    save: Callable[[dict[str, Any], int, bool], None] | None = None,
    label: str | None = None,
) -> DataCheckResult:
    """Check every row from the checkpoint on. `save(checkpoint, rows, done)` runs inside each
    clean batch's transaction (until a row fails); `done` with the last one."""
    mark = fingerprint(step)
    start = checkpoint if isinstance(checkpoint, dict) and checkpoint.get("check") == mark else {}
    last: Key | None = start.get("last")
    size = policy.size or int(start.get("size", AUTO_START))
    result = DataCheckResult(rows=rows_done if start else 0)
    checker = _Checker(conn, step, settings)
    seen: set[tuple[str, ...]] = set()
    done_here = 0
    started = time.monotonic()
    reporter.backfill_started(PROGRESS, result.rows, rows_total)
    try:
        while len(result.failures) < MAX_REPORTED:
            if throttle is not None:
                throttle.wait()
            t0 = time.monotonic()
            reached: list[Key | None] = []

            def clean(
                size: int = size, last: Key | None = last, reached: list[Key | None] = reached
            ) -> tuple[Key | None, int]:
                reached.clear()
                upper = checker.key_at(last, size - 1)
                reached.append(upper)
                conn.execute(step.check(checker.literal(last), checker.literal(upper)))
                row = conn.execute("SELECT current_setting(%s, true)", (step.rows_setting,))
                found = row.fetchone()
                count = int(found[0]) if found and found[0] else 0
                if save is not None and not result.failures:
                    # no wait for the WAL flush: a lost checkpoint only means a batch checked again
                    conn.execute("SET LOCAL synchronous_commit = off")
                    done = upper is None
                    save({"last": upper or last, "size": size, "check": mark}, count, done)
                    if done and label is not None:
                        failpoint(f"{label}:in-transaction")
                return upper, count

            try:
                upper, count = checker.transaction(clean)
            except psycopg.Error as error:
                if not reached or not _about_rows(error):
                    raise
                upper = reached[0]
                count = checker.count(last, upper)
                room = MAX_REPORTED - len(result.failures)
                for failure in checker.bisect(last, upper, count, room):
                    if failure.key in seen:
                        continue
                    seen.add(failure.key)
                    result.failures.append(failure)
                    reporter.warn(
                        "row fails the data check",
                        key=key_text(step.key, failure.key),
                        column=failure.column,
                        error=failure.message,
                        sqlstate=failure.sqlstate,
                    )
            seconds = time.monotonic() - t0
            result.batches += 1
            result.rows += count
            done_here += count
            elapsed = time.monotonic() - started
            reporter.batch(
                PROGRESS,
                BatchReport(
                    rows_done=result.rows,
                    rows_total=rows_total,
                    batch_rows=count,
                    batch_seconds=seconds,
                    batch_size=size,
                    rows_per_second=done_here / elapsed if elapsed > 0 else 0.0,
                ),
                work=PROGRESS,
            )
            if upper is None:
                break
            if label is not None:
                failpoint(f"{label}:batch:{result.batches}")
            last = upper
            size = policy.next_size(size, count, seconds)
            if policy.pause > timedelta(0):
                time.sleep(policy.pause.total_seconds())
    finally:
        reporter.backfill_finished()
    result.seconds = time.monotonic() - started
    return result


def check_policy(settings: Settings, phases: tuple[Phase, ...] | list[Phase]) -> BatchPolicy:
    """Batches sized by batch_time (the backfill phase's own, when it sets one), with the
    backfill's batch_pause between them."""
    options = next((p.options for p in phases if p.kind == "backfill"), {})
    policy = BatchPolicy.of(settings, options)
    return BatchPolicy(size=None, batch_time=policy.batch_time, pause=policy.pause)


def run_data_check(
    conn: psycopg.Connection[Any],
    compiled: CompiledPlan,
    phase: Phase,
    number: int,
    step: DataCheckStep,
    *,
    store: StateStore,
    settings: Settings,
    reporter: Reporter,
) -> DataCheckResult:
    """The step in `apply`: checkpointed in the phase, throttled; raises MigrationFailed
    naming the first failing row."""
    name = compiled.plan.name
    state = store.get(conn, name)
    assert state is not None
    phase_state = state.phase(phase.index)

    def save(checkpoint: dict[str, Any], rows: int, done: bool) -> None:
        store.checkpoint(conn, name, phase.index, checkpoint, rows, number + 1 if done else None)

    result = check_rows(
        conn,
        step,
        settings=settings,
        policy=check_policy(settings, compiled.phases),
        throttle=Throttle(conn, store, name, settings),
        reporter=reporter,
        checkpoint=phase_state.checkpoint,
        rows_done=phase_state.rows_done,
        rows_total=compiled.table.row_estimate if compiled.table.row_estimate > 0 else None,
        save=save,
        label=f"{phase.name}:{number}",
    )
    if result.failures:
        store.event(
            conn,
            name,
            "data check failed",
            phase=phase.name,
            detail={"failures": [f.to_json() for f in result.failures]},
        )
        raise MigrationFailed(failure_message(step, result))
    store.event(conn, name, "data checked", phase=phase.name, detail={"rows": result.rows})
    reporter.event("data checked", phase=phase.name, rows=result.rows)
    return result


class _ReadOnlyStore(StateStore):
    """The throttle's view of the state for `migrate plan --check-data`: a pause of the
    migration is honoured when it has a state here; nothing is written."""

    def live(self, conn: psycopg.Connection[Any], name: str) -> tuple[bool, dict[str, Any]]:
        return super().live(conn, name) if self.exists(conn) else (False, {})

    def set_throttle(self, conn: psycopg.Connection[Any], name: str, reason: str | None) -> None:
        return None


def check_plan_data(
    conn: psycopg.Connection[Any],
    compiled: CompiledPlan,
    state: MigrationState | None,
    store: StateStore,
    reporter: Reporter,
) -> tuple[DataCheckStep, DataCheckResult]:
    """`migrate plan --check-data`: dual_write's check, now, on the live table; saves
    nothing."""
    name = compiled.plan.name
    found = [
        (phase, step)
        for phase in compiled.phases
        for step in phase.forward
        if isinstance(step, DataCheckStep)
    ]
    if not found and compiled.plan.target == "operations":
        raise UsageError(
            f"plan {name} maps no values: --check-data is for columns and new_table plans;"
            " an operations plan's verify phase counts the rows its constraints would reject"
        )
    if not found:
        raise UsageError(
            f"plan {name} has no dual_write phase: --check-data checks the rows its trigger"
            " would see"
        )
    phase, step = found[0]
    if state is not None and state.phase(phase.index).status == "done":
        raise UsageError(
            f"migration {name} is past dual_write here, its trigger installed: --check-data"
            " checks rows before that; roll it back to check again"
        )
    settings = below_deadlock_timeout(conn, compiled.plan.settings)
    result = check_rows(
        conn,
        step,
        settings=settings,
        policy=check_policy(settings, compiled.phases),
        throttle=Throttle(conn, _ReadOnlyStore(store.schema), name, settings),
        reporter=reporter,
        rows_total=compiled.table.row_estimate if compiled.table.row_estimate > 0 else None,
    )
    return step, result
