"""Run a row-hash verification of a migration: checkpointed after every chunk (so a verify
interrupted half-way goes on from its last key), throttled and pausable like the backfill.

With the plan's `workers` setting above 1, that many chunks are compared at once; chunks are
still reported, checkpointed and throttled in key order, between chunks, so the checkpoint is
always a key below which everything is compared."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import psycopg

from pgshift.compile import CompiledPlan
from pgshift.engine.failpoints import failpoint
from pgshift.engine.progress import BatchReport, Reporter
from pgshift.engine.throttle import Throttle
from pgshift.verify.plan_sides import comparison
from pgshift.verify.rowhash import ChunkProgress, VerifyResult, compare_same_db


def run_verify(
    conn: psycopg.Connection[Any],
    compiled: CompiledPlan,
    *,
    chunk_size: int,
    throttle: Throttle | None,
    reporter: Reporter,
    checkpoint: dict[str, Any] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    workers: int | None = None,
) -> VerifyResult:
    """Compare the migration's shapes now. `checkpoint` (from `save`) resumes after its key;
    the counts found before are carried into the result. `workers` (default: the plan's
    setting) is how many chunks are compared at once."""
    what = comparison(conn, compiled)
    reporter.event(
        "verify started", migration=compiled.plan.name, stage=what.stage, columns=list(what.columns)
    )
    earlier = checkpoint or {}
    start_after = tuple(earlier["last_key"]) if earlier.get("last_key") else None
    base = {k: int(earlier.get(k, 0)) for k in ("rows_compared", "missing", "extra", "changed")}
    total = compiled.table.row_estimate if compiled.table.row_estimate > 0 else None
    reporter.backfill_started("verify", base["rows_compared"], total)
    started = time.monotonic()
    chunk_started = [started]

    def on_chunk(progress: ChunkProgress) -> None:
        rows = base["rows_compared"] + progress.rows_compared
        if save is not None and progress.last_key is not None:
            save(
                {
                    "last_key": json.loads(json.dumps(list(progress.last_key), default=str)),
                    "rows_compared": rows,
                    "missing": base["missing"] + progress.missing,
                    "extra": base["extra"] + progress.extra,
                    "changed": base["changed"] + progress.changed,
                    "stage": what.stage,
                }
            )
        reporter.batch(
            "verify",
            BatchReport(
                rows_done=rows,
                rows_total=total,
                batch_rows=0,
                batch_seconds=0.0,
                batch_size=chunk_size,
                rows_per_second=progress.rows_compared / max(time.monotonic() - started, 1e-6),
            ),
            work="verify",
        )
        failpoint(f"verify:chunk:{progress.chunks}")
        if throttle is not None and not progress.done:
            throttle.nice(time.monotonic() - chunk_started[0])
            throttle.wait()
        chunk_started[0] = time.monotonic()

    try:
        result = compare_same_db(
            conn,
            what.left,
            what.right,
            chunk_size=chunk_size,
            on_chunk=on_chunk,
            start_after=start_after,
            workers=workers or compiled.plan.settings.workers,
        )
    finally:
        reporter.backfill_finished()
    result.rows_compared += base["rows_compared"]
    result.missing += base["missing"]
    result.extra += base["extra"]
    result.changed += base["changed"]
    return result
