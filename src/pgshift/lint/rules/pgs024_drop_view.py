"""PGS024 drop-view: DROP VIEW / MATERIALIZED VIEW of a live view, not created again.

Every deployed query that reads the view fails once the drop commits. Views are mostly dropped
only to be created again with other columns, in the same migration: a migration tool runs the
file in one transaction, so queries wait on the lock (keep lock_timeout set) instead of
failing; that is not reported. A view dropped for good: first deploy code that no longer reads
it. A view the same run created is exempt.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from pgshift.lint.model import Rule
from pgshift.lint.sqlfacts import range_var, range_var_name, strings
from pgshift.lint.state import State, Unit

# A warning: a drop may be deliberate, once no deployed code reads the view.
RULE = Rule("PGS024", "drop-view", "DROP VIEW of a live view", "warning")
NODES = (ast.DropStmt,)


_OBJ = enums.ObjectType


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, ast.DropStmt) or unit.removeType not in (
        _OBJ.OBJECT_VIEW,
        _OBJ.OBJECT_MATVIEW,
    ):
        return
    views = [range_var(strings(o)) for o in unit.objects or () if isinstance(o, tuple) and o]
    live = [
        v
        for v in views
        if not state.new_views.contains_range_var(v)
        and not state.views_in_text.contains_range_var(v)
    ]
    if not live:
        return
    what = "DROP VIEW" if unit.removeType == _OBJ.OBJECT_VIEW else "DROP MATERIALIZED VIEW"
    yield (
        f"{what} {', '.join(range_var_name(v) for v in live)} breaks every deployed query that "
        "reads it, and this migration does not create it again; instead first deploy code that "
        "no longer reads it, then drop it in a later release"
    )
