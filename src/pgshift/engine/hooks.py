"""Commands pgshift runs for the operator, through the shell, with the state as JSON on stdin.

Two kinds share one runner (`run_hook`): a move's fence hooks are steps of cutover (a non-zero
exit fails the step, so cutover rolls back), and a plan's `hooks:` are notifications fired when
the migration records an event (`EventHooks`, a listener of the observed state store). A
notification runs after the fact: the phase has already started, finished or failed, and that
is committed; failing the migration then could not undo it, and would make a chat webhook
being down stop a cutover half-way through its rollback. So a failed notification is a
warning (and a `hook failed` event), never a failure. What must succeed at an exact point is a
step: a move's fence hooks, a gate, or a `sql` phase.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog

from pgshift.engine.observe import StoreListener, observed
from pgshift.engine.state import MigrationState, StateStore
from pgshift.errors import MigrationFailed
from pgshift.plan.durations import format_duration
from pgshift.plan.model import Hooks, Plan

log = structlog.get_logger("pgshift.hooks")

# the event the state records -> the plan's hook it fires
HOOK_EVENTS: dict[str, str] = {
    "phase started": "on_phase_start",
    "phase done": "on_phase_done",
    "gate waiting": "on_gate",
    "phase failed": "on_failure",
    "phase not started": "on_failure",  # the point of no return refused to start
    "phase rolled back": "on_rollback",
    "done": "on_done",
}


class HookFailed(MigrationFailed):
    """A hook exited non-zero or ran out of time; `str()` says which and its last line."""


def run_hook(
    command: str,
    *,
    hook: str,
    payload: dict[str, Any],
    env: dict[str, str],
    timeout: timedelta,
    timeout_key: str,
) -> float:
    """Run `command` through the shell, `payload` as JSON on stdin, `env` added to pgshift's
    environment; every line it prints is logged. Returns the seconds it took; raises HookFailed
    on a non-zero exit or past `timeout` (named `timeout_key` in the plan). The command runs in
    a process group of its own, so a timeout ends what it started too (a pipe held open by a
    grandchild would otherwise keep pgshift waiting)."""
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        shell=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(json.dumps(payload), timeout=timeout.total_seconds())
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise HookFailed(
            f"hook {hook} ran longer than {format_duration(timeout)} ({timeout_key}):"
            " make it faster or raise the timeout"
        ) from None
    except BaseException:  # Ctrl-C: the hook does not outlive the command
        _kill_group(process)
        raise
    for line in (stdout + stderr).splitlines():
        if line.strip():
            log.info("hook output", hook=hook, line=line)
    if process.returncode != 0:
        raise HookFailed(
            f"hook {hook} exited with status {process.returncode}: {last_line(stdout, stderr)}"
        )
    return time.monotonic() - started


def last_line(stdout: str, stderr: str) -> str:
    """The last non-blank line of stderr, else of stdout: what a failed command said last."""
    for text in (stderr, stdout):
        lines = [line for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return "no output"


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def event_payload(
    state: MigrationState | None,
    name: str,
    hook: str,
    phase: str | None,
    detail: dict[str, Any] | None,
) -> dict[str, Any]:
    """What an event hook reads on stdin. No connection string is in it: a hook that needs the
    database gets it from its own environment."""
    found = next((p for p in state.phases if p.name == phase), None) if state else None
    detail = detail or {}
    return {
        "migration": name,
        "table": state.table_name if state else None,
        "event": hook,
        "phase": phase,
        "phase_kind": found.kind if found else None,
        "phase_status": found.status if found else None,
        "status": state.status if state else None,
        "progress": {
            "rows_done": found.rows_done if found else None,
            "rows_total": found.rows_total if found else None,
            "phases_done": sum(p.status == "done" for p in state.phases) if state else 0,
            "phases": len(state.phases) if state else 0,
        },
        "error": detail.get("error")
        or (state.last_error if state and hook == "on_failure" else None),
        "reason": detail.get("reason"),
        "phases": [{"name": p.name, "kind": p.kind, "status": p.status} for p in state.phases]
        if state
        else [],
        "at": datetime.now(UTC).isoformat(),
    }


class EventHooks(StoreListener):
    """Runs the plan's `hooks:` when the migration records one of HOOK_EVENTS. Each runs to its
    end (or its timeout) before the migration goes on, so a pooler reconnect made at
    `on_phase_done` of cutover is done before contract starts."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks

    def on_event(
        self,
        store: StateStore,
        conn: psycopg.Connection[Any],
        name: str,
        event: str,
        phase: str | None,
        detail: dict[str, Any] | None,
    ) -> None:
        hook = HOOK_EVENTS.get(event)
        command = getattr(self.hooks, hook) if hook else None
        if hook is None or not command:
            return
        try:
            payload = event_payload(store.get(conn, name), name, hook, phase, detail)
            seconds = run_hook(
                command,
                hook=hook,
                payload=payload,
                env={
                    "PGSHIFT_MIGRATION": name,
                    "PGSHIFT_EVENT": hook,
                    "PGSHIFT_PHASE": phase or "",
                },
                timeout=self.hooks.timeout,
                timeout_key="hooks.timeout",
            )
        except HookFailed as error:
            self._failed(store, conn, name, hook, phase, str(error))
            return
        except (OSError, psycopg.Error) as error:  # could not start it, or read the state
            self._failed(store, conn, name, hook, phase, f"hook {hook} did not run: {error}")
            return
        log.info("hook done", migration=name, hook=hook, phase=phase, seconds=round(seconds, 3))

    @staticmethod
    def _failed(
        store: StateStore,
        conn: psycopg.Connection[Any],
        name: str,
        hook: str,
        phase: str | None,
        message: str,
    ) -> None:
        """A warning and an event; the migration goes on (see the module's docstring)."""
        log.warning(
            "hook failed; the migration goes on", migration=name, phase=phase, error=message
        )
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            store.event(
                conn, name, "hook failed", phase=phase, detail={"hook": hook, "error": message}
            )


def observed_store(store: StateStore, plan: Plan, *listeners: StoreListener) -> StateStore:
    """The store an executor records through: it runs the plan's hooks, and tells `listeners`
    (the metrics) too."""
    hooks: list[StoreListener] = [EventHooks(plan.hooks)] if plan.hooks.commands() else []
    return observed(store, [*hooks, *listeners])
