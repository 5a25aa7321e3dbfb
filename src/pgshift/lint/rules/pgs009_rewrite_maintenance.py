"""PGS009 rewrite-maintenance: VACUUM FULL / CLUSTER / REINDEX without CONCURRENTLY.

VACUUM FULL and CLUSTER rewrite the table under an ACCESS EXCLUSIVE lock; REINDEX blocks writes
to the table and reads through the index. The safe ways: pg_repack or pg_squeeze (online),
plain VACUUM, REINDEX CONCURRENTLY (outside a transaction block).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from pgshift.lint.model import Rule
from pgshift.lint.state import State, Unit
from pgshift.lint.statements import blocking_maintenance

RULE = Rule("PGS009", "rewrite-maintenance", "VACUUM FULL / CLUSTER / REINDEX without CONCURRENTLY")
NODES = (ast.VacuumStmt, ast.ClusterStmt, ast.ReindexStmt)


def check(unit: Unit, state: State) -> Iterator[str]:
    found = blocking_maintenance(unit, state) if isinstance(unit, ast.Node) else None
    if found is None:
        return
    hurts = (
        "blocks writes to the table and reads through the index"
        if found.label == "REINDEX"
        else "rewrites the table under an ACCESS EXCLUSIVE lock"
    )
    yield f"{found.label} on {found.target} {hurts}; {found.instead}"
