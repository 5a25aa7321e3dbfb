"""shadow_read: run the application's own queries against the old shape and the new one, and
compare what they return, before any reader depends on the new shape.

The new shape is the view schema `pgshift_<name>`, put first on search_path, so a query that
names the table without a schema reads the view; both runs share one REPEATABLE READ snapshot
so concurrent writes cannot make a false mismatch. Queries run before cutover (after it the
live table already is the new shape)."""

from __future__ import annotations

from typing import Any

from pgshift.engine.shadow_read_runner import parseable, takes_params
from pgshift.errors import PlanError
from pgshift.phases.base import CompileContext, Phase, ShadowReadStep
from pgshift.phases.sql import split_statements


def compile_shadow_read(ctx: CompileContext, index: int, spec: Any) -> Phase:
    cutover = next((i for i, p in enumerate(ctx.plan.phases) if p.kind == "cutover"), None)
    if cutover is not None and index > cutover:
        raise PlanError(
            "shadow_read compares the old shape with the new one: put it before cutover",
            path=("phases", index),
        )
    for number, query in enumerate(spec.queries):
        if takes_params(query) and not spec.params_query:
            raise PlanError(
                "this query has a %s placeholder: give `params_query`, the query whose rows"
                " fill it",
                path=("phases", index, "shadow_read", "queries", number),
            )
        statements = split_statements(parseable(query))
        if len(statements) != 1 or not statements[0].lstrip().lower().startswith(
            ("select", "with", "(")
        ):
            raise PlanError(
                "each shadow_read query is one SELECT",
                path=("phases", index, "shadow_read", "queries", number),
            )
    return Phase(
        index=index,
        kind="shadow_read",
        name="shadow_read",
        forward=(
            ShadowReadStep(
                description=f"compare {len(spec.queries)} query(ies) on the old and the new shape",
                view_schema=ctx.view_schema,
                queries=tuple(spec.queries),
                max_mismatches=spec.max_mismatches,
                params_query=spec.params_query,
            ),
        ),
        rollback=(),
        summary=f"{len(spec.queries)} query(ies) on both shapes; fails past"
        f" {spec.max_mismatches} mismatch(es)",
    )
