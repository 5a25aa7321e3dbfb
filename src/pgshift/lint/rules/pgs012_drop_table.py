"""PGS012 drop-table: DROP TABLE of a live table.

Every deployed query that still uses the table fails, and its data is gone. The safe way: first
deploy code that no longer uses it (rename it away or revoke access and wait), then drop it in
a later release. A table the same run created is exempt.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from pgshift.lint.model import Rule
from pgshift.lint.sqlfacts import range_var, range_var_name, strings
from pgshift.lint.state import State, Unit

RULE = Rule("PGS012", "drop-table", "DROP TABLE of a live table")
NODES = (ast.DropStmt,)


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, ast.DropStmt) or unit.removeType != enums.ObjectType.OBJECT_TABLE:
        return
    objects = [strings(o) for o in unit.objects or () if isinstance(o, tuple)]
    live = [
        t
        for t in (range_var(o) for o in objects if o)
        if not state.new_tables.contains_range_var(t)
    ]
    if live:
        names = ", ".join(range_var_name(t) for t in live)
        yield (
            f"DROP TABLE {names} breaks every deployed query that still uses it, and its data is "
            "gone; instead first deploy code that no longer uses it (rename it away or revoke "
            "access and wait), then drop it in a later release"
        )
