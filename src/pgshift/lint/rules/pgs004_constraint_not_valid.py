"""PGS004 constraint-not-valid: ADD FOREIGN KEY / CHECK validated in the same statement.

Adding a CHECK or FOREIGN KEY checks every existing row while holding the lock the ALTER TABLE
took (ACCESS EXCLUSIVE for a CHECK, SHARE ROW EXCLUSIVE on both tables for a foreign key).
The safe way: add it NOT VALID (instant, new rows are checked), then VALIDATE CONSTRAINT in a
separate transaction: it takes SHARE UPDATE EXCLUSIVE, which blocks no reads or writes.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from pgshift.lint.model import Rule
from pgshift.lint.sqlfacts import range_var_name
from pgshift.lint.state import AlterCommand, State, Unit
from pgshift.lint.statements import INSTEAD_NOT_VALID

RULE = Rule(
    "PGS004", "constraint-not-valid", "ADD FOREIGN KEY / CHECK validated in the same statement"
)
NODES = (AlterCommand,)


_AT = enums.AlterTableType
_CON = enums.ConstrType


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, AlterCommand) or unit.is_new:
        return
    cmd = unit.cmd
    if cmd.subtype == _AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        for con in cmd.def_.constraints or ():
            if isinstance(con, ast.Constraint) and con.contype in (
                _CON.CONSTR_CHECK,
                _CON.CONSTR_FOREIGN,
            ):
                what = "CHECK" if con.contype == _CON.CONSTR_CHECK else "REFERENCES"
                yield (
                    f"ADD COLUMN {cmd.def_.colname or ''} on {unit.table} with an inline {what} "
                    "checks every row under an ACCESS EXCLUSIVE lock; instead add the column, "
                    "then ADD CONSTRAINT ... NOT VALID and VALIDATE CONSTRAINT in a separate "
                    "transaction"
                )
    elif cmd.subtype == _AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        con = cmd.def_
        if con.skip_validation:
            return
        if con.contype == _CON.CONSTR_CHECK:
            yield (
                f"ADD CHECK on {unit.table} checks every row under an ACCESS EXCLUSIVE lock; "
                f"{INSTEAD_NOT_VALID}"
            )
        elif con.contype == _CON.CONSTR_FOREIGN:
            referenced = range_var_name(con.pktable)
            yield (
                f"ADD FOREIGN KEY on {unit.table} checks every row while holding SHARE ROW "
                f"EXCLUSIVE locks on {unit.table} and {referenced}; {INSTEAD_NOT_VALID}"
            )
