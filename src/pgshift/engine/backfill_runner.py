"""Run a BackfillStep: keyset batches, each committed together with its checkpoint.

Batch size adapts to `batch_time` when `batch_size: auto`: each batch is sized from the slowest
rows per second of the last `RECENT_BATCHES` batches, never more than doubling or halving at
once, so a sudden slow batch (a checkpoint, a vacuum) shrinks the next ones instead of
compounding, and the size grows back only once the slow spell has left the window.

A table copy's batch (CopyStep) runs first without ON CONFLICT; when it meets a copy the
trigger wrote meanwhile (a unique violation), its transaction, checkpoint included, rolls back
and the same range runs again with ON CONFLICT DO NOTHING. Why that is safe: phases/backfill.py.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg

from pgshift.engine.failpoints import failpoint
from pgshift.engine.locks import set_timeouts, with_lock_retries
from pgshift.engine.progress import BatchReport, Reporter
from pgshift.engine.state import StateStore
from pgshift.engine.throttle import Throttle
from pgshift.phases.backfill import CopyStep
from pgshift.phases.base import BackfillStep
from pgshift.plan.model import Settings

AUTO_START = 1_000
AUTO_MIN = 10
AUTO_MAX = 500_000
# Batches whose rows per second size the next one: the slowest of them counts.
RECENT_BATCHES = 5


@dataclass(frozen=True)
class BatchPolicy:
    size: int | None  # fixed size, or None for auto
    batch_time: timedelta
    pause: timedelta

    @classmethod
    def of(cls, settings: Settings, options: dict[str, Any]) -> BatchPolicy:
        def pick(name: str) -> Any:
            # a phase's own option wins, even when it is 0 (batch_pause: 0)
            value = options.get(name)
            return getattr(settings, name) if value is None else value

        size = pick("batch_size")
        return cls(
            size=None if size == "auto" else int(size),
            batch_time=pick("batch_time"),
            pause=pick("batch_pause"),
        )

    def overridden(self, settings: Settings, overrides: dict[str, Any]) -> BatchPolicy:
        """This policy with the batch settings `migrate set` changed, taken from `settings`
        (which has them in force)."""
        if not overrides.keys() & {"batch_size", "batch_time", "batch_pause"}:
            return self
        size = settings.batch_size if "batch_size" in overrides else self.size
        return BatchPolicy(
            size=None if size in (None, "auto") else int(size),
            batch_time=settings.batch_time if "batch_time" in overrides else self.batch_time,
            pause=settings.batch_pause if "batch_pause" in overrides else self.pause,
        )

    def next_size(
        self, size: int, rows: int, seconds: float, earlier: Sequence[tuple[int, float]] = ()
    ) -> int:
        """The next batch's size after one of `rows` rows in `seconds`; `earlier` holds the
        (rows, seconds) of the batches before it (the last few), and the slowest rate of them
        all sizes the next batch."""
        if self.size is not None:
            return self.size
        # rows actually written per second (a range thinned by deletes is cheaper, and says so)
        rates = [max(r, 1) / s for r, s in (*earlier, (rows, seconds)) if s > 0]
        if not rates:
            return int(min(size * 2, AUTO_MAX))
        wanted = min(rates) * self.batch_time.total_seconds()
        return int(min(max(wanted, size / 2, AUTO_MIN), size * 2, AUTO_MAX))


@dataclass
class BackfillOutcome:
    rows: int
    batches: int
    seconds: float
    slowest_batch_seconds: float
    conflict_retries: int = 0  # table copy: batches run again with ON CONFLICT


def run_backfill(
    conn: psycopg.Connection[Any],
    step: BackfillStep,
    *,
    store: StateStore,
    migration: str,
    phase_idx: int,
    phase_name: str,
    steps_done: int,
    checkpoint: Any,
    rows_done: int,
    rows_total: int | None,
    settings: Settings,
    policy: BatchPolicy,
    throttle: Throttle,
    reporter: Reporter,
    check: Callable[[psycopg.Connection[Any]], None] | None = None,
) -> BackfillOutcome:
    """`check` runs before every batch (the rows the triggers could not map: one indexed
    query) and stops the backfill by raising."""
    last: list[str] | None = checkpoint.get("last") if isinstance(checkpoint, dict) else None
    planned = policy
    size = policy.size or int(
        checkpoint.get("size", AUTO_START) if isinstance(checkpoint, dict) else AUTO_START
    )
    started = time.monotonic()
    done_here = 0
    batches = 0
    slowest = 0.0
    recent: deque[tuple[int, float]] = deque(maxlen=RECENT_BATCHES - 1)
    # a table copy's batches run without ON CONFLICT first, and again with it on a conflict
    on_conflict = step.on_conflict if isinstance(step, CopyStep) else None
    conflicts = 0
    reporter.backfill_started(phase_name, rows_done, rows_total)
    try:
        while True:
            throttle.wait()
            # `migrate set` changes, read by the wait: they win over the phase's own options
            policy = planned.overridden(throttle.settings, throttle.overrides)
            size = policy.size or size
            if check is not None:
                check(conn)
            t0 = time.monotonic()

            def one_batch(
                size: int = size,
                last: list[str] | None = last,
                number: int = batches + 1,
                safe: bool = False,
            ) -> tuple[list[str] | None, int]:
                with conn.transaction():
                    # a batch is bounded by batch_time, not by the server's statement_timeout
                    set_timeouts(conn, settings.lock_timeout, timedelta(0), local=True)
                    # No wait for the WAL flush at commit: a crash can lose only the last
                    # batches, and each takes its checkpoint with it, so they are simply redone.
                    conn.execute("SET LOCAL synchronous_commit = off")
                    for name, value in step.session_settings:
                        conn.execute("SELECT set_config(%s, %s, true)", (name, value))
                    if last is None:
                        row = conn.execute(step.first_bounds, (size - 1,)).fetchone()
                    else:
                        row = conn.execute(step.bounds, (*last, size - 1)).fetchone()
                    upper = list(row) if row else None
                    condition = step.condition(
                        step.key_value(last) if last is not None else None,
                        step.key_value(upper) if upper is not None else None,
                    )
                    form = on_conflict if safe and on_conflict is not None else step.statement
                    cur = conn.execute(form(condition))
                    count = max(cur.rowcount, 0)
                    finished = upper is None
                    failpoint(f"{phase_name}:batch:{number}:in-transaction")
                    store.checkpoint(
                        conn,
                        migration,
                        phase_idx,
                        {
                            "last": upper if upper is not None else last,
                            "size": size,
                            "finished": finished,
                        },
                        count,
                        steps_done + 1 if finished else None,
                    )
                return upper, count

            try:
                upper, count = with_lock_retries(
                    one_batch,
                    attempts=settings.lock_retries,
                    what=f"{phase_name} batch",
                    lock_timeout=settings.lock_timeout,
                )
            except psycopg.errors.UniqueViolation:
                if on_conflict is None:
                    raise
                # a copy the trigger committed meanwhile: the same range again, whole, in the
                # form that lets such copies win (see phases/backfill.py's CopyStep)
                conflicts += 1
                upper, count = with_lock_retries(
                    lambda: one_batch(safe=True),
                    attempts=settings.lock_retries,
                    what=f"{phase_name} batch",
                    lock_timeout=settings.lock_timeout,
                )
            seconds = time.monotonic() - t0
            slowest = max(slowest, seconds)
            batches += 1
            done_here += count
            rows_done += count
            failpoint(f"{phase_name}:batch:{batches}")
            elapsed = time.monotonic() - started
            reporter.batch(
                phase_name,
                BatchReport(
                    rows_done=rows_done,
                    rows_total=rows_total,
                    batch_rows=count,
                    batch_seconds=seconds,
                    batch_size=size,
                    rows_per_second=done_here / elapsed if elapsed > 0 else 0.0,
                ),
            )
            if upper is None:
                break
            last = upper
            size = policy.next_size(size, count, seconds, recent)
            recent.append((count, seconds))
            throttle.nice(seconds)
            if policy.pause > timedelta(0):
                time.sleep(policy.pause.total_seconds())
    finally:
        reporter.backfill_finished()
    return BackfillOutcome(
        rows=done_here,
        batches=batches,
        seconds=time.monotonic() - started,
        slowest_batch_seconds=slowest,
        conflict_retries=conflicts,
    )
