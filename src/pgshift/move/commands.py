"""What the `migrate` commands do for a move where it differs from a table migration: `plan`
(both servers, the pre-flight checks), `status` (replication lag, the copy, the write-blocked
window) and `runbook`. The command line calls these and prints; no logic of its own."""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from typing import Any

import psycopg

from pgshift.db import connect, redact
from pgshift.engine.state import MigrationState, StateStore
from pgshift.move.executor import prepare_move
from pgshift.move.preflight import Check, refuse, run_preflight
from pgshift.move.preview import preview_data, render_text
from pgshift.move.runner import CONNINFO_ENV, conninfo_for
from pgshift.phases.base import Server
from pgshift.plan.load import LoadedPlan

Connection = psycopg.Connection[Any]


def _shown(conn: Connection | None, server: Server) -> str | None:
    """How the other server's subscription reaches this one, password hidden."""
    if conn is None:
        return None
    return redact(os.environ.get(CONNINFO_ENV[server]) or conninfo_for(conn))


def plan_output(
    dsn: str, destination_dsn: str | None, loaded: LoadedPlan, store: StateStore, as_json: bool
) -> tuple[str, list[Check]]:
    """`migrate plan` of a move: the text (or JSON) to print, and the pre-flight checks (the
    caller refuses after printing)."""
    with ExitStack() as stack:
        src = stack.enter_context(connect(dsn, role="plan"))
        dst = (
            stack.enter_context(connect(destination_dsn, role="plan")) if destination_dsn else None
        )
        destination = _shown(dst, "destination")
        shown: dict[Server, str] = {
            "source": _shown(src, "source") or "",
            "destination": destination or "<the destination, given to `migrate apply`>",
        }
        compiled, state, source = prepare_move(src, loaded, store, shown)
        checks: list[Check] = []
        warnings: tuple[str, ...] = ()
        if source is not None:
            checks = run_preflight(src, dst, compiled, source)
            warnings = source.warnings
        elif state is not None:
            checks = [Check("pre-flight", "skipped", f"migration {state.name} has started")]
    data = preview_data(
        compiled, {"source": shown["source"], "destination": destination}, checks, warnings
    )
    if as_json:
        return json.dumps(data, indent=2, default=str), checks
    return render_text(data, checks), checks


def refuse_checks(checks: list[Check]) -> None:
    refuse(checks)


def move_status(
    conn: Connection, state: MigrationState, destination_dsn: str | None
) -> dict[str, Any] | None:
    """For `status` and the report: which way replication runs, how far behind, the copy's
    progress and the write-blocked window of cutover. None for a table migration."""
    snapshot = state.snapshot if isinstance(state.snapshot, dict) else {}
    move = snapshot.get("move")
    if not isinstance(move, dict):
        return None
    names = move.get("names") or {}
    forward, back = names.get("forward"), names.get("back")
    out: dict[str, Any] = {
        "destination": move.get("destination"),
        "replicating": None,
        "slot": None,
        "lag_bytes": None,
        "lag_seconds": None,
        "slot_status": None,
        "copy": None,
        "write_blocked_seconds": None,
    }
    for phase in state.phases:
        checkpoint = phase.checkpoint if isinstance(phase.checkpoint, dict) else {}
        if phase.kind == "backfill" and "tables" in checkpoint:
            out["copy"] = {
                "tables_ready": checkpoint["tables_ready"],
                "tables": checkpoint["tables"],
            }
        if phase.kind == "cutover" and "write_blocked_seconds" in checkpoint:
            out["write_blocked_seconds"] = checkpoint["write_blocked_seconds"]
    slot = _slot(conn, forward)
    if slot is not None:
        out.update(replicating="source to destination", slot=forward, **slot)
        return out
    if _subscribed(conn, back):
        out.update(replicating="destination to source", slot=back)
        if destination_dsn:
            try:
                with connect(destination_dsn, role="status") as dst:
                    slot = _slot(dst, back)
            except psycopg.Error:
                slot = None
            if slot is not None:
                out.update(slot)
    return out


def _slot(conn: Connection, name: str | None) -> dict[str, Any] | None:
    if not name:
        return None
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint,"
        " s.wal_status, (SELECT extract(epoch FROM r.replay_lag)::float FROM pg_stat_replication r"
        " WHERE r.pid = s.active_pid) FROM pg_replication_slots s WHERE s.slot_name = %s",
        (name,),
    ).fetchone()
    if row is None:
        return None
    return {"lag_bytes": row[0], "slot_status": row[1], "lag_seconds": row[2]}


def _subscribed(conn: Connection, name: str | None) -> bool:
    if not name:
        return False
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
        " WHERE s.subname = %s AND d.datname = current_database())",
        (name,),
    ).fetchone()
    return bool(row and row[0])


__all__ = ["move_status", "plan_output", "refuse_checks"]
