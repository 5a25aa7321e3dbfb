"""`migrate verify`'s result as a person reads it: the counts, then a table of the differing
keys with the value on each side (the old shape, which is the truth, and the new one)."""

from __future__ import annotations

from typing import Any

from pgshift.verify.diff import Difference, jsonable
from pgshift.verify.rowhash import VerifyResult

SHOWN = 20  # differing keys listed; --json has up to 100
WIDTH = 32  # a value is cut to this many characters


def _cut(value: str | None) -> str:
    if value is None:
        return "NULL"
    return value if len(value) <= WIDTH else value[: WIDTH - 1] + "…"


def _key(difference: Difference) -> str:
    return "(" + ", ".join(str(jsonable(v)) for v in difference.key) + ")"


def _row(values: dict[str, str | None] | None) -> str:
    if not values:
        return ""
    return _cut(", ".join(f"{k}={'NULL' if v is None else v}" for k, v in values.items()))


def _lines_of(difference: Difference) -> list[tuple[str, str, str, str, str]]:
    """(kind, key, column, old value, new value) rows of one differing key."""
    key = _key(difference)
    if difference.kind == "missing":
        return [("missing", key, "(row)", _row(difference.left), "no such row")]
    if difference.kind == "extra":
        return [("extra", key, "(row)", "no such row", _row(difference.right))]
    left, right = difference.left or {}, difference.right or {}
    return [
        ("changed", key, column, _cut(left.get(column)), _cut(right.get(column)))
        for column in difference.columns or tuple(left)
    ]


# What each side of a comparison is: a table migration compares what the plan's mapping makes
# of each live row with what the other shape stores; a move compares the two servers.
TABLE_SIDES = ("expected", "stored")
MOVE_SIDES = ("source", "destination")
_MEANING = {
    TABLE_SIDES: "expected: the plan's mapping of the live row; stored: what the other shape holds",
    MOVE_SIDES: "source: the table on the source server; destination: its copy",
}


def render_verify(result: VerifyResult, sides: tuple[str, str] = TABLE_SIDES) -> str:
    """The summary line, what the sides and the kinds mean, and the first differences."""
    old, new = sides
    headline = (
        f"{result.rows_compared:,} rows compared in {result.chunks:,} chunks,"
        f" {result.seconds:.1f}s: "
    )
    if not result.differences:
        return headline + "no differences"
    lines = [
        headline + f"{result.differences:,} difference(s): {result.missing:,} missing,"
        f" {result.extra:,} extra, {result.changed:,} changed",
        f"({_MEANING.get(sides, f'{old} and {new}')}; missing: a key only {old} has; extra: a"
        f" key only {new} has; changed: a key on both with a different value)",
        "",
    ]
    rows: list[tuple[str, str, str, str, str]] = [("difference", "key", "column", old, new)]
    for difference in result.examples[:SHOWN]:
        rows += _lines_of(difference)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:4])] + [row[4]]
        lines.append("  " + "  ".join(cells).rstrip())
    more = result.differences - min(len(result.examples), SHOWN)
    if more > 0:
        lines.append(f"  ... and {more:,} more (`--json` lists up to 100 keys)")
    return "\n".join(lines)


def verify_json(result: VerifyResult, sides: tuple[str, str]) -> dict[str, Any]:
    """`--json`: the result, with which side `left` and `right` are."""
    data = result.to_json()
    data["sides"] = {"left": sides[0], "right": sides[1]}
    return data
