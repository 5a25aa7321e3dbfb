"""Several tables' compiled plans -> one set of phases.

Each phase holds every table's steps of that phase, table after table in the plan's order (its
rollback undoes them in the opposite order), so the tables move through the phases together:
every trigger is in before any backfill, every table is verified before the cutover. A gate,
a `sql` phase and a shadow read are the plan's own and run once. The cutover is one: each
table's slow steps, then one swap transaction for all of them (phases/cutover.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

from psycopg import sql

from pgshift.compile import CompiledPlan
from pgshift.phases.base import Phase, SqlStep, Step
from pgshift.phases.cutover import compile_several_cutovers
from pgshift.plan.model import Plan

# Phases that are the plan's own, not a table's: compiled once (the first table's).
ONCE = ("gate", "sql", "shadow_read")


def merge_parts(
    plan: Plan, parts: list[CompiledPlan], recorded: dict[str, Any] | None = None
) -> CompiledPlan:
    """`recorded`: what the migration's snapshot keeps of how the tables were resolved."""
    phases: list[Phase] = []
    owners: dict[int, tuple[int, ...]] = {}
    for index, spec in enumerate(plan.phases):
        mine = [part.phases[index] for part in parts]
        first = mine[0]
        if spec.kind in ONCE:
            phase, owner = first, (0,) * len(first.forward)
        elif spec.kind == "cutover":
            phase = compile_several_cutovers([part.context for part in parts], index)
            owner = (0,) * len(phase.forward)
        elif spec.kind == "contract":
            phase = _contract(first, mine, parts)
            owner = (0,) * len(phase.forward)
        else:
            phase = replace(
                first,
                forward=tuple(
                    named(step, part)
                    for part, p in zip(parts, mine, strict=True)
                    for step in p.forward
                ),
                rollback=tuple(
                    named(step, part)
                    for part, p in reversed(list(zip(parts, mine, strict=True)))
                    for step in p.rollback
                ),
                summary="; ".join(
                    f"{part.table.display}: {p.summary}"
                    for part, p in zip(parts, mine, strict=True)
                ),
                estimate_seconds=_total([p.estimate_seconds for p in mine]),
            )
            owner = tuple(i for i, p in enumerate(mine) for _ in p.forward)
        phases.append(phase)
        owners[index] = owner
    head = parts[0]
    return CompiledPlan(
        plan=plan,
        table=head.table,
        key=head.key,
        phases=tuple(phases),
        context=head.context,
        parts=tuple(parts),
        owners=owners,
        recorded=recorded or {},
    )


def _total(estimates: list[float | None]) -> float | None:
    known = [e for e in estimates if e is not None]
    return sum(known) if known else None


def _contract(first: Phase, mine: list[Phase], parts: list[CompiledPlan]) -> Phase:
    """Every table's contract in ONE transaction (after the indexes dropped CONCURRENTLY): the
    view schema, which holds every table's trigger function, goes once all the triggers go, so
    no table is ever left with its old columns and no trigger filling them."""
    loose = [
        named(step, part)
        for part, p in zip(parts, mine, strict=True)
        for step in p.forward
        if not _in_transaction(step)
    ]
    held = [
        step for p in mine for step in p.forward if isinstance(step, SqlStep) and step.transactional
    ]
    # the live names (a new table holds its old table's by now): the order the locks are taken
    tables = sorted({(part.table.schema, part.table.name) for part in parts})
    together = SqlStep(
        description=f"for {', '.join(part.table.display for part in parts)} together: "
        + "; ".join(dict.fromkeys(step.description for step in held)),
        statements=(
            *(
                sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(*t))
                for t in tables
            ),
            *(q for step in held for q in step.statements),
        ),
        lock="ACCESS EXCLUSIVE",
        hold="milliseconds (catalog changes only)",
    )
    return replace(
        first,
        forward=(*loose, together),
        summary="; ".join(
            f"{part.table.display}: {p.summary}" for part, p in zip(parts, mine, strict=True)
        ),
    )


def _in_transaction(step: Step) -> bool:
    return isinstance(step, SqlStep) and step.transactional


S = TypeVar("S", bound=Step)


def named(step: S, part: CompiledPlan) -> S:
    """The step as one table's of several: its description starts with the table."""
    return replace(step, description=f"{part.table.display}: {step.description}")
