"""Split a table's key into ranges of about equal row counts, for backfill workers.

The split points come from a sample of the table's pages (TABLESAMPLE SYSTEM, a few hundred
pages whatever the table's size), sorted by the key on the server: cheap on a billion rows and
close enough to equal, since workers take the ranges one after another and finish together
anyway. Rows written after the split fall into whichever range holds their key; the last range
is open upwards, so keys above every sampled one are walked too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgshift.phases.base import BackfillStep

# Pages read for the sample: enough keys for even ranges, few enough to take milliseconds.
SAMPLE_PAGES = 400
# Below this many pages the table is walked in one range: workers would gain nothing.
MIN_PAGES = 64


@dataclass(frozen=True)
class KeyRange:
    """The keys (lo, hi], either end open (None), and how far the walk got: its last key
    (None: not started) and whether it is finished. Keys are lists of their columns as text."""

    lo: list[str] | None
    hi: list[str] | None
    last: list[str] | None = None
    finished: bool = False
    # a table copy's last batch whose delete fence may not have run: (its lower key, None
    # from the start), to (last] (phases/delete_fence.py)
    unswept: tuple[list[str] | None] | None = None

    def entry(self) -> dict[str, Any]:
        """The range as kept in the phase's checkpoint."""
        entry = {"lo": self.lo, "hi": self.hi, "last": self.last, "finished": self.finished}
        if self.unswept is not None:
            entry["unswept"] = self.unswept[0]
        return entry

    @classmethod
    def of(cls, entry: dict[str, Any]) -> KeyRange:
        return cls(
            lo=entry.get("lo"),
            hi=entry.get("hi"),
            last=entry.get("last"),
            finished=bool(entry.get("finished")),
            unswept=(entry["unswept"],) if "unswept" in entry else None,
        )


def split_key_ranges(
    conn: psycopg.Connection[Any], step: BackfillStep, parts: int
) -> list[KeyRange]:
    """Up to `parts` ranges covering the whole key (one when the table is small or empty)."""
    table = step.table.as_string(conn)
    row = conn.execute(
        "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::bigint",
        (table,),
    ).fetchone()
    pages = int(row[0]) if row and row[0] is not None else 0
    if parts < 2 or pages < MIN_PAGES:
        return [KeyRange(lo=None, hi=None)]
    sample = sql.Identifier("pgshift_sample")
    # ORDER BY the sampled table's own columns, qualified: a bare name would mean the output
    # column `k::text` and sort the keys as text
    query = sql.SQL(
        "SELECT {as_text} FROM {t} AS {sample} TABLESAMPLE SYSTEM ({percent}) ORDER BY {order}"
    ).format(
        as_text=sql.SQL(", ").join(
            sql.SQL("{}.{}::text").format(sample, sql.Identifier(c)) for c in step.key
        ),
        t=step.table,
        sample=sample,
        percent=sql.Literal(min(100.0, 100.0 * SAMPLE_PAGES / pages)),
        order=sql.SQL(", ").join(
            sql.SQL("{}.{}").format(sample, sql.Identifier(c)) for c in step.key
        ),
    )
    keys = [list(k) for k in conn.execute(query).fetchall()]
    if len(keys) < parts:
        return [KeyRange(lo=None, hi=None)]
    cuts = [keys[len(keys) * i // parts] for i in range(1, parts)]
    bounds: list[list[str] | None] = [None, *cuts, None]
    return [KeyRange(lo=bounds[i], hi=bounds[i + 1]) for i in range(parts)]
