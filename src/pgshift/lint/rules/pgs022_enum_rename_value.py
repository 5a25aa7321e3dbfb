"""PGS022 enum-rename-value: ALTER TYPE ... RENAME VALUE of a live enum.

RENAME VALUE is instant and locks only the type, but from that moment every deployed query that
writes or compares the old label fails ("invalid input value for enum"). An enum value can
never be dropped, so the same holds for any plan to replace one. The safe way: ADD VALUE the new
label, deploy code that accepts both, move the rows over in batches, then stop writing the old
label (or move the column to a new type with a pgshift `columns` migration).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from pgshift.lint.model import Rule
from pgshift.lint.rules.pgs021_enum_value_used_too_soon import enum_name
from pgshift.lint.state import State, Unit

RULE = Rule("PGS022", "enum-rename-value", "ALTER TYPE ... RENAME VALUE of a live enum")
NODES = (ast.AlterEnumStmt,)


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, ast.AlterEnumStmt) or unit.oldVal is None:
        return
    name = enum_name(unit)
    if name.rpartition(".")[2].lower() in state.new_types:
        return
    yield (
        f"ALTER TYPE {name} RENAME VALUE '{unit.oldVal}' TO '{unit.newVal}' breaks every "
        "deployed query that still writes or compares the old label; instead ADD VALUE "
        f"'{unit.newVal}', deploy code that accepts both, move the rows over in batches, then "
        "stop writing the old label"
    )
