"""PGS021 enum-value-used-too-soon: a value added by ALTER TYPE ... ADD VALUE, used in the same
file or transaction.

ADD VALUE locks only the type, so it blocks no reads or writes. But PostgreSQL refuses to use
the new value until the transaction that added it commits ("unsafe use of new value"), and most
migration tools run each file in one transaction (as does a DO block, and BEGIN ... COMMIT):
an UPDATE or INSERT of the new label later in the same file fails, though it may pass where the
file runs statement by statement. (Before PostgreSQL 12, ADD VALUE inside a transaction block
failed outright.) The safe way: add the value in a migration of its own, and use it from the
next one.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from pgshift.lint.model import Rule
from pgshift.lint.sqlfacts import strings, walk
from pgshift.lint.state import State, Unit

RULE = Rule(
    "PGS021",
    "enum-value-used-too-soon",
    "enum value used in the file or transaction that added it",
)
NODES = (ast.Node,)  # any statement may use the new value


def check(unit: Unit, state: State) -> Iterator[str]:
    if not state.added_enum_values or not isinstance(unit, ast.Node):
        return
    if isinstance(unit, ast.AlterEnumStmt | ast.DoStmt):
        return  # a DO block's statements are checked one by one
    used = sorted(
        {
            node.val.sval
            for node in walk(unit)
            if isinstance(node, ast.A_Const)
            and isinstance(node.val, ast.String)
            and node.val.sval in state.added_enum_values
        }
    )
    for value in used:
        added = state.added_enum_values[value]
        yield (
            f"'{value}' was added to {added} by ALTER TYPE ... ADD VALUE earlier in this file: "
            "PostgreSQL refuses to use it until that transaction commits (unsafe use of new "
            "value), and a migration tool runs the file in one transaction; instead add the "
            "value in a migration of its own and use it from the next one"
        )


def enum_name(node: ast.AlterEnumStmt) -> str:
    return ".".join(strings(node.typeName or ()))
