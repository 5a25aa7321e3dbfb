"""gate: a stop for rollout. `apply` halts here (exit 3) until the gate is approved
(`migrate approve`, or `apply --approve`), its soak `wait` has passed since the previous phase
ended, with `require_verify`, a fresh verify finds no difference, and with
`require_no_old_sessions` (versions mode) no session that connected before the new version
existed is still connected. Nothing to roll back;
rolling a gate back forgets its approval."""

from __future__ import annotations

from typing import Any

from pgshift.phases.base import CompileContext, GateStep, Phase
from pgshift.plan.durations import format_duration


def compile_gate(ctx: CompileContext, index: int, spec: Any) -> Phase:
    step, summary = gate_step(spec)
    return Phase(
        index=index, kind="gate", name=spec.name, forward=(step,), rollback=(), summary=summary
    )


def gate_step(spec: Any) -> tuple[GateStep, str]:
    """The gate's one step, and what keeps it shut in words (for table migrations and moves)."""
    needs = []
    if spec.approval:
        needs.append("an approval")
    if spec.wait:
        needs.append(f"{format_duration(spec.wait)} after the previous phase")
    if spec.require_verify:
        needs.append("a clean verify")
    if spec.require_no_old_sessions:
        needs.append("no session older than the new version")
    summary = f"stop until {', '.join(needs)}" if needs else "passes at once (nothing required)"
    step = GateStep(
        description=f"gate {spec.name}: {summary}",
        gate=spec.name,
        approval=spec.approval,
        wait=spec.wait,
        require_verify=spec.require_verify,
        require_no_old_sessions=spec.require_no_old_sessions,
    )
    return step, summary
