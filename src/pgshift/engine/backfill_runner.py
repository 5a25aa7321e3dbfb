"""Run a BackfillStep: keyset batches, each committed together with its checkpoint.

Batch size adapts to `batch_time` when `batch_size: auto`: each batch is sized from the slowest
rows per second of the last `RECENT_BATCHES` batches, never more than doubling or halving at
once, so a sudden slow batch (a checkpoint, a vacuum) shrinks the next ones instead of
compounding, and the size grows back only once the slow spell has left the window.

A table copy's batch (CopyStep) runs first without ON CONFLICT; when it meets a copy the
trigger wrote meanwhile (a unique violation), its transaction, checkpoint included, rolls back
and the same range runs again with ON CONFLICT DO NOTHING. Why that is safe: phases/backfill.py.
Once a copy batch has committed, the delete fence runs and, when rows were deleted since this
walk's previous fence, sweeps their copies from the batch's key range (phases/delete_fence.py).
While deletes keep the sweeps costly, the batches lock the rows they copy for a while instead.

With `workers` above 1 the key is split up front into key ranges (engine/key_ranges.py), kept
in the phase's checkpoint, each with its own last key; that many threads, each on a connection
of its own, take the ranges one after another. A batch's transaction writes only its own
range's entry (jsonb_set on the phase row, so concurrent batches of other ranges compose), so a
crash loses nothing and a resume, with any number of workers, goes on where each range stopped.
The throttle (pause, replica lag, active sessions, `migrate set`) is shared: one worker at a
time asks it before a batch, on the main connection.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from typing import Any

import psycopg
import structlog

from pgshift.engine.failpoints import failpoint
from pgshift.engine.key_ranges import KeyRange, split_key_ranges
from pgshift.engine.locks import set_timeouts, with_lock_retries
from pgshift.engine.progress import BatchReport, Reporter
from pgshift.engine.state import StateStore
from pgshift.engine.throttle import Throttle
from pgshift.phases.backfill import CopyStep
from pgshift.phases.base import BackfillStep
from pgshift.phases.delete_fence import DeleteFence
from pgshift.plan.model import Settings

log = structlog.get_logger("pgshift.backfill")

AUTO_START = 1_000
AUTO_MIN = 10
AUTO_MAX = 500_000
# Batches whose rows per second size the next one: the slowest of them counts.
RECENT_BATCHES = 5
# A table copy's batches lock their rows for LOCKED_BATCHES batches once the delete fence's
# sweep has taken more than SWEEP_SHARE of the batch's time twice in a row.
SWEEP_SHARE = 0.25
LOCKED_BATCHES = 20


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
    workers: int = 1  # key ranges walked at once
    swept: int = 0  # table copy: copies of rows deleted meanwhile, removed by the delete fence


@dataclass
class _Run:
    """One run_backfill call: its fixed inputs, and the tallies its workers share (behind
    `lock`, which also serialises the throttle and the reporter)."""

    step: BackfillStep
    store: StateStore
    migration: str
    phase_idx: int
    phase_name: str
    steps_done: int
    settings: Settings
    planned: BatchPolicy
    throttle: Throttle
    reporter: Reporter
    check: Callable[[psycopg.Connection[Any]], None] | None
    rows_done: int
    rows_total: int | None
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    done_here: int = 0
    begun: int = 0
    batches: int = 0
    slowest: float = 0.0
    conflicts: int = 0
    swept: int = 0  # a table copy's rows deleted by its delete fence (phases/delete_fence.py)

    def policy(self) -> BatchPolicy:
        """Wait for the throttle; then the batch policy in force (`migrate set` changes, read by
        the wait, win over the phase's own options)."""
        with self.lock:
            self.throttle.wait()
            return self.planned.overridden(self.throttle.settings, self.throttle.overrides)

    def number(self) -> int:
        """The next batch's number, counted over all workers (failpoints name it)."""
        with self.lock:
            self.begun += 1
            return self.begun

    def batch_done(self, count: int, seconds: float, size: int, conflicted: bool) -> int:
        with self.lock:
            self.slowest = max(self.slowest, seconds)
            self.batches += 1
            self.done_here += count
            self.rows_done += count
            self.conflicts += conflicted
            elapsed = time.monotonic() - self.started
            self.reporter.batch(
                self.phase_name,
                BatchReport(
                    rows_done=self.rows_done,
                    rows_total=self.rows_total,
                    batch_rows=count,
                    batch_seconds=seconds,
                    batch_size=size,
                    rows_per_second=self.done_here / elapsed if elapsed > 0 else 0.0,
                ),
            )
            return self.batches


def _at_or_past(
    conn: psycopg.Connection[Any], step: BackfillStep, key: list[str], hi: list[str]
) -> bool:
    """Whether `key` >= `hi` in the key's own order (types, collations: the server decides)."""
    row = conn.execute(
        psycopg.sql.SQL("SELECT {} >= {}").format(step.key_value(key), step.key_value(hi))
    ).fetchone()
    return bool(row and row[0])


def _walk(
    run: _Run,
    conn: psycopg.Connection[Any],
    key_range: KeyRange,
    size: int,
    range_index: int | None,
) -> int:
    """Walk one key range batch by batch, from its last key (or its lower end) to its upper
    end. `range_index` None: the whole key in one walk, the checkpoint is the walk's own (the
    form of one worker); otherwise the walk writes entry `range_index` of the ranges. Returns
    the batch size the next range of this worker starts with (the one this walk arrived at)."""
    step = run.step
    last = key_range.last if key_range.last is not None else key_range.lo
    hi = key_range.hi
    recent: deque[tuple[int, float]] = deque(maxlen=RECENT_BATCHES - 1)
    # a table copy's batches run without ON CONFLICT first, and again with it on a conflict
    on_conflict = step.on_conflict if isinstance(step, CopyStep) else None
    # a table copy's delete fence runs after each batch (phases/delete_fence.py); `seen` is the
    # deletes counter as this walk's last fence read it
    fence = step.fence if isinstance(step, CopyStep) else None
    seen: int | None = None
    # While deletes keep the fence sweeping, a copy's batches lock the rows they copy instead,
    # for LOCKED_BATCHES batches (the locked form needs no sweep); `sweeping` counts the
    # batches in a row whose sweep took more than SWEEP_SHARE of the batch's time.
    locked_for = 0
    sweeping = 0
    if fence is not None:
        unswept = key_range.unswept
        ended = key_range.finished and hi is None  # the last batch ran to the open end
        seen, _ = _close_fence(
            run,
            conn,
            fence,
            None,  # a batch committed before a crash: swept whatever the counter says
            (unswept[0], None if ended else key_range.last) if unswept is not None else None,
        )
        if key_range.finished:
            _walked(run, conn, range_index)
            return size
    while not run.stop.is_set():
        policy = run.policy()
        size = policy.size or size
        if run.check is not None:
            run.check(conn)
        t0 = time.monotonic()
        number = run.number()

        def one_batch(
            size: int = size,
            last: list[str] | None = last,
            number: int = number,
            safe: bool = False,
            locked: bool = False,
        ) -> tuple[list[str] | None, int, bool]:
            with conn.transaction():
                # a batch is bounded by batch_time, not by the server's statement_timeout
                set_timeouts(conn, run.settings.lock_timeout, timedelta(0), local=True)
                # No wait for the WAL flush at commit: a crash can lose only the last batches,
                # and each takes its checkpoint with it, so they are simply redone.
                conn.execute("SET LOCAL synchronous_commit = off")
                for name, value in step.session_settings:
                    conn.execute("SELECT set_config(%s, %s, true)", (name, value))
                if last is None:
                    row = conn.execute(step.first_bounds, (size - 1,)).fetchone()
                else:
                    row = conn.execute(step.bounds, (*last, size - 1)).fetchone()
                upper = list(row) if row else None
                if hi is not None and (upper is None or _at_or_past(conn, step, upper, hi)):
                    upper = hi  # the range's end: the next range goes on from there
                finished = upper is None or upper == hi  # the open end, or the range's own
                condition = step.condition(
                    step.key_value(last) if last is not None else None,
                    step.key_value(upper) if upper is not None else None,
                )
                # a fenced step always has its locked forms (phases/backfill.py's _copy_step)
                forms = step.unfenced if locked and isinstance(step, CopyStep) else step
                assert forms is not None
                safe_form = forms.on_conflict if isinstance(forms, CopyStep) else None
                form = safe_form if safe and safe_form is not None else forms.statement
                cur = conn.execute(form(condition))
                count = max(cur.rowcount, 0)
                failpoint(f"{run.phase_name}:batch:{number}:in-transaction")
                # the same, naming the step: one of several tables' backfills
                failpoint(f"{run.phase_name}:{run.steps_done}:batch:{number}:in-transaction")
                reached = upper if upper is not None else last
                # with a fence, the batch's range stays unswept until its fence has run
                pending = (last,) if fence is not None and not locked else None
                unswept = {"unswept": last} if pending is not None else {}
                if range_index is None:
                    run.store.checkpoint(
                        conn,
                        run.migration,
                        run.phase_idx,
                        {
                            "last": reached,
                            "size": size,
                            "finished": finished,
                            "step": run.steps_done,
                            **unswept,
                        },
                        count,
                        run.steps_done + 1 if finished and fence is None else None,
                    )
                else:
                    run.store.checkpoint(
                        conn,
                        run.migration,
                        run.phase_idx,
                        replace(
                            key_range, last=reached, finished=finished, unswept=pending
                        ).entry(),
                        count,
                        None,
                        range_index=range_index,
                        size=size,
                    )
            return upper, count, finished

        conflicted = False
        try:
            upper, count, finished = with_lock_retries(
                partial(one_batch, locked=locked_for > 0),
                attempts=run.settings.lock_retries,
                what=f"{run.phase_name} batch",
                lock_timeout=run.settings.lock_timeout,
            )
        except psycopg.errors.UniqueViolation:
            if on_conflict is None:
                raise
            # a copy the trigger committed meanwhile: the same range again, whole, in the form
            # that lets such copies win (see phases/backfill.py's CopyStep)
            conflicted = True
            upper, count, finished = with_lock_retries(
                partial(one_batch, safe=True, locked=locked_for > 0),
                attempts=run.settings.lock_retries,
                what=f"{run.phase_name} batch",
                lock_timeout=run.settings.lock_timeout,
            )
        seconds = time.monotonic() - t0
        done = run.batch_done(count, seconds, size, conflicted)
        failpoint(f"{run.phase_name}:batch:{done}")
        if fence is not None and locked_for > 0:
            locked_for -= 1
            if locked_for == 0:  # the next batch is fenced again: the counter before it
                seen, _ = _close_fence(run, conn, fence, seen, None)
        elif fence is not None:
            seen, sweep_seconds = _close_fence(run, conn, fence, seen, (last, upper))
            sweeping = sweeping + 1 if sweep_seconds > SWEEP_SHARE * seconds else 0
            if sweeping >= 2:
                log.info(
                    "deletes keep the delete fence sweeping: the next batches lock their rows",
                    migration=run.migration,
                    batches=LOCKED_BATCHES,
                )
                locked_for, sweeping = LOCKED_BATCHES, 0
        size = policy.next_size(size, count, seconds, recent)
        if finished:
            if fence is not None:
                _walked(run, conn, range_index)
            return size
        last = upper
        recent.append((count, seconds))
        run.throttle.nice(seconds)
        if policy.pause > timedelta(0):
            time.sleep(policy.pause.total_seconds())
    return size


def _close_fence(
    run: _Run,
    conn: psycopg.Connection[Any],
    fence: DeleteFence,
    seen: int | None,
    swept: tuple[list[str] | None, list[str] | None] | None,
) -> tuple[int, float]:
    """The delete fence: its lock, in a transaction of its own (waited for under
    lock_timeout, retried like any lock wait), and the deletes counter; then, when the counter
    is not `seen`, the sweep of the key range `swept` (lower, upper], either end open (None),
    in a transaction after it. Returns the counter and the sweep's seconds. Why this is
    enough: phases/delete_fence.py."""
    step = run.step

    def close() -> int:
        with conn.transaction():
            set_timeouts(conn, run.settings.lock_timeout, timedelta(0), local=True)
            row = conn.execute(fence.close).fetchone()
            return int(row[0]) if row else 0

    def sweep(lower: list[str] | None, upper: list[str] | None) -> int:
        with conn.transaction():
            set_timeouts(conn, run.settings.lock_timeout, timedelta(0), local=True)
            conn.execute("SET LOCAL synchronous_commit = off")  # a lost sweep is run again
            for name, value in step.session_settings:
                conn.execute("SELECT set_config(%s, %s, true)", (name, value))
            condition = step.condition(
                step.key_value(lower) if lower is not None else None,
                step.key_value(upper) if upper is not None else None,
            )
            found = conn.execute(fence.ghosts(condition)).fetchall()
            if not found:
                return 0
            oids, tids = [r[0] for r in found], [str(r[1]) for r in found]
            return max(conn.execute(fence.sweep, (oids, tids)).rowcount, 0)

    counter = with_lock_retries(
        close,
        attempts=run.settings.lock_retries,
        what=f"{run.phase_name} delete fence",
        lock_timeout=run.settings.lock_timeout,
    )
    began = time.monotonic()
    if swept is not None and counter != seen:
        gone = with_lock_retries(
            lambda: sweep(*swept),
            attempts=run.settings.lock_retries,
            what=f"{run.phase_name} sweep",
            lock_timeout=run.settings.lock_timeout,
        )
        if gone:
            log.info("backfill swept deleted rows", migration=run.migration, rows=gone)
            with run.lock:
                run.swept += gone
    return counter, time.monotonic() - began


def _walked(run: _Run, conn: psycopg.Connection[Any], range_index: int | None) -> None:
    """A fenced walk has ended: the whole key's walk marks its step done now that its last
    fence has run (a walk of one key range leaves that to run_backfill)."""
    if range_index is None:
        with conn.transaction():
            run.store.step_done(conn, run.migration, run.phase_idx, run.steps_done + 1)


def _unfenced_if_older(conn: psycopg.Connection[Any], step: BackfillStep) -> BackfillStep:
    """The copy with row locks when the live table's copy trigger does not call the delete
    fence (installed by a pgshift without it, for a migration begun before)."""
    if not isinstance(step, CopyStep) or step.fence is None or step.unfenced is None:
        return step
    row = conn.execute(step.fence.installed).fetchone()
    if row and row[0]:
        return step
    log.info("copy trigger predates the delete fence: the batches lock the rows they copy")
    return step.unfenced


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
    workers: int = 1,
    connect: Callable[[], psycopg.Connection[Any]] | None = None,
) -> BackfillOutcome:
    """`check` runs before every batch (the rows the triggers could not map: one indexed
    query) and stops the backfill by raising. With `workers` above 1 and `connect` (a new
    connection to the same database), key ranges are walked side by side."""
    saved = checkpoint if isinstance(checkpoint, dict) else {}
    size = policy.size or int(saved.get("size", AUTO_START))
    step = _unfenced_if_older(conn, step)
    run = _Run(
        step=step,
        store=store,
        migration=migration,
        phase_idx=phase_idx,
        phase_name=phase_name,
        steps_done=steps_done,
        settings=settings,
        planned=policy,
        throttle=throttle,
        reporter=reporter,
        check=check,
        rows_done=rows_done,
        rows_total=rows_total,
    )
    reporter.backfill_started(phase_name, rows_done, rows_total)
    used = 1
    try:
        ranges: list[KeyRange] | None = None
        if "ranges" in saved:
            ranges = [KeyRange.of(entry) for entry in saved["ranges"]]
        elif not saved and workers > 1 and connect is not None:
            ranges = split_key_ranges(conn, step, workers * 2)
            if len(ranges) > 1:
                # the ranges are kept before any batch, so a resume walks the same ones
                with conn.transaction():
                    store.set_checkpoint(
                        conn,
                        migration,
                        phase_idx,
                        {"ranges": [r.entry() for r in ranges], "size": size, "step": steps_done},
                    )
            else:
                ranges = None  # too small to split
        if ranges is None:
            # one walk over the whole key, its checkpoint the walk's own (as it always was)
            whole = KeyRange(
                lo=None,
                hi=None,
                last=saved.get("last"),
                finished=bool(saved.get("finished")),
                unswept=(saved["unswept"],) if "unswept" in saved else None,
            )
            if not whole.finished or whole.unswept is not None:
                _walk(run, conn, whole, size, None)
        else:
            used = _walk_ranges(run, conn, ranges, size, workers, connect)
            with conn.transaction():
                store.step_done(conn, migration, phase_idx, steps_done + 1)
    finally:
        reporter.backfill_finished()
    return BackfillOutcome(
        rows=run.done_here,
        batches=run.batches,
        seconds=time.monotonic() - run.started,
        slowest_batch_seconds=run.slowest,
        conflict_retries=run.conflicts,
        workers=used,
        swept=run.swept,
    )


def _walk_ranges(
    run: _Run,
    conn: psycopg.Connection[Any],
    ranges: list[KeyRange],
    size: int,
    workers: int,
    connect: Callable[[], psycopg.Connection[Any]] | None,
) -> int:
    """Walk the unfinished `ranges` with up to `workers` threads, each on a connection of its
    own (the main one stays the throttle's); how many walked. The first failure stops the
    others after their current batch and is raised."""
    todo = deque((i, r) for i, r in enumerate(ranges) if not r.finished or r.unswept is not None)
    if not todo:
        return 0
    with ExitStack() as stack:
        conns: list[psycopg.Connection[Any]] = []
        opener = connect
        for _ in range(min(workers, len(todo)) if opener is not None else 0):
            try:
                assert opener is not None
                conns.append(stack.enter_context(opener()))
            except psycopg.OperationalError as error:
                # too many connections, say: fewer workers, only slower
                log.warning(
                    "backfill worker connection refused",
                    migration=run.migration,
                    reason=str(error).strip().splitlines()[0],
                    workers=len(conns),
                )
                break
        if not conns:
            # no connection to spare: the ranges one after another on the main connection
            while todo:
                index, key_range = todo.popleft()
                size = _walk(run, conn, key_range, size, index)
            return 1
        queue_lock = threading.Lock()

        def work(own: psycopg.Connection[Any]) -> None:
            mine = size  # each worker's batch size carries over from one range to its next
            while not run.stop.is_set():
                with queue_lock:
                    if not todo:
                        return
                    index, key_range = todo.popleft()
                try:
                    mine = _walk(run, own, key_range, mine, index)
                except BaseException:
                    run.stop.set()
                    raise

        pool = stack.enter_context(ThreadPoolExecutor(len(conns), "pgshift-backfill"))
        futures = [pool.submit(work, own) for own in conns]
        failures = [f.exception() for f in futures]
        for failure in failures:
            if failure is not None:
                raise failure
        return len(conns)
