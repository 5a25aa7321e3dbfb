"""PGS013 prefer-bigint: integer / smallint primary key or identity column.

An int4 key runs out at 2^31 values (smallint at 2^15), and widening it later rewrites the
table and every table that references it. The safe way: declare keys bigint from the start
(bigint GENERATED ALWAYS AS IDENTITY).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from pgshift.lint.model import Rule
from pgshift.lint.state import AlterCommand, State, Unit
from pgshift.lint.statements import declared_columns

RULE = Rule(
    "PGS013", "prefer-bigint", "integer / smallint primary key or identity column", "warning"
)
NODES = (ast.CreateStmt, AlterCommand)


_SMALL = frozenset(
    {"int2", "int4", "smallint", "integer", "int", "serial", "serial2", "serial4", "smallserial"}
)


def check(unit: Unit, state: State) -> Iterator[str]:
    for declared in declared_columns(unit, state):
        kind = declared.kind
        if (declared.primary_key or declared.identity) and not kind.dims and kind.name in _SMALL:
            yield (
                f"{declared.where} is a {kind.name} key: it runs out at 2^31 (or 2^15) rows, and "
                "widening it later rewrites the table and every referencing one; instead "
                "declare it bigint (GENERATED ALWAYS AS IDENTITY)"
            )
