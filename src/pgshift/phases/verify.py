"""verify: prove, row by row, that the new shape equals the plan's expressions of the old.

Before cutover it compares `up` of each live row with the shadow columns; after cutover, `down`
of each live row with the old columns. Chunks by key range, count and a 64-bit hash sum per
chunk on both sides in one snapshot, bisecting differing chunks down to the rows
(verify/rowhash.py); with the `workers` setting, that many chunks at once. Any difference fails
the phase (exit 4). Nothing to roll back.
"""

from __future__ import annotations

from typing import Any

from pgshift.phases.base import CompileContext, Phase, VerifyStep


def compile_verify(ctx: CompileContext, index: int, spec: Any) -> Phase:
    workers = ctx.plan.settings.workers
    return Phase(
        index=index,
        kind="verify",
        name="verify",
        forward=(
            VerifyStep(
                description="compare every row's new shape with the plan's expressions",
                chunk_size=spec.chunk_size,
            ),
        ),
        rollback=(),
        summary=f"row-hash comparison of ~{max(ctx.table.row_estimate, 0):,} rows,"
        f" {spec.chunk_size:,} keys a chunk"
        + (f", {workers} chunks at once" if workers > 1 else ""),
    )
