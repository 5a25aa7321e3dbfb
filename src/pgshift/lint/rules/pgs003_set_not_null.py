"""PGS003 set-not-null: SET NOT NULL without a validated CHECK.

ALTER COLUMN ... SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock, unless a
validated CHECK (col IS NOT NULL) already proves it (PostgreSQL 12+). The safe way: ADD
CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT (reads and writes go on),
then SET NOT NULL, which skips the scan. The same holds for ADD CONSTRAINT ... NOT NULL.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from pgshift.lint.model import Rule
from pgshift.lint.state import AlterCommand, State, Unit
from pgshift.lint.statements import INSTEAD_NOT_VALID

RULE = Rule("PGS003", "set-not-null", "SET NOT NULL without a validated CHECK")
NODES = (AlterCommand,)


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, AlterCommand) or unit.is_new:
        return
    cmd = unit.cmd
    if cmd.subtype == enums.AlterTableType.AT_SetNotNull:
        column = cmd.name or ""
        if (unit.key, column) not in state.proven_not_null:
            yield (
                f"SET NOT NULL on {unit.table}.{column} scans the whole table under an ACCESS "
                f"EXCLUSIVE lock; instead ADD CONSTRAINT ... CHECK ({column} IS NOT NULL) NOT "
                "VALID, VALIDATE CONSTRAINT, then SET NOT NULL"
            )
    elif (
        cmd.subtype == enums.AlterTableType.AT_AddConstraint
        and isinstance(cmd.def_, ast.Constraint)
        and cmd.def_.contype == enums.ConstrType.CONSTR_NOTNULL
        and not cmd.def_.skip_validation
    ):
        yield (
            f"ADD CONSTRAINT ... NOT NULL on {unit.table} scans the whole table under an ACCESS "
            f"EXCLUSIVE lock; {INSTEAD_NOT_VALID}"
        )
