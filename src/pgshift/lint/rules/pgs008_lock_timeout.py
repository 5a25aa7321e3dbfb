"""PGS008 lock-timeout: lock-taking statement with no lock_timeout set.

A statement that needs a lock which conflicts with ordinary reads or writes waits in the lock
queue behind any long transaction, and every later query on the table queues behind it: a
one-millisecond ALTER TABLE can stop the application for minutes. SET lock_timeout first (and
retry on timeout). The locks counted: ALTER TABLE (ACCESS EXCLUSIVE, but not VALIDATE CONSTRAINT
or DETACH PARTITION CONCURRENTLY, which take SHARE UPDATE EXCLUSIVE and block neither reads nor
writes), CREATE / DROP INDEX without CONCURRENTLY, DROP TABLE / VIEW / TRIGGER, CREATE TRIGGER,
renames, TRUNCATE, LOCK, the blocking maintenance commands, and CREATE TABLE ... REFERENCES an
existing table (SHARE ROW EXCLUSIVE on the referenced table). Tables created in the same run
are exempt. In a plan's sql phases pgshift sets lock_timeout itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pglast import ast, enums

from pgshift.lint.model import Rule
from pgshift.lint.rules.pgs005_index_concurrently import dropped_indexes_are_new
from pgshift.lint.rules.pgs007_rename_live import renamed
from pgshift.lint.sqlfacts import range_var, range_var_name, strings
from pgshift.lint.state import State, Unit
from pgshift.lint.statements import blocking_maintenance, weak_lock

RULE = Rule("PGS008", "lock-timeout", "lock-taking statement with no lock_timeout set")
NODES = (
    ast.AlterTableStmt,
    ast.CreateStmt,
    ast.IndexStmt,
    ast.DropStmt,
    ast.RenameStmt,
    ast.AlterObjectSchemaStmt,
    ast.TruncateStmt,
    ast.LockStmt,
    ast.CreateTrigStmt,
    ast.VacuumStmt,
    ast.ClusterStmt,
    ast.ReindexStmt,
)


_OBJ = enums.ObjectType
_CON = enums.ConstrType
_INSTEAD = "instead run SET lock_timeout = '1s'; before it (and retry on timeout)"


def check(unit: Unit, state: State) -> Iterator[str]:
    if not state.require_lock_timeout or state.timeout_set("lock_timeout"):
        return
    for label, relations, mode in _locks(unit, state):
        if state.all_new(relations):
            continue
        target = ", ".join(range_var_name(r) for r in relations) if relations else "its table"
        lock = f"its {mode} lock" if mode else "its lock"
        yield (
            f"{label} on {target} waits for {lock} with no lock_timeout set, and every query on "
            f"the table queues behind that wait; {_INSTEAD}"
        )


_Lock = tuple[str, Sequence[ast.RangeVar | None], str]


def _locks(node: Unit, state: State) -> list[_Lock]:
    """The blocking locks a statement takes: (what, on which tables, the lock's name or "")."""
    if isinstance(node, ast.AlterTableStmt):
        if node.objtype == _OBJ.OBJECT_TABLE and any(
            isinstance(cmd, ast.AlterTableCmd) and not weak_lock(cmd) for cmd in node.cmds or ()
        ):
            return [("ALTER TABLE", [node.relation], "")]
    elif isinstance(node, ast.CreateStmt):
        existing = [r for r in _referenced(node) if not state.new_tables.contains_range_var(r)]
        if existing:
            label = f"CREATE TABLE {range_var_name(node.relation)} ... REFERENCES"
            return [(label, existing, "SHARE ROW EXCLUSIVE")]
    elif isinstance(node, ast.IndexStmt):
        if not node.concurrent and not state.new_tables.contains_range_var(node.relation):
            return [("CREATE INDEX", [node.relation], "")]
    elif isinstance(node, ast.DropStmt):
        return _drop_locks(node, state)
    elif isinstance(node, ast.RenameStmt | ast.AlterObjectSchemaStmt):
        if renamed(node) is not None and not state.new_tables.contains_range_var(node.relation):
            return [("ALTER TABLE", [node.relation], "")]
    elif isinstance(node, ast.TruncateStmt | ast.LockStmt):
        relations = [r for r in node.relations or () if isinstance(r, ast.RangeVar)]
        label = "TRUNCATE" if isinstance(node, ast.TruncateStmt) else "LOCK TABLE"
        return [(label, relations, "")]
    elif isinstance(node, ast.CreateTrigStmt):
        return [("CREATE TRIGGER", [node.relation], "")]
    else:
        maintenance = blocking_maintenance(node, state)
        if maintenance is not None:
            return [(maintenance.label, maintenance.relations, "")]
    return []


def _drop_locks(node: ast.DropStmt, state: State) -> list[_Lock]:
    objects = [strings(o) for o in node.objects or () if isinstance(o, tuple)]
    if node.removeType == _OBJ.OBJECT_INDEX:
        if not node.concurrent and not dropped_indexes_are_new(node, state):
            return [("DROP INDEX", [], "")]
    elif node.removeType == _OBJ.OBJECT_TABLE:
        return [("DROP TABLE", [range_var(o) for o in objects if o], "")]
    elif node.removeType in (_OBJ.OBJECT_VIEW, _OBJ.OBJECT_MATVIEW):
        what = "DROP VIEW" if node.removeType == _OBJ.OBJECT_VIEW else "DROP MATERIALIZED VIEW"
        return [(what, [range_var(o) for o in objects if o], "ACCESS EXCLUSIVE")]
    elif node.removeType == _OBJ.OBJECT_TRIGGER:
        return [("DROP TRIGGER", [range_var(o[:-1]) for o in objects if len(o) > 1], "")]
    return []


def _referenced(node: ast.CreateStmt) -> list[ast.RangeVar]:
    """The tables a CREATE TABLE's foreign keys reference."""
    found: list[ast.RangeVar] = []
    for element in node.tableElts or ():
        constraints = (
            element.constraints or ()
            if isinstance(element, ast.ColumnDef)
            else (element,)
            if isinstance(element, ast.Constraint)
            else ()
        )
        for con in constraints:
            if (
                isinstance(con, ast.Constraint)
                and con.contype == _CON.CONSTR_FOREIGN
                and con.pktable is not None
            ):
                found.append(con.pktable)
    return found
