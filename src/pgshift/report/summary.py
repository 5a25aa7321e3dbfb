"""What `apply` and `rollback` print when they end, whatever the outcome: every phase with its
status, time and rows, the verify result, and the next command to run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pgshift.plan.durations import format_duration


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 60:
        return f"{value:.1f}s"
    return format_duration(timedelta(seconds=round(value)))


def _phase_line(phase: dict[str, Any], width: int, verify: dict[str, Any] | None) -> str:
    shown = phase["status"]
    text = f"  {phase['name']:<{width}} {shown:<12} {_seconds(phase['seconds']):>8}"
    if phase["kind"] == "verify" and verify and phase["status"] == "done":
        diffs = verify["differences"]
        found = diffs["missing"] + diffs["extra"] + diffs["changed"]
        text += f"  {verify['rows_compared']:,} rows compared, "
        text += "no differences" if not found else f"{found:,} difference(s)"
    elif phase["rows"]:
        # dual_write's rows are those its data check tried `up` on
        done = {"dual_write": " checked", "backfill": " written"}.get(phase["kind"], "")
        text += f"  {phase['rows']:,} rows{done}"
        if phase["rows_per_second"]:
            text += f", {phase['rows_per_second']:,.0f} rows/s"
    if phase["error"]:
        text += f"  error: {phase['error']}"
    return text.rstrip()


def next_step(report: dict[str, Any], plan_file: str) -> str | None:
    """The command that moves the migration on from where it stands, if any."""
    name, status = report["migration"], report["status"]
    phases = report["phases"]
    pending = next((p for p in phases if p["status"] not in ("done",)), None)
    if status == "done":
        return f"nothing; `migrate forget {name}` takes it off `migrate status`"
    if status == "waiting" and report.get("gate"):
        gate = report["gate"]["name"]
        why = report["gate"].get("waiting_for") or ""
        if "approval" in why and not report["gate"].get("approved_by"):
            return f"migrate approve {name} {gate}, then migrate apply {plan_file}"
        return f"migrate apply {plan_file} once gate {gate} opens ({why})"
    if status == "rolled_back":
        return f"fix the cause, then migrate apply {plan_file} starts over"
    if status == "failed":
        return (
            f"fix the cause, then migrate apply {plan_file} (continues) or"
            f" migrate rollback {plan_file}"
        )
    if pending is not None:
        return f"migrate apply {plan_file} continues with {pending['name']}"
    return None


def render_summary(report: dict[str, Any], plan_file: str, seconds: float) -> str:
    """The summary of a command that ran `seconds`, from the migration's report."""
    phases = report["phases"]
    width = max([len(p["name"]) for p in phases] + [5])
    lines = [
        "",
        f"{report['migration']} on {report['table']}: {report['status']}"
        f" ({_seconds(seconds)} this run)",
    ]
    lines += [_phase_line(p, width, report.get("verify")) for p in phases]
    if report.get("row_errors"):
        lines.append(f"  rows the triggers could not map: {report['row_errors']:,}")
    step = next_step(report, plan_file)
    if step:
        lines.append(f"next: {step}")
    return "\n".join(lines)
