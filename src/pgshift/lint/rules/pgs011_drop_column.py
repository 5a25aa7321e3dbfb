"""PGS011 drop-column: ALTER TABLE ... DROP COLUMN on a live table.

Dropping a column is instant, but every deployed query that still reads or writes it fails
from that moment, and its data is gone. The safe way: first deploy code that no longer uses the
column, then drop it in a later release (a pgshift migration's contract phase drops the old
column only after the new code is out).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import enums

from pgshift.lint.model import Rule
from pgshift.lint.state import AlterCommand, State, Unit

RULE = Rule("PGS011", "drop-column", "ALTER TABLE ... DROP COLUMN on a live table")
NODES = (AlterCommand,)


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, AlterCommand) or unit.is_new:
        return
    if unit.cmd.subtype == enums.AlterTableType.AT_DropColumn:
        yield (
            f"DROP COLUMN {unit.cmd.name} on {unit.table} breaks every deployed query that still "
            "reads or writes it, and its data is gone; instead first deploy code that no longer "
            "uses the column, then drop it in a later release (or let a pgshift migration's "
            "contract phase drop it)"
        )
