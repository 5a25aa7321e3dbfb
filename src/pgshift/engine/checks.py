"""The phases that check rather than change: gates, the verify phase and shadow reads. Each
either returns (the phase passes) or raises: GateWaiting (exit 3) for a closed gate,
DifferencesFound (exit 4) when the new shape does not match."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

from pgshift.compile import CompiledPlan
from pgshift.engine.progress import Reporter
from pgshift.engine.sessions import new_version_ready, old_sessions, old_sessions_text
from pgshift.engine.shadow_read_runner import run_shadow_read
from pgshift.engine.state import MigrationState, StateStore
from pgshift.engine.throttle import Throttle
from pgshift.engine.verify_runner import run_verify
from pgshift.errors import DifferencesFound, GateWaiting
from pgshift.phases.base import GateStep, Phase, ShadowReadStep, VerifyStep
from pgshift.plan.durations import format_duration
from pgshift.plan.load import LoadedPlan
from pgshift.tableset.results import result_of, summed
from pgshift.verify.rowhash import VerifyResult


def differences_message(result: VerifyResult) -> str:
    first = result.examples[0] if result.examples else None
    example = f"; first: {first.kind} key {list(first.key)}" if first else ""
    return (
        f"verify found {result.differences} difference(s) in {result.rows_compared:,} rows:"
        f" {result.missing} missing, {result.extra} extra, {result.changed} changed{example}"
    )


def approval_and_soak(
    conn: psycopg.Connection[Any],
    state: MigrationState,
    index: int,
    step: GateStep,
    plan_file: str,
) -> list[str]:
    """What of a gate's approval and soak time still keeps it shut, as words."""
    closed: list[str] = []
    if step.approval and not (state.phase(index).checkpoint or {}).get("approved_by"):
        closed.append(
            f"an approval (`migrate approve {plan_file} {step.gate} --by WHO`,"
            f" or `migrate apply {plan_file} --approve {step.gate}`)"
        )
    if step.wait:
        since = state.phase(index - 1).finished_at if index > 0 else state.created_at
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        if since is not None and row[0] < since + step.wait:
            left = since + step.wait - row[0]
            closed.append(
                f"its soak time: {format_duration(step.wait)} after the previous phase,"
                f" {format_duration(timedelta(seconds=round(left.total_seconds())))} from now"
            )
    return closed


def pass_or_hold(
    conn: psycopg.Connection[Any],
    store: StateStore,
    name: str,
    index: int,
    step: GateStep,
    closed: list[str],
) -> None:
    """Return when nothing keeps the gate shut; otherwise record that it waits, and why, and
    raise GateWaiting (exit 3; DifferencesFound, exit 4, when a verify keeps it shut)."""
    if not closed:
        store.set_throttle(conn, name, None)
        store.event(conn, name, "gate passed", phase=step.gate)
        return
    reason = f"gate {step.gate} waits for " + " and ".join(closed)
    store.set_phase(conn, name, index, "waiting")
    store.set_status(conn, name, "waiting")
    store.set_throttle(conn, name, reason)
    store.event(conn, name, "gate waiting", phase=step.gate, detail={"reason": reason})
    if any(c.startswith("a clean verify") for c in closed):
        raise DifferencesFound(reason)  # differences, not merely time or approval
    raise GateWaiting(reason)


class Checks:
    def __init__(self, store: StateStore, loaded: LoadedPlan, reporter: Reporter) -> None:
        self.store = store
        self.loaded = loaded
        self.plan = loaded.plan
        self.name = loaded.plan.name
        self.reporter = reporter
        self.settings = loaded.plan.settings  # the executor caps lock_timeout on connecting

    def pass_gate(
        self, conn: psycopg.Connection[Any], compiled: CompiledPlan, phase: Phase, step: GateStep
    ) -> None:
        """Return when the gate is open; otherwise record that it waits, and why, and raise
        GateWaiting (exit 3): not a failure, nothing is rolled back."""
        state = self.store.get(conn, self.name)
        assert state is not None
        closed = approval_and_soak(conn, state, phase.index, step, self.loaded.source.file)
        if step.require_no_old_sessions:
            closed += self._old_sessions(conn, state)
        if step.require_verify and not closed:
            # only once nothing else keeps the gate shut: a verify reads the whole table
            closed += self._verify_for_gate(conn, compiled)
        pass_or_hold(conn, self.store, self.name, phase.index, step, closed)

    def _old_sessions(self, conn: psycopg.Connection[Any], state: MigrationState) -> list[str]:
        """What keeps a require_no_old_sessions gate shut: sessions older than the new version
        (backfill's end), which may still run the old one."""
        since = new_version_ready(state)
        if since is None:
            return []
        sessions = old_sessions(conn, since)
        if not sessions:
            return []
        return [
            f"the old version's sessions to go ({old_sessions_text(sessions)}; stop the old"
            " version or reconnect its pools, then apply again)"
        ]

    def verify_phase(
        self,
        conn: psycopg.Connection[Any],
        compiled: CompiledPlan,
        phase: Phase,
        step: VerifyStep,
        number: int = 0,
    ) -> None:
        """Step `number` of the phase; `compiled` the plan of its table (one of several's)."""
        fresh = self.store.get(conn, self.name)
        assert fresh is not None
        saved = fresh.phase(phase.index).checkpoint
        earlier: VerifyResult | None = None
        if isinstance(saved, dict) and saved.get("step", number) != number:
            # another table's verify step of this phase: its result is carried into this one's
            if saved.get("step", number) < number and isinstance(saved.get("result"), dict):
                earlier = result_of(saved["result"])
            saved = None
        result = run_verify(
            conn,
            compiled,
            chunk_size=step.chunk_size,
            throttle=Throttle(conn, self.store, self.name, self.settings),
            reporter=self.reporter,
            checkpoint=saved,
            save=lambda data: self.store.save_result(
                conn, self.name, phase.index, {**data, "step": number}, data["rows_compared"]
            ),
        )
        if earlier is not None:
            result = summed([("", earlier), ("", result)], label=False)
        self._record_verify(conn, phase.index, result, number)
        if result.differences:
            raise DifferencesFound(differences_message(result))

    def shadow_read(
        self, conn: psycopg.Connection[Any], phase: Phase, step: ShadowReadStep
    ) -> None:
        result = run_shadow_read(conn, step)
        self.store.save_result(
            conn, self.name, phase.index, {"result": result.to_json()}, result.runs
        )
        self.store.event(
            conn,
            self.name,
            "shadow read",
            phase=phase.name,
            detail={"runs": result.runs, "mismatches": result.mismatches},
        )
        if result.mismatches > step.max_mismatches:
            first = result.examples[0]
            raise DifferencesFound(
                f"shadow_read: {result.mismatches} of {result.runs} query run(s) returned other"
                f" rows on the new shape (max_mismatches {step.max_mismatches}); first:"
                f" {first['query']!r} { ({k: v for k, v in first.items() if k != 'query'}) }"
            )

    def _record_verify(
        self, conn: psycopg.Connection[Any], idx: int, result: VerifyResult, step: int = 0
    ) -> None:
        """The result stays with the phase (the report's `verify`) and in the event log."""
        self.store.save_result(
            conn, self.name, idx, {"result": result.to_json(), "step": step}, result.rows_compared
        )
        detail = {k: v for k, v in result.to_json().items() if k != "examples"}
        self.store.event(conn, self.name, "verified", phase="verify", detail=detail)

    def _verify_for_gate(self, conn: psycopg.Connection[Any], compiled: CompiledPlan) -> list[str]:
        result = summed(
            [
                (
                    part.table.display,
                    run_verify(
                        conn,
                        part,
                        chunk_size=10_000,
                        throttle=Throttle(conn, self.store, self.name, self.settings),
                        reporter=self.reporter,
                    ),
                )
                for part in compiled.each()
            ]
        )
        detail = {k: v for k, v in result.to_json().items() if k != "examples"}
        self.store.event(conn, self.name, "verified", detail=detail)
        return [f"a clean verify ({differences_message(result)})"] if result.differences else []
