"""PGS006 constraint-using-index: ADD UNIQUE / PRIMARY KEY without USING INDEX.

Adding a UNIQUE or PRIMARY KEY constraint builds its index under an ACCESS EXCLUSIVE lock. The
safe way: CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE / PRIMARY KEY USING
INDEX, which only attaches the finished index.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from pgshift.lint.model import Rule
from pgshift.lint.state import AlterCommand, State, Unit

RULE = Rule("PGS006", "constraint-using-index", "ADD UNIQUE / PRIMARY KEY without USING INDEX")
NODES = (AlterCommand,)


_AT = enums.AlterTableType
_CON = enums.ConstrType


def _kind(con: ast.Constraint) -> str:
    return "PRIMARY KEY" if con.contype == _CON.CONSTR_PRIMARY else "UNIQUE"


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, AlterCommand) or unit.is_new:
        return
    cmd = unit.cmd
    if cmd.subtype == _AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        for con in cmd.def_.constraints or ():
            if isinstance(con, ast.Constraint) and con.contype in (
                _CON.CONSTR_PRIMARY,
                _CON.CONSTR_UNIQUE,
            ):
                what = _kind(con)
                yield (
                    f"ADD COLUMN {cmd.def_.colname or ''} on {unit.table} with an inline {what} "
                    "builds its index under an ACCESS EXCLUSIVE lock; instead add the column, "
                    f"CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... {what} USING INDEX"
                )
    elif cmd.subtype == _AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        con = cmd.def_
        if con.contype in (_CON.CONSTR_PRIMARY, _CON.CONSTR_UNIQUE) and not con.indexname:
            what = _kind(con)
            yield (
                f"ADD {what} on {unit.table} builds its index under an ACCESS EXCLUSIVE lock; "
                "instead CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... "
                f"{what} USING INDEX"
            )
