"""Run a ShadowReadStep: every query (once, or once per row of `params_query`) on the old shape
and on the new, in one snapshot, and count the runs whose results differ."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pglast
import psycopg
from psycopg import sql

from pgshift.phases.base import ShadowReadStep

MAX_PARAM_ROWS = 10_000
MAX_EXAMPLES = 10


@dataclass
class ShadowReadResult:
    runs: int = 0
    mismatches: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "mismatches": self.mismatches, "examples": self.examples}


def takes_params(query: str) -> bool:
    """A query with a `%s` placeholder runs once per row of `params_query` (and writes a
    literal `%` as `%%` there); any other query runs once, its `%` taken literally."""
    return "%s" in query.replace("%%", "")


def parseable(query: str) -> str:
    """The query as the parser can read it: placeholders become NULLs."""
    if not takes_params(query):
        return query
    return re.sub(r"%(s|%)", lambda m: "NULL" if m.group(1) == "s" else "%", query)


def is_ordered(query: str) -> bool:
    """Whether the query's result order is defined: a top-level ORDER BY."""
    node: Any = pglast.parse_sql(parseable(query))[0].stmt
    return bool(getattr(node, "sortClause", None))


def _difference(old: list[tuple[Any, ...]], new: list[tuple[Any, ...]], ordered: bool) -> Any:
    """None when equal; else a short description with example rows."""
    if ordered:
        if old == new:
            return None
        for position, (a, b) in enumerate(zip(old, new, strict=False)):
            if a != b:
                return {"row": position + 1, "old": _show(a), "new": _show(b)}
        return {"old_rows": len(old), "new_rows": len(new)}
    only_old = Counter(old) - Counter(new)
    only_new = Counter(new) - Counter(old)
    if not only_old and not only_new:
        return None
    return {
        "only_in_old": [_show(r) for r in list(only_old.elements())[:3]],
        "only_in_new": [_show(r) for r in list(only_new.elements())[:3]],
    }


def _show(row: tuple[Any, ...]) -> list[str | None]:
    return [None if v is None else str(v)[:200] for v in row]


def run_shadow_read(conn: psycopg.Connection[Any], step: ShadowReadStep) -> ShadowReadResult:
    result = ShadowReadResult()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute("SELECT current_setting('search_path')").fetchone()
        old_path = str(row[0]) if row else "public"
        new_path = f"{sql.Identifier(step.view_schema).as_string()}, {old_path}"
        params: list[tuple[Any, ...] | None] = [None]
        if step.params_query:
            params = [
                tuple(r) for r in conn.execute(sql.SQL(step.params_query)).fetchmany(MAX_PARAM_ROWS)
            ]
        for query in step.queries:
            ordered = is_ordered(query)
            for values in params if takes_params(query) else [None]:
                runs = []
                for path in (old_path, new_path):
                    conn.execute("SELECT set_config('search_path', %s, true)", (path,))
                    # never prepared: the same text returns other types on the two shapes
                    cur = conn.execute(sql.SQL(query), values, prepare=False)
                    runs.append([tuple(r) for r in cur.fetchall()])
                result.runs += 1
                difference = _difference(runs[0], runs[1], ordered)
                if difference is not None:
                    result.mismatches += 1
                    if len(result.examples) < MAX_EXAMPLES:
                        result.examples.append(
                            {
                                "query": query,
                                "params": None if values is None else _show(values),
                                "ordered": ordered,
                                **difference,
                            }
                        )
    return result
