"""PGS007 rename-live: rename of a live table or column outside cutover.

A rename is instant, but every running query and deployed application that uses the old name
breaks at once. The safe way: let pgshift's cutover phase swap the names (its sql phases at
cutover are exempt), or expose the new name through a view while the code moves over.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from pgshift.lint.model import Rule
from pgshift.lint.sqlfacts import range_var_name
from pgshift.lint.state import State, Unit

RULE = Rule("PGS007", "rename-live", "rename of a live table or column outside cutover")
NODES = (ast.RenameStmt, ast.AlterObjectSchemaStmt)


_OBJ = enums.ObjectType


def renamed(node: ast.Node) -> str | None:
    """What a RENAME or SET SCHEMA of a table (or a table's column) renames, else None."""
    if isinstance(node, ast.RenameStmt):
        rv = node.relation
        if node.renameType == _OBJ.OBJECT_TABLE:
            return f"RENAME of table {range_var_name(rv)} to {node.newname}"
        if node.renameType == _OBJ.OBJECT_COLUMN and node.relationType == _OBJ.OBJECT_TABLE:
            return f"RENAME COLUMN {range_var_name(rv)}.{node.subname} to {node.newname}"
    elif isinstance(node, ast.AlterObjectSchemaStmt) and node.objectType == _OBJ.OBJECT_TABLE:
        return f"SET SCHEMA {node.newschema} of table {range_var_name(node.relation)}"
    return None


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, ast.RenameStmt | ast.AlterObjectSchemaStmt):
        return
    what = renamed(unit)
    if what is None or state.in_cutover or state.new_tables.contains_range_var(unit.relation):
        return
    yield (
        f"{what} breaks every running query and deployed application that uses the old name; "
        "instead let pgshift's cutover phase swap the names, or expose the new name through a "
        "view"
    )
