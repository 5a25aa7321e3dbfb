"""What `migrate plan` shows for a move: the tables, both servers (passwords hidden), the
pre-flight checks, and every phase's steps with the server each runs on, its SQL and its
rollback. Built from the compiled move, the same objects its executor runs."""

from __future__ import annotations

from typing import Any

from pgshift.move.preflight import Check, render
from pgshift.move.steps import CompiledMove, MoveStep, step_preview, step_server
from pgshift.phases.base import BLOCKS_READS, BLOCKS_WRITES, SqlStep
from pgshift.report.preview import _step_lines


def step_data(step: MoveStep) -> dict[str, Any]:
    server = step_server(step)
    on_destination = server == "destination"
    return {
        "description": step.description,
        "server": server,
        "step": type(step).__name__,  # SqlStep, Fence, Subscribe, WaitCopy, ...
        "lock": step.lock,
        # the destination takes no application traffic before cutover
        "blocks_reads": step.lock in BLOCKS_READS and not on_destination,
        "blocks_writes": step.lock in BLOCKS_WRITES and not on_destination,
        "lock_held": step.hold,
        "scans": step.scans,
        "rewrites": step.rewrites,
        "in_transaction": not isinstance(step, SqlStep) or step.transactional,
        "sql": step_preview(step),
    }


def preview_data(
    compiled: CompiledMove,
    shown: dict[str, str | None],
    checks: list[Check] | None = None,
    warnings: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "migration": compiled.plan.name,
        "description": compiled.plan.description,
        "target": "move",
        "source": shown.get("source"),
        "destination": shown.get("destination"),
        "tables": [
            {
                "table": t.display,
                "key": list(t.key),
                "rows_estimate": t.row_estimate,
                "total_bytes": t.total_bytes,
                "sequences": [".".join(s) for s in t.sequences],
            }
            for t in compiled.tables
        ],
        "rows_estimate": compiled.rows,
        "total_bytes": compiled.total_bytes,
        "replication": {"forward": compiled.names.forward, "back": compiled.names.back},
        "preflight": [c.to_json() for c in checks or []],
        "warnings": list(warnings),
        "phases": [
            {
                "index": p.index,
                "kind": p.kind,
                "name": p.name,
                "summary": p.summary,
                "reversible": p.reversible,
                "steps": [step_data(s) for s in p.forward],
                "rollback": [step_data(s) for s in p.rollback],
            }
            for p in compiled.phases
        ],
    }


def render_text(data: dict[str, Any], checks: list[Check] | None) -> str:
    lines = [
        f"move {data['migration']}: {len(data['tables'])} table(s), ~{data['rows_estimate']:,}"
        f" rows, {data['total_bytes'] / 1048576:,.1f} MiB with indexes",
        f"  from the source:      {data['source']}",
        f"  to the destination:   {data['destination'] or '(not given: pass --destination-dsn)'}",
    ]
    if data.get("description"):
        lines.append(data["description"])
    for table in data["tables"]:
        key = ", ".join(table["key"]) or "no primary key"
        lines.append(f"  - {table['table']} (key: {key})")
    lines += [f"warning: {w}" for w in data["warnings"]]
    if checks is not None:
        lines += ["", "pre-flight:", *render(checks)]
    for phase in data["phases"]:
        lines.append("")
        title = f"{phase['index'] + 1}. {phase['name']}"
        if phase["name"] != phase["kind"]:
            title += f" ({phase['kind']})"
        lines.append(f"{title} — {phase['summary']}")
        for step in phase["steps"]:
            lines += _step_lines(_tagged(step), "   ")
        if phase["rollback"]:
            lines.append("   rollback:")
            for step in phase["rollback"]:
                lines += _step_lines(_tagged(step), "     ")
        elif not phase["reversible"]:
            lines.append("   rollback: none — this is the point of no return")
        else:
            lines.append("   rollback: nothing to undo")
    return "\n".join(lines)


def _tagged(step: dict[str, Any]) -> dict[str, Any]:
    return {**step, "description": f"[{step['server']}] {step['description']}"}
