"""PGS023 exclusion-constraint: ADD CONSTRAINT ... EXCLUDE on an existing table.

An exclusion constraint builds its index and checks every row under an ACCESS EXCLUSIVE lock,
and unlike CHECK, FOREIGN KEY or UNIQUE it has no online form: it can be neither NOT VALID nor
USING INDEX. The safe way: create a new table that has the constraint and copy the rows into it
with a pgshift `new_table` migration (online backfill, swap at cutover); or, on a small table,
accept the block with lock_timeout and statement_timeout set.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from pgshift.lint.model import Rule
from pgshift.lint.state import AlterCommand, State, Unit

RULE = Rule("PGS023", "exclusion-constraint", "ADD CONSTRAINT ... EXCLUDE on an existing table")
NODES = (AlterCommand,)


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, AlterCommand) or unit.is_new:
        return
    con = unit.cmd.def_
    if unit.cmd.subtype != enums.AlterTableType.AT_AddConstraint:
        return
    if not isinstance(con, ast.Constraint) or con.contype != enums.ConstrType.CONSTR_EXCLUSION:
        return
    name = f"{con.conname} " if con.conname else ""
    yield (
        f"ADD CONSTRAINT {name}EXCLUDE on {unit.table} builds its index and checks "
        "every row under an ACCESS EXCLUSIVE lock, and an exclusion constraint can be neither NOT "
        "VALID nor USING INDEX; instead copy the table into one that has the constraint with a "
        "pgshift `new_table` migration"
    )
