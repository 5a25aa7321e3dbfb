"""PGS025 drop-constraint: ALTER TABLE ... DROP CONSTRAINT on a live table.

The drop itself is instant (under an ACCESS EXCLUSIVE lock: keep lock_timeout set), but the
data loses that guard at once, and code that relies on the constraint breaks: an INSERT ... ON
CONFLICT naming its columns fails when a unique key goes. The safe way: first deploy code that
no longer relies on it, then drop it in a later release. To change a constraint, add the new
one (NOT VALID, then VALIDATE) before dropping the old one.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import enums

from pgshift.lint.model import Rule
from pgshift.lint.state import AlterCommand, State, Unit

# A warning: most drops are deliberate, and the lock is PGS008's.
RULE = Rule(
    "PGS025", "drop-constraint", "ALTER TABLE ... DROP CONSTRAINT on a live table", "warning"
)
NODES = (AlterCommand,)


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, AlterCommand) or unit.is_new:
        return
    if unit.cmd.subtype == enums.AlterTableType.AT_DropConstraint:
        yield (
            f"DROP CONSTRAINT {unit.cmd.name} on {unit.table} removes its guard on the data at "
            "once and breaks code that relies on it (ON CONFLICT on a unique key); instead first "
            "deploy code that no longer relies on it, and add any replacement (NOT VALID, then "
            "VALIDATE) before the drop"
        )
