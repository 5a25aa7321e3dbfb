"""The JSON report of SPEC §7, shared by `status --json` and `apply --report`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pgshift.engine.state import MigrationState, PhaseState


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def phase_report(phase: PhaseState, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    seconds = None
    if phase.started_at is not None:
        end = phase.finished_at if phase.status != "running" and phase.finished_at else now
        seconds = round((end - phase.started_at).total_seconds(), 3)
    rate = round(phase.rows_done / seconds, 1) if seconds and phase.rows_done else None
    eta = None
    if rate and phase.rows_total and phase.status == "running":
        eta = round(max(phase.rows_total - phase.rows_done, 0) / rate, 1)
    return {
        "kind": phase.kind,
        "name": phase.name,
        "status": phase.status,
        "started_at": _iso(phase.started_at),
        "finished_at": _iso(phase.finished_at),
        "seconds": seconds,
        "rows": phase.rows_done,
        "rows_total": phase.rows_total,
        "rows_per_second": rate,
        "eta_seconds": eta,
        "batches": phase.batches,
        "error": phase.error,
    }


def migration_report(
    state: MigrationState,
    *,
    exit_code: int | None = None,
    verify: dict[str, Any] | None = None,
    gate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "migration": state.name,
        "table": state.table_name,
        "status": state.status,
        "paused": state.paused,
        "waiting_for": state.throttle_reason,
        "last_error": state.last_error,
        "updated_at": _iso(state.updated_at),
        "phases": [phase_report(p) for p in state.phases],
        "verify": verify if verify is not None else last_verify(state),
        "gate": gate if gate is not None else waiting_gate(state),
        "exit_code": exit_code,
    }


def last_verify(state: MigrationState) -> dict[str, Any] | None:
    """The result the migration's verify phase recorded, if it ran."""
    for phase in state.phases:
        if phase.kind == "verify" and isinstance(phase.checkpoint, dict):
            result = phase.checkpoint.get("result")
            if isinstance(result, dict):
                return result
    return None


def waiting_gate(state: MigrationState) -> dict[str, Any] | None:
    """The gate `apply` stopped at, with what opens it."""
    for phase in state.phases:
        if phase.kind == "gate" and phase.status == "waiting":
            approval = phase.checkpoint or {}
            return {
                "name": phase.name,
                "waiting_for": state.throttle_reason,
                "approved_by": approval.get("approved_by"),
                "approved_at": approval.get("approved_at"),
            }
    return None


def github_summary(report: dict[str, Any]) -> str:
    """The report as a Markdown table for `$GITHUB_STEP_SUMMARY`."""
    lines = [
        f"### pgshift: {report['migration']} — {report['status']} (exit {report['exit_code']})",
        "",
        "| phase | status | seconds | rows | rows/s |",
        "|---|---|---:|---:|---:|",
    ]
    for p in report["phases"]:
        seconds = "" if p["seconds"] is None else f"{p['seconds']:.1f}"
        rate = "" if p["rows_per_second"] is None else f"{p['rows_per_second']:,.0f}"
        lines.append(f"| {p['name']} | {p['status']} | {seconds} | {p['rows']:,} | {rate} |")
    if report.get("gate"):
        lines += ["", f"Waiting: {report['gate']['waiting_for']}"]
    if report.get("last_error"):
        lines += ["", f"Last error: `{report['last_error']}`"]
    verify = report.get("verify")
    if verify:
        diffs = verify["differences"]
        lines += [
            "",
            f"Verify: {verify['rows_compared']:,} rows compared, {diffs['missing']} missing,"
            f" {diffs['extra']} extra, {diffs['changed']} changed",
        ]
    return "\n".join(lines) + "\n"


def render_status(report: dict[str, Any]) -> str:
    lines = [f"{report['migration']} on {report['table']}: {report['status']}"]
    if report["paused"]:
        lines[0] += " (paused)"
    if report["waiting_for"]:
        lines.append(f"  waiting: {report['waiting_for']}")
    if report["last_error"]:
        lines.append(f"  last error: {report['last_error']}")
    for phase in report["phases"]:
        text = f"  {phase['name']:<16} {phase['status']:<12}"
        if phase["rows"]:
            text += f" {phase['rows']:>12,} rows"
            if phase["rows_per_second"]:
                text += f"  {phase['rows_per_second']:,.0f} rows/s"
            if phase["eta_seconds"] is not None:
                text += f"  ETA {phase['eta_seconds']:.0f}s"
        elif phase["seconds"] is not None and phase["status"] != "pending":
            text += f" {phase['seconds']:.1f}s"
        if phase["error"]:
            text += f"  error: {phase['error']}"
        lines.append(text.rstrip())
    return "\n".join(lines)
