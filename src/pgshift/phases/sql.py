"""sql: the plan's own statements, `up` forward and `down` back.

Each runs under lock_timeout with retries; statements that cannot run inside a transaction
block (the CONCURRENTLY forms, VACUUM) run one by one on their own.
"""

from __future__ import annotations

from typing import Any

import pglast
from psycopg import sql

from pgshift.errors import PlanError
from pgshift.phases.base import LOCK_ORDER, CompileContext, LockLevel, Phase, SqlStep


def split_statements(text: str) -> list[str]:
    """The statements of a SQL text, parsed (so a syntax error is caught at plan time)."""
    try:
        return [s.strip() for s in pglast.split(text, with_parser=True) if s.strip()]
    except pglast.parser.ParseError as error:
        message = str(error.args[0]) if error.args else str(error)
        location = error.args[1] if len(error.args) > 1 else None
        if not isinstance(location, int):  # at the end of the text
            location = max(len(text.rstrip()) - 1, 0)
        line_start = text.rfind("\n", 0, location) + 1
        at = (text.count("\n", 0, location) + 1, location - line_start + 1)
        raise PlanError(f"SQL does not parse: {message}", at=at) from error


def _outside_transaction(statement: str) -> bool:
    node: Any = pglast.parse_sql(statement)[0].stmt
    name = type(node).__name__
    if name in ("IndexStmt", "DropStmt"):
        return bool(getattr(node, "concurrent", False))
    if name == "ReindexStmt":
        return any(getattr(p, "defname", "") == "concurrently" for p in (node.params or ()))
    return name in ("VacuumStmt", "CreatedbStmt", "DropdbStmt", "AlterSystemStmt")


def _lock(statements: list[str]) -> LockLevel:
    """The strongest table lock these statements take, as far as their kind tells."""
    levels: list[LockLevel] = []
    for statement in statements:
        node = pglast.parse_sql(statement)[0].stmt
        name = type(node).__name__
        if name in ("SelectStmt", "ExplainStmt", "VariableSetStmt"):
            levels.append("ACCESS SHARE")
        elif name in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
            levels.append("ROW EXCLUSIVE")
        elif name in ("IndexStmt", "ReindexStmt", "DropStmt") and _outside_transaction(statement):
            levels.append("SHARE UPDATE EXCLUSIVE")
        elif name == "IndexStmt":
            levels.append("SHARE")
        elif name in ("CreateStmt", "ViewStmt", "CreateFunctionStmt", "CreateSchemaStmt"):
            levels.append("none")
        else:
            levels.append("ACCESS EXCLUSIVE")
    return max(levels, key=LOCK_ORDER.index) if levels else "none"


def sql_step(text: str, description: str) -> SqlStep:
    statements = split_statements(text)
    if not statements:
        raise PlanError(f"{description}: no SQL statement given")
    return SqlStep(
        description=description,
        statements=tuple(sql.SQL(s) for s in statements),
        lock=_lock(statements),
        transactional=not any(_outside_transaction(s) for s in statements),
    )


def _field_step(index: int, spec: Any, field: str) -> SqlStep:
    """`sql_step` of the phase's `up` or `down`; its errors point into that text."""
    try:
        return sql_step(getattr(spec, field), f"{spec.name}: {field}")
    except PlanError as error:
        if error.path is not None or error.where is not None:
            raise
        raise PlanError(error.message, path=("phases", index, "sql", field), at=error.at) from error


def compile_sql(ctx: CompileContext, index: int, spec: Any) -> Phase:
    forward = _field_step(index, spec, "up")
    rollback = () if spec.down is None else (_field_step(index, spec, "down"),)
    return Phase(
        index=index,
        kind="sql",
        name=spec.name,
        forward=(forward,),
        rollback=rollback,
        reversible=spec.down is not None,
        summary=f"{len(forward.statements)} statement(s) of the plan's own SQL",
    )
