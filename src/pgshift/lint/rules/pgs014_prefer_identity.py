"""PGS014 prefer-identity: serial / bigserial instead of an identity column.

A serial's sequence is a separate object with its own owner and grants, and copies of the
table (CREATE TABLE ... LIKE, a pgshift `new_table`) share it. The safe way: bigint GENERATED
ALWAYS AS IDENTITY.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from pgshift.lint.model import Rule
from pgshift.lint.sqlfacts import SERIAL_TYPES
from pgshift.lint.state import AlterCommand, State, Unit
from pgshift.lint.statements import declared_columns

RULE = Rule(
    "PGS014", "prefer-identity", "serial / bigserial instead of an identity column", "warning"
)
NODES = (ast.CreateStmt, AlterCommand)


def check(unit: Unit, state: State) -> Iterator[str]:
    for declared in declared_columns(unit, state):
        name = declared.kind.name
        if name in SERIAL_TYPES:
            yield (
                f"{declared.where} is {name}: its sequence is a separate object with its own "
                "owner and grants, and copies of the table share it; instead declare it bigint "
                "GENERATED ALWAYS AS IDENTITY"
            )
