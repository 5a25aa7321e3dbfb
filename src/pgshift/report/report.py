"""The JSON report (docs/ci.md), shared by `status --json` and `apply --report`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pgshift.engine.sessions import new_version_ready
from pgshift.engine.state import MigrationState, PhaseState
from pgshift.report.clients import upcoming


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def phase_report(
    phase: PhaseState, now: datetime | None = None, moving: bool = True
) -> dict[str, Any]:
    """One phase; an ETA only while it is `moving` (not paused, its process alive)."""
    now = now or datetime.now(UTC)
    seconds = None
    if phase.started_at is not None:
        end = phase.finished_at if phase.status != "running" and phase.finished_at else now
        seconds = round((end - phase.started_at).total_seconds(), 3)
    rate = round(phase.rows_done / seconds, 1) if seconds and phase.rows_done else None
    eta = None
    if rate and phase.rows_total and phase.status == "running" and moving:
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
    old_sessions: int | None = None,
    move: dict[str, Any] | None = None,
    runner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`runner`: the process holding the migration's lock, when status looked for one."""
    # a run whose process is gone (kill -9, a lost machine) still reads `running` in the state
    alive = runner is not None if state.status == "running" else None
    moving = state.status == "running" and not state.paused and alive is not False
    report = {
        "migration": state.name,
        "table": state.table_name,
        "status": state.status,
        "paused": state.paused,
        # only a run waits (a state recorded before the status cleared it may still hold one)
        "waiting_for": state.throttle_reason if state.status in ("running", "waiting") else None,
        "last_error": state.last_error,
        # rows the application wrote that the triggers could not map (the migration fails)
        "row_errors": state.row_errors,
        "updated_at": _iso(state.updated_at),
        "phases": [phase_report(p, moving=moving) for p in state.phases],
        "verify": verify if verify is not None else last_verify(state),
        "gate": gate if gate is not None else waiting_gate(state),
        "application": application(state, old_sessions),
        "exit_code": exit_code,
        "overrides": state.overrides,  # settings changed while running (`migrate set`)
        "alive": alive,
        "runner": runner,
    }
    if move is not None:
        report["move"] = move  # a move's replication: direction, lag, copy, cutover window
    return report


def fallback_report(name: str | None, plan_file: str, exit_code: int) -> dict[str, Any]:
    """The report of a command that read no state: its plan did not load (`migration` null),
    the database was out of reach, or the migration never started (`pending`)."""
    return {
        "migration": name,
        "plan_file": plan_file,
        "table": None,
        "status": "pending" if name is not None else "invalid",
        "paused": False,
        "waiting_for": None,
        "last_error": None,
        "row_errors": 0,
        "updated_at": None,
        "phases": [],
        "verify": None,
        "gate": None,
        "application": None,
        "exit_code": exit_code,
        "overrides": {},
        "alive": None,
        "runner": None,
    }


def application(state: MigrationState, old_sessions: int | None) -> dict[str, Any] | None:
    """How the application moves (as the migration started), and in versions mode, between
    backfill and contract, how many sessions older than the new version are still connected."""
    recorded = (state.snapshot or {}).get("application") if state.snapshot else None
    if not isinstance(recorded, dict):
        return None
    done = {p.kind for p in state.phases if p.status == "done"}
    return {
        "mode": recorded["mode"],
        "schema": recorded["schema"],
        "old_sessions": old_sessions,
        "clients_ahead": upcoming(recorded.get("clients", []), done),
    }


def versions_window(state: MigrationState) -> datetime | None:
    """In versions mode, while both versions are served (the new one ready, contract not
    done): when the new version became ready. None otherwise."""
    recorded = (state.snapshot or {}).get("application") if state.snapshot else None
    if not isinstance(recorded, dict) or recorded.get("mode") != "versions":
        return None
    contract = next((p for p in state.phases if p.kind == "contract"), None)
    if contract is not None and contract.status == "done":
        return None
    return new_version_ready(state)


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
        f"### pgshift: {report['migration'] or report.get('plan_file')} — {report['status']}"
        f" (exit {report['exit_code']})",
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
    if report.get("alive") is False:
        lines[0] += " (interrupted: no pgshift process runs it)"
        lines.append(
            "  the process that ran it is gone (killed, or its machine lost); `migrate apply`"
            " continues from the checkpoint"
        )
    elif report.get("runner"):
        runner = report["runner"]
        lines.append(
            f"  run by {runner['application'] or 'a session'} (backend pid {runner['pid']})"
        )
    if report["waiting_for"]:
        lines.append(f"  waiting: {report['waiting_for']}")
    if report["last_error"]:
        lines.append(f"  last error: {report['last_error']}")
    if report.get("overrides"):
        changed = ", ".join(f"{k}={v}" for k, v in sorted(report["overrides"].items()))
        lines.append(f"  settings changed while running (migrate set): {changed}")
    if report.get("row_errors"):
        lines.append(f"  rows the triggers could not map: {report['row_errors']:,}")
    app = report.get("application")
    if app and app["mode"] == "versions":
        text = f"  versions: the new version reads and writes through schema {app['schema']}"
        if app["old_sessions"] is not None:
            text += f"; {app['old_sessions']} session(s) older than the new version"
        lines.append(text)
    if app and report["status"] not in ("done", "rolled_back"):
        lines += [
            f"  clients, {c['when']}: {c['who']} {c['error']}. {c['action']}"
            for c in app["clients_ahead"]
        ]
    lines += move_lines(report.get("move"))
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


def move_lines(move: dict[str, Any] | None) -> list[str]:
    """A move's replication, copy and cutover window, for `status`."""
    if not move:
        return []
    lines = []
    if move["replicating"]:
        text = f"  replication: {move['replicating']} (slot {move['slot']})"
        if move["lag_bytes"] is not None:
            text += f", {move['lag_bytes']:,} bytes behind"
        if move["lag_seconds"] is not None:
            text += f", {move['lag_seconds']:.1f}s"
        if move["slot_status"] not in (None, "reserved"):
            text += f", slot {move['slot_status']}"
        lines.append(text)
    if move["copy"]:
        copy = move["copy"]
        lines.append(f"  copy: {copy['tables_ready']} of {copy['tables']} table(s) ready")
    if move["write_blocked_seconds"] is not None:
        lines.append(f"  cutover: writes blocked for {move['write_blocked_seconds']:.3f}s")
    return lines
