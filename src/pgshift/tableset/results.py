"""Several tables' verify results as one: counts added up; each example's key starts with its
table, as a move's do (move/verify.py)."""

from __future__ import annotations

from typing import Any

from pgshift.verify.diff import Difference
from pgshift.verify.rowhash import VerifyResult

EXAMPLES_PER_TABLE = 20


def summed(results: list[tuple[str, VerifyResult]], label: bool = True) -> VerifyResult:
    """One table's result as it is; several tables' added up (`label`: each example's key
    starting with its table)."""
    if len(results) == 1:
        return results[0][1]
    total = VerifyResult()
    for table, r in results:
        total.rows_compared += r.rows_compared
        total.chunks += r.chunks
        total.missing += r.missing
        total.extra += r.extra
        total.changed += r.changed
        total.seconds += r.seconds
        total.examples += [
            Difference(d.kind, (table, *d.key) if label else d.key, d.columns, d.left, d.right)
            for d in r.examples[:EXAMPLES_PER_TABLE]
        ]
    return total


def result_of(data: dict[str, Any]) -> VerifyResult:
    """A result as `VerifyResult.to_json` wrote it (its counts; the examples as written)."""
    found = data.get("differences") or {}
    return VerifyResult(
        rows_compared=int(data.get("rows_compared", 0)),
        chunks=int(data.get("chunks", 0)),
        missing=int(found.get("missing", 0)),
        extra=int(found.get("extra", 0)),
        changed=int(found.get("changed", 0)),
        examples=[
            Difference(e["kind"], tuple(e["key"]), tuple(e["columns"]), e["left"], e["right"])
            for e in data.get("examples", [])
        ],
        seconds=float(data.get("seconds", 0.0)),
    )
