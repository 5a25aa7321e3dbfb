"""PGS015 concurrently-in-transaction: CONCURRENTLY inside BEGIN ... COMMIT or a DO block.

CREATE / DROP INDEX CONCURRENTLY, REINDEX CONCURRENTLY and DETACH PARTITION CONCURRENTLY cannot
run inside a transaction block: PostgreSQL rejects them. The safe way: run each on its own,
outside any transaction (COMMIT first, and turn off the migration tool's per-file transaction).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from pgshift.lint.model import Rule
from pgshift.lint.sqlfacts import option_on
from pgshift.lint.state import AlterCommand, State, Unit
from pgshift.lint.statements import in_transaction_message

RULE = Rule(
    "PGS015",
    "concurrently-in-transaction",
    "CONCURRENTLY inside BEGIN ... COMMIT or a DO block",
)
NODES = (ast.IndexStmt, ast.DropStmt, ast.ReindexStmt, AlterCommand)


def _concurrent(unit: Unit) -> str | None:
    """The CONCURRENTLY command a unit runs, or None."""
    if isinstance(unit, ast.IndexStmt) and unit.concurrent:
        return "CREATE INDEX CONCURRENTLY"
    if (
        isinstance(unit, ast.DropStmt)
        and unit.removeType == enums.ObjectType.OBJECT_INDEX
        and unit.concurrent
    ):
        return "DROP INDEX CONCURRENTLY"
    if isinstance(unit, ast.ReindexStmt) and option_on(unit.params, "concurrently"):
        return "REINDEX CONCURRENTLY"
    if (
        isinstance(unit, AlterCommand)
        and unit.cmd.subtype == enums.AlterTableType.AT_DetachPartition
        and isinstance(unit.cmd.def_, ast.PartitionCmd)
        and unit.cmd.def_.concurrent
    ):
        return "ALTER TABLE ... DETACH PARTITION CONCURRENTLY"
    return None


def check(unit: Unit, state: State) -> Iterator[str]:
    if not state.in_transaction_block:
        return
    what = _concurrent(unit)
    if what is not None:
        yield in_transaction_message(what)
