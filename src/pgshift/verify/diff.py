"""Naming differences: compare rows fetched from both sides of a small key range in Python."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pgshift.verify.side import Key

Kind = Literal["missing", "extra", "changed"]

# Per row of one side: key -> the row hashes under that key (more than one only when a side's
# key is not unique, which then shows as missing or extra copies).
Hashes = dict[Key, list[int]]
# Per row of one side: key -> one (md5 of the value, display text) pair per compared column.
Details = dict[Key, tuple[tuple[str, str | None], ...]]


@dataclass
class Difference:
    """One key that differs. `missing`: in the left side (the truth) only; `extra`: in the right
    side only; `changed`: in both, with the differing `columns`. `left` and `right` hold the
    values as text (cut to a display length; None is NULL): every column of a missing or extra
    row, the changed columns of a changed one."""

    kind: Kind
    key: Key
    columns: tuple[str, ...] = ()
    left: dict[str, str | None] | None = None
    right: dict[str, str | None] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": [jsonable(value) for value in self.key],
            "columns": list(self.columns),
            "left": self.left,
            "right": self.right,
        }


def jsonable(value: Any) -> Any:
    """A key value as JSON: numbers and strings as they are, everything else as its text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dt.date | dt.time | dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


def collect_hashes(rows: Iterable[Sequence[Any]], key_width: int) -> Hashes:
    """(key..., hash) rows -> Hashes, keeping the rows' order."""
    found: Hashes = {}
    for row in rows:
        found.setdefault(tuple(row[:key_width]), []).append(int(row[key_width]))
    return found


def collect_details(rows: Iterable[Sequence[Any]], key_width: int) -> Details:
    """(key..., md5, text, md5, text, ...) rows -> Details (the first row of a repeated key)."""
    found: Details = {}
    for row in rows:
        values = row[key_width:]
        found.setdefault(
            tuple(row[:key_width]),
            tuple((values[i], values[i + 1]) for i in range(0, len(values), 2)),
        )
    return found


def diff_hashes(left: Hashes, right: Hashes) -> list[tuple[Kind, Key]]:
    """The keys whose rows differ, left's keys first in left's order, then right-only keys."""
    found: list[tuple[Kind, Key]] = []
    for key, left_hashes in left.items():
        right_hashes = right.get(key)
        if right_hashes is None:
            found.extend(("missing", key) for _ in left_hashes)
            continue
        if left_hashes == right_hashes:
            continue
        # Copies that match cancel; unmatched ones pair up as changed, the rest are surplus.
        only_left = list(left_hashes)
        only_right: list[int] = []
        for h in right_hashes:
            if h in only_left:
                only_left.remove(h)
            else:
                only_right.append(h)
        paired = min(len(only_left), len(only_right))
        found.extend(("changed", key) for _ in range(paired))
        found.extend(("missing", key) for _ in range(len(only_left) - paired))
        found.extend(("extra", key) for _ in range(len(only_right) - paired))
    for key, right_hashes in right.items():
        if key not in left:
            found.extend(("extra", key) for _ in right_hashes)
    return found


def describe(
    kind: Kind, key: Key, names: Sequence[str], left: Details, right: Details
) -> Difference:
    """A Difference with its values, from both sides' per-column details of `key`."""
    left_row = left.get(key)
    right_row = right.get(key)
    if kind == "changed" and left_row is not None and right_row is not None:
        changed = [
            i for i, (lv, rv) in enumerate(zip(left_row, right_row, strict=True)) if lv[0] != rv[0]
        ]
        return Difference(
            kind,
            key,
            tuple(names[i] for i in changed),
            {names[i]: left_row[i][1] for i in changed},
            {names[i]: right_row[i][1] for i in changed},
        )
    return Difference(
        kind,
        key,
        (),
        None if left_row is None else _values(names, left_row),
        None if right_row is None else _values(names, right_row),
    )


def _values(names: Sequence[str], row: Sequence[tuple[str, str | None]]) -> dict[str, str | None]:
    return {name: value[1] for name, value in zip(names, row, strict=True)}
