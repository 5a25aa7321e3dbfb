"""The phases of an `operations` plan: expand (each operation's preparation, and in versions
mode the new version's view), verify (counting the rows a new constraint would reject),
contract (each operation's change to the table: the point of no return). Gates and sql phases
compile as for every plan."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pgshift.operations.shape import OperationsShape
from pgshift.phases.base import CompileContext, Phase, PhaseCompiler, SqlStep, ViolationCheck
from pgshift.phases.expand import drop_view_schema_step, view_schema_step


def compile_expand(ctx: CompileContext, index: int, spec: Any) -> Phase:
    shape: OperationsShape = ctx.shape
    forward: list[SqlStep] = [s for o in shape.operations for s in o.expand()]
    rollback: list[SqlStep] = [s for o in reversed(shape.operations) for s in o.expand_rollback()]
    if ctx.versions:
        # the view is named as the table will be: the new version names it so
        named = replace(ctx, table=replace(ctx.table, name=shape.view_name))
        forward.append(
            view_schema_step(
                named, shape.view_columns(), ctx.table.qualified, shape.view_defaults()
            )
        )
        rollback.insert(0, drop_view_schema_step(ctx))
    done = [o.describe() for o in shape.operations if o.expand()]
    summary = "; ".join(done) if done else "nothing to prepare"
    if ctx.versions:
        summary += f"; the new version's view {ctx.view_schema}.{shape.view_name}"
    return Phase(
        index=index,
        kind="expand",
        name="expand",
        forward=tuple(forward),
        rollback=tuple(rollback),
        summary=summary,
    )


def compile_verify(ctx: CompileContext, index: int, spec: Any) -> Phase:
    shape: OperationsShape = ctx.shape
    checks = tuple(v for o in shape.operations for v in o.violations())
    forward = (
        (
            ViolationCheck(
                description="count the existing rows each new constraint would reject (none"
                " may be found)",
                statements=tuple(q for _, q in checks),
                lock="ACCESS SHARE",
                scans=True,
                hold="one scan per count (reads and writes continue)",
                checks=checks,
            ),
        )
        if checks
        else ()
    )
    return Phase(
        index=index,
        kind="verify",
        name="verify",
        forward=forward,
        rollback=(),
        summary=f"{len(checks)} count(s) of rows that would be rejected"
        if checks
        else "nothing to count",
    )


def compile_contract(ctx: CompileContext, index: int, spec: Any) -> Phase:
    shape: OperationsShape = ctx.shape
    ordered = shape.in_contract_order()
    forward = [s for o in ordered for s in o.contract()]
    done = [o.describe() for o in ordered if o.contract()]
    summary = "; ".join(done) if done else "nothing left to change"
    if ctx.versions:
        summary += f" ({ctx.view_schema} stays for the new version)"
    return Phase(
        index=index,
        kind="contract",
        name="contract",
        forward=tuple(forward),
        rollback=(),
        reversible=False,
        summary=f"{summary}: the point of no return",
    )


def _compilers() -> dict[str, PhaseCompiler]:
    from pgshift.phases.gate import compile_gate
    from pgshift.phases.sql import compile_sql

    return {
        "expand": compile_expand,
        "verify": compile_verify,
        "contract": compile_contract,
        "gate": compile_gate,
        "sql": compile_sql,
    }


OPERATIONS_COMPILERS: dict[str, PhaseCompiler] = _compilers()
