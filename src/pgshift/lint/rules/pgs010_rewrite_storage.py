"""PGS010 rewrite-storage: SET LOGGED / UNLOGGED / TABLESPACE / ACCESS METHOD.

Each copies the whole table under an ACCESS EXCLUSIVE lock. The safe way: copy it into a new
table with a pgshift `new_table` migration (online backfill, swap at cutover).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import enums

from pgshift.lint.model import Rule
from pgshift.lint.state import AlterCommand, State, Unit

RULE = Rule("PGS010", "rewrite-storage", "SET LOGGED / UNLOGGED / TABLESPACE / ACCESS METHOD")
NODES = (AlterCommand,)


_AT = enums.AlterTableType
_WHAT = {
    _AT.AT_SetLogged: "SET LOGGED",
    _AT.AT_SetUnLogged: "SET UNLOGGED",
    _AT.AT_SetTableSpace: "SET TABLESPACE",
    _AT.AT_SetAccessMethod: "SET ACCESS METHOD",
}


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, AlterCommand) or unit.is_new:
        return
    what = _WHAT.get(unit.cmd.subtype) if unit.cmd.subtype is not None else None
    if what is not None:
        yield (
            f"ALTER TABLE {unit.table} {what} copies the whole table under an ACCESS EXCLUSIVE "
            "lock; instead copy it into a new table with a pgshift `new_table` migration"
        )
