"""PGS019 add-column-not-null: ADD COLUMN ... NOT NULL without a DEFAULT on an existing table.

Every existing row gets NULL in the new column, so the ALTER TABLE fails ("column ... contains
null values") as soon as the table has a row: it passes on an empty development database and
breaks the deployment. The safe ways: give it a constant DEFAULT (PostgreSQL 11+ records it
without a rewrite), or add it nullable, backfill it in batches, add CHECK (col IS NOT NULL)
NOT VALID, VALIDATE it, then SET NOT NULL (pgshift's `columns` migration does this for you).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from pgshift.lint.model import Rule
from pgshift.lint.sqlfacts import SERIAL_TYPES, column_type
from pgshift.lint.state import AlterCommand, State, Unit

RULE = Rule(
    "PGS019", "add-column-not-null", "ADD COLUMN ... NOT NULL without a DEFAULT on a live table"
)
NODES = (AlterCommand,)


_CON = enums.ConstrType
# Each fills existing rows itself: a default, an identity, a stored generated value.
_FILLED = (_CON.CONSTR_DEFAULT, _CON.CONSTR_IDENTITY, _CON.CONSTR_GENERATED)


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, AlterCommand) or unit.is_new:
        return
    column = unit.cmd.def_
    if unit.cmd.subtype != enums.AlterTableType.AT_AddColumn:
        return
    if not isinstance(column, ast.ColumnDef) or column.raw_default is not None:
        return
    if column_type(column.typeName).name in SERIAL_TYPES:
        return
    kinds = {con.contype for con in column.constraints or () if isinstance(con, ast.Constraint)}
    if _CON.CONSTR_NOTNULL not in kinds or kinds & set(_FILLED):
        return
    name = column.colname or ""
    yield (
        f"ADD COLUMN {name} NOT NULL without a DEFAULT on {unit.table} fails as soon as the table "
        f"has a row (every row would hold NULL); instead give it a constant DEFAULT, or add it "
        f"nullable, backfill it, then CHECK ({name} IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT "
        "and SET NOT NULL (a pgshift `columns` migration does this)"
    )
