"""plan + live table -> phases of concrete steps. The one place that decides what will run:
`migrate plan`, `migrate runbook` and the executor all use its output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgshift.catalog import Table
from pgshift.errors import PlanError, no_phase_named
from pgshift.phases.backfill import compile_backfill
from pgshift.phases.base import CompileContext, Phase, PhaseCompiler
from pgshift.phases.columns_shape import build_shape
from pgshift.phases.contract import compile_contract
from pgshift.phases.cutover import compile_cutover
from pgshift.phases.dual_write import compile_dual_write
from pgshift.phases.expand import compile_expand
from pgshift.phases.gate import compile_gate
from pgshift.phases.shadow_read import compile_shadow_read
from pgshift.phases.sql import compile_sql
from pgshift.phases.table_shape import build_table_shape
from pgshift.phases.verify import compile_verify
from pgshift.plan.model import Plan

COMPILERS: dict[str, PhaseCompiler] = {
    "expand": compile_expand,
    "dual_write": compile_dual_write,
    "backfill": compile_backfill,
    "cutover": compile_cutover,
    "contract": compile_contract,
    "sql": compile_sql,
    "gate": compile_gate,
    "verify": compile_verify,
    "shadow_read": compile_shadow_read,
}


@dataclass(frozen=True)
class CompiledPlan:
    """A plan's phases of concrete steps. A plan with `tables` is compiled one table at a time
    (`parts`, each a one-table CompiledPlan) and merged into one set of phases (tableset/):
    `table`, `key` and `context` are then its first table's, and `owners` says which part each
    forward step of a phase belongs to."""

    plan: Plan
    table: Table
    key: tuple[str, ...]
    phases: tuple[Phase, ...]
    context: CompileContext
    parts: tuple[CompiledPlan, ...] = ()
    owners: dict[int, tuple[int, ...]] = field(default_factory=dict)
    # several tables: how they were resolved, for the migration's snapshot (tableset/prepare)
    recorded: dict[str, Any] = field(default_factory=dict)

    def each(self) -> tuple[CompiledPlan, ...]:
        """Every table's own compiled plan: the parts, or this one."""
        return self.parts or (self,)

    def part_of(self, phase: int, step: int) -> CompiledPlan:
        """The table's plan that forward step `step` of phase `phase` belongs to."""
        if not self.parts:
            return self
        return self.parts[self.owners[phase][step]]

    @property
    def tables(self) -> list[Table]:
        """The migrated tables (their live tables, not the new ones of `new_table`)."""
        return [p.table for p in self.each()]

    @property
    def display(self) -> str:
        return ", ".join(t.display for t in self.tables)

    @property
    def new_table(self) -> Table | None:
        shape = self.context.shape
        return getattr(shape, "new", None)

    def phase(self, name: str) -> Phase:
        for phase in self.phases:
            if phase.name == name or phase.kind == name:
                return phase
        names = list(dict.fromkeys([p.name for p in self.phases] + [p.kind for p in self.phases]))
        raise no_phase_named(name, self.plan.name, names)

    def names(self) -> str:
        return ", ".join(p.name for p in self.phases)


def check_available(plan: Plan) -> None:
    """Refuse, before anything runs or connects, what this version cannot run."""
    for index, spec in enumerate(plan.phases):
        if spec.kind not in COMPILERS:
            raise PlanError(
                f"phase kind {spec.kind!r} is not available in this version of pgshift yet;"
                " remove it from the plan",
                path=("phases", index),
            )


def compile_plan(
    plan: Plan,
    table: Table,
    key: tuple[str, ...],
    state_schema: str,
    new_table: Table | None = None,
    tag: str | None = None,
    label: str = "",
) -> CompiledPlan:
    """`tag` and `label`: one table of a plan with several (see CompileContext)."""
    check_available(plan)
    ctx = CompileContext(plan=plan, table=table, state_schema=state_schema)
    compilers = COMPILERS
    if plan.operations is not None:
        # imported here: only an operations plan needs that package (start-up time)
        from pgshift.operations.phases import OPERATIONS_COMPILERS
        from pgshift.operations.shape import build_operations_shape

        compilers = OPERATIONS_COMPILERS
        shape: Any = build_operations_shape(plan, table, ctx.view_schema)
    elif plan.new_table is not None:
        if new_table is None:
            raise PlanError("the new table's definition is unknown", path=("new_table",))
        shape = build_table_shape(plan, table, new_table, ctx.view_schema, key, tag)
    else:
        shape = build_shape(plan, table, ctx.view_schema, key, tag)
    ctx = CompileContext(
        plan=plan, table=table, state_schema=state_schema, shape=shape, tag=tag, label=label
    )
    phases = []
    for index, spec in enumerate(plan.phases):
        phases.append(_compiled(compilers[spec.kind], ctx, index, spec))
    return CompiledPlan(plan=plan, table=table, key=key, phases=tuple(phases), context=ctx)


def _compiled(compiler: PhaseCompiler, ctx: CompileContext, index: int, spec: Any) -> Phase:
    try:
        return compiler(ctx, index, spec)
    except PlanError as error:
        if error.path is None and error.where is None:
            raise PlanError(error.message, path=("phases", index)) from error
        raise
