"""PGS016 detach-partition-concurrently: DETACH PARTITION without CONCURRENTLY.

A plain DETACH PARTITION takes an ACCESS EXCLUSIVE lock on the partitioned table, blocking reads
and writes of every partition. The safe way: DETACH PARTITION ... CONCURRENTLY (PostgreSQL 14+,
outside a transaction block), which takes SHARE UPDATE EXCLUSIVE.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from pgshift.lint.model import Rule
from pgshift.lint.sqlfacts import range_var_name
from pgshift.lint.state import AlterCommand, State, Unit

RULE = Rule("PGS016", "detach-partition-concurrently", "DETACH PARTITION without CONCURRENTLY")
NODES = (AlterCommand,)


def check(unit: Unit, state: State) -> Iterator[str]:
    if not isinstance(unit, AlterCommand):
        return
    cmd = unit.cmd
    if cmd.subtype != enums.AlterTableType.AT_DetachPartition:
        return
    if not isinstance(cmd.def_, ast.PartitionCmd) or cmd.def_.concurrent:
        return
    yield (
        f"DETACH PARTITION {range_var_name(cmd.def_.name)} from {unit.table} takes an ACCESS "
        f"EXCLUSIVE lock on {unit.table}, blocking reads and writes of every partition; instead "
        "DETACH PARTITION ... CONCURRENTLY (PostgreSQL 14+, outside a transaction block)"
    )
