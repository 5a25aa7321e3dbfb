"""PGS018 prefer-timestamptz: timestamp without time zone column.

A timestamp without time zone means a different instant for each session's time zone. The safe
way: timestamptz, which stores an instant and shows it in the session's zone.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from pgshift.lint.model import Rule
from pgshift.lint.state import AlterCommand, State, Unit
from pgshift.lint.statements import declared_columns

RULE = Rule("PGS018", "prefer-timestamptz", "timestamp without time zone column", "warning")
NODES = (ast.CreateStmt, AlterCommand)


def check(unit: Unit, state: State) -> Iterator[str]:
    for declared in declared_columns(unit, state):
        if declared.kind.name == "timestamp":
            yield (
                f"{declared.where} is timestamp without time zone: its values mean a different "
                "instant for each session time zone; instead declare it timestamptz"
            )
