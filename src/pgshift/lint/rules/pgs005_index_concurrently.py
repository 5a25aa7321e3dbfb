"""PGS005 index-concurrently: CREATE / DROP INDEX without CONCURRENTLY.

CREATE INDEX takes a SHARE lock for the whole build: every write to the table waits. DROP INDEX
takes ACCESS EXCLUSIVE: reads wait too. The safe way is the CONCURRENTLY form of each, run
outside a transaction block. An index on a table the same run created is exempt.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from pgshift.lint.model import Rule
from pgshift.lint.sqlfacts import range_var_name, strings
from pgshift.lint.state import State, Unit

RULE = Rule("PGS005", "index-concurrently", "CREATE / DROP INDEX without CONCURRENTLY")
NODES = (ast.IndexStmt, ast.DropStmt)


def check(unit: Unit, state: State) -> Iterator[str]:
    if isinstance(unit, ast.IndexStmt):
        if unit.concurrent or state.new_tables.contains_range_var(unit.relation):
            return
        name = f"{unit.idxname} " if unit.idxname else ""
        yield (
            f"CREATE INDEX {name}on {range_var_name(unit.relation)} without CONCURRENTLY blocks "
            "every write to the table (SHARE lock) for the whole build; instead CREATE INDEX "
            "CONCURRENTLY (outside a transaction block)"
        )
    elif isinstance(unit, ast.DropStmt) and unit.removeType == enums.ObjectType.OBJECT_INDEX:
        if unit.concurrent or dropped_indexes_are_new(unit, state):
            return
        names = ", ".join(".".join(o) for o in _objects(unit))
        yield (
            f"DROP INDEX {names} without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on its "
            "table, blocking reads and writes; instead DROP INDEX CONCURRENTLY"
        )


def dropped_indexes_are_new(node: ast.DropStmt, state: State) -> bool:
    return all(o and o[-1].lower() in state.new_indexes for o in _objects(node))


def _objects(node: ast.DropStmt) -> list[list[str]]:
    return [strings(o) for o in node.objects or () if isinstance(o, tuple)]
