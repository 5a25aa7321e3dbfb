"""What `migrate plan` shows: every phase's steps with their lock level, whether they scan or
rewrite the table, an estimated duration, and the rollback, one line each; their SQL with
`--sql` (and always in `--json`). Built from the compiled phases, the same objects the executor
runs."""

from __future__ import annotations

from typing import Any

from pgshift.compile import CompiledPlan
from pgshift.phases.backfill import CopyStep
from pgshift.phases.base import (
    BLOCKS_READS,
    BLOCKS_WRITES,
    BackfillStep,
    DataCheckStep,
    GateStep,
    Phase,
    ShadowReadStep,
    SqlStep,
    Step,
    VerifyStep,
)
from pgshift.phases.columns_shape import ColumnsShape
from pgshift.plan.durations import format_duration
from pgshift.report.clients import clients_data

# Rough speeds for estimates before anything was measured on this server.
BACKFILL_ROWS_PER_SECOND = 50_000
SCAN_BYTES_PER_SECOND = 200 * 1024 * 1024
INDEX_BUILD_BYTES_PER_SECOND = 60 * 1024 * 1024


def step_sql(step: Step) -> list[str]:
    if isinstance(step, GateStep | VerifyStep):
        return []
    if isinstance(step, ShadowReadStep):
        return [f"-- on the old shape, then with {step.view_schema} first on search_path:"] + [
            q.strip().rstrip(";") + ";" for q in step.queries
        ]
    if isinstance(step, BackfillStep):
        lower = step.key_value(["<last key of the previous batch>"] * len(step.key))
        upper = step.key_value(["<last key of this batch>"] * len(step.key))
        lines = [
            "-- each batch, in one transaction with its checkpoint:",
            step.bounds.as_string() + ";",
            step.batch(lower, upper).as_string() + ";",
        ]
        fence = step.fence if isinstance(step, CopyStep) else None
        if fence is not None:
            lines += [
                "-- then the delete fence, in a transaction of its own:",
                fence.close.as_string() + ";",
                "-- only when rows were deleted meanwhile, in a transaction after it:",
                fence.ghosts(step.condition(lower, upper)).as_string() + ";",
                fence.sweep.as_string().replace("%s", "<those found>") + ";",
            ]
        return lines
    if isinstance(step, DataCheckStep):
        return [
            "-- each batch, read only (a failing batch is bisected to its failing rows):",
            step.bounds.as_string() + ";",
            step.check(
                step.key_value(["<last key of the previous batch>"] * len(step.key)),
                step.key_value(["<last key of this batch>"] * len(step.key)),
            ).as_string()
            + ";",
        ]
    return [s.as_string() + ";" for s in step.statements]


def step_estimate(
    step: Step, compiled: CompiledPlan, rows_per_second: float | None = None
) -> float:
    table = compiled.table
    if isinstance(step, BackfillStep):
        rows = max(table.row_estimate, 0)
        return rows / (rows_per_second or BACKFILL_ROWS_PER_SECOND)
    if isinstance(step, VerifyStep):
        return 2 * table.table_bytes / SCAN_BYTES_PER_SECOND
    if isinstance(step, SqlStep) and step.builds_index is not None:
        return table.table_bytes / INDEX_BUILD_BYTES_PER_SECOND
    if isinstance(step, GateStep):
        return step.wait.total_seconds() if step.wait else 0.0
    if step.scans:
        return table.table_bytes / SCAN_BYTES_PER_SECOND
    return 0.0


def step_data(
    step: Step, compiled: CompiledPlan, rows_per_second: float | None = None
) -> dict[str, Any]:
    return {
        "description": step.description,
        "lock": step.lock,
        "blocks_reads": step.lock in BLOCKS_READS,
        "blocks_writes": step.lock in BLOCKS_WRITES,
        "lock_held": step.hold,
        "scans": step.scans,
        "rewrites": step.rewrites,
        "in_transaction": not isinstance(step, SqlStep) or step.transactional,
        "estimated_seconds": round(step_estimate(step, compiled, rows_per_second), 1),
        "sql": step_sql(step),
    }


def phase_data(
    phase: Phase, compiled: CompiledPlan, rows_per_second: float | None = None
) -> dict[str, Any]:
    forward = [
        step_data(s, compiled.part_of(phase.index, i), rows_per_second)
        for i, s in enumerate(phase.forward)
    ]
    return {
        "index": phase.index,
        "kind": phase.kind,
        "name": phase.name,
        "summary": phase.summary,
        "reversible": phase.reversible,
        "estimated_seconds": round(sum(s["estimated_seconds"] for s in forward), 1),
        "steps": forward,
        "rollback": [step_data(s, compiled) for s in phase.rollback],
    }


def preview_data(compiled: CompiledPlan, rows_per_second: float | None = None) -> dict[str, Any]:
    tables = [table_data(part) for part in compiled.each()]
    estimates = [t["rows_estimate"] for t in tables]
    data = {
        "migration": compiled.plan.name,
        "description": compiled.plan.description,
        "table": compiled.display,
        "key": list(compiled.key),
        "rows_estimate": None if None in estimates else sum(estimates),
        "table_bytes": sum(t["table_bytes"] for t in tables),
        "total_bytes": sum(t["total_bytes"] for t in tables),
        "application": {
            "mode": compiled.plan.application.mode,
            "schema": compiled.context.view_schema,
        },
        "clients": clients_data(compiled),
        "phases": [phase_data(p, compiled, rows_per_second) for p in compiled.phases],
        "warnings": [w for part in compiled.each() for w in warnings(part, compiled)],
        "operator": operator_notes(compiled),
    }
    if compiled.parts:
        data["tables"] = tables
    return data


def table_data(part: CompiledPlan) -> dict[str, Any]:
    """One table of the plan: what changes and how big it is."""
    table = part.table
    plan = part.plan
    if plan.columns is not None:
        change = ", ".join(
            f"{name} {spec.type}" if spec.type else name for name, spec in plan.columns.items()
        )
    elif plan.new_table is not None:
        change = f"copied into {plan.new_table.name}"
    else:
        change = ""
    return {
        "table": table.display,
        "key": list(part.key),
        "change": change,
        "rows_estimate": table.row_estimate if table.row_estimate >= 0 else None,
        "table_bytes": table.table_bytes,
        "total_bytes": table.total_bytes,
    }


def operator_notes(compiled: CompiledPlan) -> list[str]:
    """What the plan has run around the steps: its hooks, and blocker termination at cutover."""
    plan = compiled.plan
    notes = [
        f"hook {name}: {command}  (timeout {format_duration(plan.hooks.timeout)})"
        for name, command in plan.hooks.commands().items()
    ]
    settings = plan.settings
    if settings.terminate_blockers_after and any(p.kind == "cutover" for p in plan.phases):
        notes.append(
            f"cutover terminates sessions that block it on the migrated table(s) for longer than"
            f" {format_duration(settings.terminate_blockers_older_than)}, after"
            f" {settings.terminate_blockers_after} lock timeout(s) of a step"
        )
    return notes


def warnings(compiled: CompiledPlan, whole: CompiledPlan | None = None) -> list[str]:
    """`compiled`'s table's warnings; `whole`: the plan it is one table of."""
    table = compiled.table
    out = []
    if table.triggers and compiled.plan.target == "columns":
        out.append(
            f"{table.display} has trigger(s) {', '.join(table.triggers)}: the backfill's UPDATEs"
            " fire them for every row (an updated_at trigger will touch every row)"
        )
    elif table.triggers and compiled.plan.target != "operations":
        out.append(
            f"{table.display} has trigger(s) {', '.join(table.triggers)}: cutover moves them to"
            " the new table (and disables them on the old one), but their functions run only"
            " then; make sure they work on the new table's columns"
        )
    new = compiled.new_table
    if new is not None and table.properties.replica_identity == "i":
        out.append(
            f"{table.display} has REPLICA IDENTITY USING INDEX, which is not carried: set it on"
            f" {new.display} (ALTER TABLE ... REPLICA IDENTITY USING INDEX) after cutover"
        )
    if new is not None:
        lost = sorted({c for c, *_ in table.column_grants if c not in new.columns})
        if lost:
            out.append(
                f"column privileges on {table.display} ({', '.join(lost)}) are not carried:"
                f" {new.display} has no column of that name; grant what is needed on its"
                " columns after cutover"
            )
    out += partial_column_roles(compiled)
    out += referencing_columns(compiled, whole or compiled)
    return out


def _changed_by(whole: CompiledPlan) -> set[tuple[str, str]]:
    """(table name, column) of every column the plan changes."""
    return {
        (part.table.name, c.name)
        for part in whole.each()
        if isinstance(part.context.shape, ColumnsShape)
        for c in part.context.shape.columns
    }


def referencing_columns(compiled: CompiledPlan, whole: CompiledPlan | None = None) -> list[str]:
    """A widened key's foreign keys move with it, but the columns that reference it keep their
    type: each needs a migration of its own before values outgrow it (or the plan's
    `with_references`), unless the plan (`whole`) changes them too."""
    shape = compiled.context.shape
    if not isinstance(shape, ColumnsShape):
        return []
    own = (compiled.table.schema, compiled.table.name)
    changed = _changed_by(whole or compiled)
    theirs = [
        m
        for m in shape.moved
        if m.kind == "f"
        and m.table != own
        and not all((m.table[-1], c) in changed for c in foreign_key_columns(m.definition))
    ]
    if not theirs:
        return []
    named = ", ".join(f"{'.'.join(m.table)} ({m.name})" for m in theirs)
    return [
        f"foreign keys of other tables reference a changed column and move with it: {named};"
        " their own columns keep their type, so widen them with migrations of their own"
        " before the key's values outgrow them (or in this one: `tables` with"
        " `with_references: true`)"
    ]


def foreign_key_columns(definition: str) -> list[str]:
    """The referencing columns of a `FOREIGN KEY (a, "B") REFERENCES ...` definition."""
    inside = definition.partition("(")[2].partition(")")[0]
    return [c.strip().strip('"').replace('""', '"') for c in inside.split(",")]


def partial_column_roles(compiled: CompiledPlan) -> list[str]:
    """Versions mode: PostgreSQL checks a view's caller for every column the view reads, so a
    role holding privileges on some columns only (and none on the table) is refused through the
    version view, whatever its column grants there."""
    if not compiled.context.versions:
        return []
    table = compiled.table
    whole = {g for g, privilege, _ in table.grants if privilege == "SELECT"}
    readable: dict[str, set[str]] = {}
    for column, grantee, privilege, _grantable in table.column_grants:
        if privilege == "SELECT":
            readable.setdefault(grantee, set()).add(column)
    everything = set(table.columns)
    partial = sorted(g for g, cols in readable.items() if g not in whole and cols < everything)
    if not partial or "PUBLIC" in whole:
        return []
    return [
        f"role(s) {', '.join(partial)} may read only some columns of {table.display}: through"
        f" the version view {compiled.context.view_schema}.{table.name}, which reads every"
        " column, PostgreSQL refuses them (their column privileges are carried to the view,"
        " but do not suffice); keep them on the old version, or grant them SELECT on the"
        " table's other columns"
    ]


def human_seconds(seconds: float) -> str:
    if seconds < 1:
        return "< 1s"
    if seconds < 120:
        return f"~{seconds:.0f}s"
    if seconds < 7200:
        return f"~{seconds / 60:.0f}m"
    return f"~{seconds / 3600:.1f}h"


def render_text(data: dict[str, Any], sql: bool = False) -> str:
    """The plan for a person: one line per step and per rollback step; with `sql`, each step's
    SQL under it (the internal catalog queries included)."""
    rows = data["rows_estimate"]
    if data.get("tables"):
        lines = [f"migration {data['migration']} on {len(data['tables'])} tables, one cutover:"]
        for t in data["tables"]:
            size = (
                f"; ~{t['rows_estimate']:,} rows, {t['table_bytes'] / 1048576:,.1f} MiB"
                if t["rows_estimate"] is not None
                else ""
            )
            lines.append(f"  {t['table']}: {t['change']} (key: {', '.join(t['key'])}{size})")
    else:
        lines = [
            f"migration {data['migration']} on {data['table']} (key: {', '.join(data['key'])};"
            f" ~{rows:,} rows, {data['table_bytes'] / 1048576:,.1f} MiB)"
            if rows is not None
            else f"migration {data['migration']} on {data['table']}"
            f" (key: {', '.join(data['key'])})",
        ]
    if data.get("description"):
        lines.append(data["description"])
    for warning in data["warnings"]:
        lines.append(f"warning: {warning}")
    lines += [f"note: {note}" for note in data.get("operator", [])]
    if data["clients"]:
        lines.append("")
        lines.append(f"application clients (mode {data['application']['mode']}):")
        lines += [
            f"  - {c['when']}: {c['who']} {c['error']}. {c['action']}" for c in data["clients"]
        ]
    for phase in data["phases"]:
        lines.append("")
        title = f"{phase['index'] + 1}. {phase['name']}"
        if phase["name"] != phase["kind"]:
            title += f" ({phase['kind']})"
        lines.append(f"{title} — {phase['summary']}  [{human_seconds(phase['estimated_seconds'])}]")
        for step in phase["steps"]:
            lines += _step_lines(step, "   ", sql)
        if phase["rollback"]:
            lines.append("   rollback:")
            for step in phase["rollback"]:
                lines += _step_lines(step, "     ", sql)
        elif not phase["reversible"]:
            lines.append("   rollback: none — this is the point of no return")
        else:
            lines.append("   rollback: nothing to undo")
    if not sql:
        lines += ["", "each step's SQL: add --sql (or --json)"]
    return "\n".join(lines)


def _step_lines(step: dict[str, Any], indent: str, sql: bool = True) -> list[str]:
    flags = [f"lock {step['lock']}" if step["lock"] != "none" else "no table lock"]
    if step["lock"] != "none":
        flags.append(f"held {step['lock_held']}")
    if step["rewrites"]:
        flags.append("REWRITES the table")
    elif step["scans"]:
        flags.append("scans the table")
    if not step["in_transaction"]:
        flags.append("outside a transaction")
    out = [f"{indent}- {step['description']}  ({'; '.join(flags)})"]
    if not sql:
        return out
    out += [f"{indent}    {line}" for sql_text in step["sql"] for line in sql_text.splitlines()]
    return out
