"""PGS017 prefer-jsonb: json column instead of jsonb.

json is stored as text and re-parsed on every use, has no equality operator (DISTINCT, GROUP
BY, UNIQUE fail) and no GIN index. The safe way: jsonb.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from pgshift.lint.model import Rule
from pgshift.lint.state import AlterCommand, State, Unit
from pgshift.lint.statements import declared_columns

RULE = Rule("PGS017", "prefer-jsonb", "json column instead of jsonb", "warning")
NODES = (ast.CreateStmt, AlterCommand)


def check(unit: Unit, state: State) -> Iterator[str]:
    for declared in declared_columns(unit, state):
        if declared.kind.name == "json":
            yield (
                f"{declared.where} is json: it is stored as text, re-parsed on every use, has no "
                "equality operator (DISTINCT, GROUP BY, UNIQUE fail) and no GIN index; instead "
                "declare it jsonb"
            )
