"""The state machine: apply phases in order from the last checkpoint, roll them back in reverse.

Each step records its completion (in its own transaction when it has one), each backfill batch
its checkpoint, so `apply` after a crash at any instant continues where the database says the
work stands: skipped steps are re-checked by their `done_if`, never blindly repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import psycopg
import structlog

from pgshift.catalog import load_table, resolve_table, table_from_snapshot, table_to_snapshot
from pgshift.compile import CompiledPlan, compile_plan
from pgshift.db import connect
from pgshift.engine.blockers import terminating_blockers
from pgshift.engine.checks import Checks
from pgshift.engine.failpoints import failpoint
from pgshift.engine.hooks import observed_store
from pgshift.engine.locks import (
    below_deadlock_timeout,
    migration_lock,
    recording_lock_waits,
    table_lock,
)
from pgshift.engine.observe import StoreListener
from pgshift.engine.progress import Reporter
from pgshift.engine.row_errors import RowErrorsFound, refresh, refuse_losing, remap, swapped
from pgshift.engine.row_errors import check as check_row_errors
from pgshift.engine.state import DIRECTIONS, MigrationState, StateStore
from pgshift.engine.steps import run_sql_step
from pgshift.engine.throttle import Throttle
from pgshift.engine.verify_runner import run_verify
from pgshift.errors import DifferencesFound, GateWaiting, MigrationFailed, PgshiftError, UsageError
from pgshift.phases.base import (
    BackfillStep,
    DataCheckStep,
    GateStep,
    Phase,
    ShadowReadStep,
    SqlStep,
    Step,
    VerifyStep,
    ViolationCheck,
)
from pgshift.plan.check import (
    check_carried,
    check_copy,
    check_plan,
    columns_stand_in,
    new_table_stand_in,
    parse_columns,
    parse_mappings,
    probe_new_table,
    resolve_key,
)
from pgshift.plan.load import LoadedPlan
from pgshift.plan.model import Plan
from pgshift.report.clients import clients_data
from pgshift.tableset.results import summed
from pgshift.verify.rowhash import VerifyResult

log = structlog.get_logger("pgshift.executor")


@dataclass
class RunResult:
    migration: str
    status: str
    message: str
    stopped_after: str | None = None
    phases_run: list[str] = field(default_factory=list)


def prepare(
    conn: psycopg.Connection[Any], loaded: LoadedPlan, store: StateStore
) -> tuple[CompiledPlan, MigrationState | None]:
    """Compile the plan against the table as the migration knows it: the live catalog before
    anything is applied, the stored snapshot once it has started (cutover renames columns, and
    the plan must keep meaning what it meant)."""
    plan = loaded.plan
    state = store.get(conn, plan.name)
    new_table = None
    started = state is not None and state.started and bool(state.snapshot)
    if plan.tables is not None:
        from pgshift.tableset.prepare import prepare_tables  # only such a plan needs it

        snapshot = state.snapshot if state is not None and started else None
        return prepare_tables(conn, plan, store.schema, snapshot), state
    if state is not None and started:
        table = table_from_snapshot(state.snapshot["table"])
        if state.snapshot.get("new_table"):
            new_table = table_from_snapshot(state.snapshot["new_table"])
        key = resolve_key(plan, table)
        # a --force'd change must still be one expression each
        if plan.columns is not None:
            parse_columns(plan)
        elif plan.new_table is not None:
            parse_mappings(plan)
    else:
        table = load_table(conn, plan.table)
        key = check_plan(conn, plan, table)
        if plan.new_table is not None:
            parse_mappings(plan)
            new_table = probe_new_table(conn, plan, table)
    compiled = compile_plan(plan, table, key, store.schema, new_table)
    if started or plan.operations is not None:
        return compiled, state
    # before anything is applied: the mappings and what cutover carries, tried on the database
    view_schema = compiled.context.view_schema
    if new_table is not None:
        check_copy(conn, plan, compiled.context.shape.probes())
        carried = new_table_stand_in(plan, table, new_table)
    else:
        changes = [(c.name, c.type, c.is_new) for c in compiled.context.shape.columns]
        carried = columns_stand_in(table, changes)
    check_carried(conn, table, view_schema=view_schema, **carried)
    return compiled, state


def accept_plan_change(
    conn: psycopg.Connection[Any],
    store: StateStore,
    state: MigrationState,
    loaded: LoadedPlan,
    phases: list[tuple[str, str]],
    force: bool,
) -> bool:
    """Whether the plan changed since the migration started, which only --force accepts (and
    only with the same phases: what is applied must keep its meaning); the new hash and an
    event are recorded then."""
    name = loaded.plan.name
    if state.plan_hash == loaded.sha256:
        return False
    if not force:
        raise UsageError(
            f"plan {name} changed since this migration started; roll it back and apply the new"
            " plan, or pass --force to continue with the changed plan"
        )
    if [(p.kind, p.name) for p in state.phases] != phases:
        raise UsageError(
            f"plan {name} changed its phases since the migration started; --force accepts"
            " changed settings and expressions, not different phases"
        )
    store.set_plan_hash(conn, name, loaded.sha256)
    store.event(conn, name, "plan changed (--force)", detail={"plan_hash": loaded.sha256})
    return True


class FailingPhase(Protocol):
    """What `fail_phase` reads of a phase, a table migration's or a move's."""

    @property
    def index(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def reversible(self) -> bool: ...


def fail_phase(
    conn: psycopg.Connection[Any],
    store: StateStore,
    plan: Plan,
    phases: Sequence[FailingPhase],
    phase: FailingPhase,
    error: Exception,
    message: str,
    undo: Callable[[MigrationState, int], None],
) -> NoReturn:
    """Record a failed phase, then apply on_failure: `undo(state, target)` rolls back the
    phases after `target` (back to the point of no return at most; -1 for all), or the state is
    kept; either way raise the command's one-line error."""
    name = plan.name
    store.set_phase(conn, name, phase.index, "failed", error=message)
    store.event(conn, name, "phase failed", phase=phase.name, detail={"error": message})
    log.error("phase failed", migration=name, phase=phase.name, error=message)
    if plan.settings.on_failure == "rollback" and phase.reversible:
        state = store.get(conn, name)
        assert state is not None
        # a sql phase may follow contract: the rollback stops there
        target = max(
            (
                p.index
                for p in phases
                if not p.reversible and state.phase(p.index).status != "pending"
            ),
            default=-1,
        )
        try:
            undo(state, target)
        except Exception as rollback_error:
            why = (
                str(rollback_error)
                if isinstance(rollback_error, PgshiftError)
                else one_line(rollback_error)
            )
            store.set_status(conn, name, "failed", message)
            raise MigrationFailed(
                f"{phase.name} failed: {message}; the automatic rollback stopped too:"
                f" {why}; fix it and run `migrate rollback`"
            ) from error
        store.set_status(conn, name, "rolled_back" if target == -1 else "failed", message)
        undone = "every applied phase was" if target == -1 else "the phases after contract were"
        raise failure(error)(f"{phase.name} failed: {message}; {undone} rolled back") from error
    store.set_status(conn, name, "failed", message)
    if not phase.reversible:
        raise MigrationFailed(
            f"{phase.name} failed: {message}; it is past the point of no return, so nothing"
            " was rolled back: fix the cause and run `migrate apply` again to finish it"
        ) from error
    raise failure(error)(
        f"{phase.name} failed: {message}; state kept (on_failure: pause): fix the cause and run"
        " `migrate apply` again to continue, or `migrate rollback`"
    ) from error


def failure(error: BaseException) -> type[PgshiftError]:
    """The error class a failed phase ends the command with: differences keep exit 4."""
    return DifferencesFound if isinstance(error, DifferencesFound) else MigrationFailed


def one_line(error: BaseException) -> str:
    if isinstance(error, psycopg.Error) and error.diag.message_primary:
        sqlstate = f" ({error.sqlstate})" if error.sqlstate else ""
        return f"{error.diag.message_primary}{sqlstate}"
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class Executor:
    def __init__(
        self,
        dsn: str,
        loaded: LoadedPlan,
        store: StateStore,
        reporter: Reporter | None = None,
        force: bool = False,
        metrics: StoreListener | None = None,
    ) -> None:
        self.dsn = dsn
        self.loaded = loaded
        self.plan = loaded.plan
        self.name = loaded.plan.name
        # every event, status and progress recorded fires the plan's hooks and feeds `metrics`
        self.store = observed_store(store, loaded.plan, *([metrics] if metrics else []))
        self.reporter = reporter or Reporter(bar=False)
        self.force = force
        self.settings = loaded.plan.settings  # capped below deadlock_timeout on connecting
        self.checks = Checks(self.store, loaded, self.reporter)

    def _connected(self, conn: psycopg.Connection[Any]) -> None:
        self.settings = below_deadlock_timeout(conn, self.plan.settings)
        self.checks.settings = self.settings

    # ---------------------------------------------------------------- apply

    def apply(self, until: str | None = None, approve: tuple[str, ...] = ()) -> RunResult:
        with (
            migration_lock(self.dsn, self.name, "apply"),
            connect(self.dsn, role=f"apply {self.name}") as conn,
            recording_lock_waits(self.store, conn, self.name),
        ):
            self._connected(conn)
            self.store.ensure_schema(conn)
            if self.plan.tables is None:
                self._one_migration_per_table(conn, self.plan.table)
            compiled, state = prepare(conn, self.loaded, self.store)
            if self.plan.tables is not None:
                # the tables are known once resolved (with_references finds some)
                for table in sorted(t.display for t in compiled.tables):
                    self._one_migration_per_table(conn, table)
            if until is not None:
                compiled.phase(until)  # an unknown name is a usage error before anything runs
            for gate in approve:
                if not any(p.kind == "gate" and p.name == gate for p in compiled.phases):
                    raise UsageError(f"plan {self.name} has no gate named {gate!r}")
            state = self._record(conn, compiled, state)
            for gate in approve:
                self.store.approve(conn, self.name, gate, self.store.actor)
            if state.status == "done":
                return RunResult(self.name, "done", f"migration {self.name} is already done")
            # rows the triggers could not map: another pass, now (fixed since, or by --force)
            remap(conn, self.store, compiled, self.settings)
            self.store.set_status(conn, self.name, "running")
            self.store.event(conn, self.name, "apply started", detail={"until": until})
            run: list[str] = []
            for phase in compiled.phases:
                phase_state = state.phase(phase.index)
                if phase_state.status != "done":
                    self._run_phase(conn, compiled, phase, state)
                    run.append(phase.name)
                if until is not None and until in (phase.name, phase.kind):
                    self.store.set_status(conn, self.name, "paused")
                    self.store.event(
                        conn, self.name, "stopped", phase=phase.name, detail={"until": until}
                    )
                    return RunResult(
                        self.name,
                        "paused",
                        f"stopped after {phase.name} (--until)",
                        phase.name,
                        run,
                    )
            self.store.clear_row_errors(conn, self.name)  # the old shape they concern is gone
            self.store.set_status(conn, self.name, "done")
            self.store.event(conn, self.name, "done")
            return RunResult(self.name, "done", f"migration {self.name} done", None, run)

    def _one_migration_per_table(self, conn: psycopg.Connection[Any], name: str) -> None:
        """Two migrations of one table would each compile against a table the other changes:
        the table's advisory lock keeps a second apply or rollback out while one runs, and a
        migration does not start while another of its table is unfinished."""
        found = resolve_table(conn, name)
        if found is None:
            return  # prepare says what is wrong with `table`
        table = f"{found[0]}.{found[1]}"
        table_lock(conn, table)
        state = self.store.get(conn, self.name)
        if state is not None and state.started:
            return
        others = self.store.unfinished_on(conn, table, self.name)
        if others:
            other, status = others[0]
            raise MigrationFailed(
                f"migration {other} of {table} is unfinished ({status}): apply it to the end or"
                f" roll it back before starting {self.name}"
            )

    def _record(
        self, conn: psycopg.Connection[Any], compiled: CompiledPlan, state: MigrationState | None
    ) -> MigrationState:
        """The migration's state row, created (or re-created after a full rollback) as needed;
        a plan changed since the migration started is refused unless forced."""
        if state is None or not state.started:
            tables: dict[str, Any] = compiled.recorded or {
                "table": table_to_snapshot(compiled.table),
                "new_table": table_to_snapshot(compiled.new_table)
                if compiled.new_table is not None
                else None,
            }
            estimates = [t.row_estimate for t in compiled.tables]
            self.store.create(
                conn,
                self.name,
                self.loaded.sha256,
                compiled.display,
                [(p.kind, p.name) for p in compiled.phases],
                {
                    **tables,
                    # for `status`, which reads no plan
                    "application": {
                        "mode": self.plan.application.mode,
                        "schema": compiled.context.view_schema,
                        "clients": clients_data(compiled),
                    },
                },
                sum(estimates) if all(e >= 0 for e in estimates) else None,
            )
        elif accept_plan_change(
            conn,
            self.store,
            state,
            self.loaded,
            [(p.kind, p.name) for p in compiled.phases],
            self.force,
        ):
            # the trigger in force takes the changed expressions too
            refresh(conn, compiled)
        fresh = self.store.get(conn, self.name)
        assert fresh is not None
        return fresh

    def _run_phase(
        self,
        conn: psycopg.Connection[Any],
        compiled: CompiledPlan,
        phase: Phase,
        state: MigrationState,
    ) -> None:
        # imported here: `migrate verify` and rollback never run a backfill or a data check
        from pgshift.engine.backfill_runner import BatchPolicy, run_backfill
        from pgshift.engine.data_check import run_data_check

        phase_state = state.phase(phase.index)
        if not phase.reversible and phase_state.steps_done == 0:
            self._before_no_return(conn, compiled, phase)
        self.store.set_phase(conn, self.name, phase.index, "running")
        self.store.event(conn, self.name, "phase started", phase=phase.name)
        self.reporter.event("phase started", migration=self.name, phase=phase.name)
        step: Step | None = None
        try:
            for number in range(phase_state.steps_done, len(phase.forward)):
                step = phase.forward[number]
                label = f"{phase.name}:{number}"
                self._rows_check(compiled, phase, number)(conn)
                failpoint(f"{label}:before")
                self.reporter.event("step", phase=phase.name, step=step.description)
                part = compiled.part_of(phase.index, number)
                if isinstance(step, BackfillStep):
                    fresh = self.store.get(conn, self.name)
                    assert fresh is not None
                    ps = fresh.phase(phase.index)
                    saved = ps.checkpoint if isinstance(ps.checkpoint, dict) else None
                    if saved and saved.get("step", number) != number:
                        saved = None  # another table's backfill step of this phase
                    outcome = run_backfill(
                        conn,
                        step,
                        store=self.store,
                        migration=self.name,
                        phase_idx=phase.index,
                        phase_name=phase.name,
                        steps_done=number,
                        checkpoint=saved,
                        rows_done=ps.rows_done,
                        rows_total=ps.rows_total,
                        settings=self.settings,
                        policy=BatchPolicy.of(self.settings, phase.options),
                        throttle=Throttle(conn, self.store, self.name, self.settings),
                        reporter=self.reporter,
                        check=self._rows_check(compiled, phase, number),
                        workers=phase.options.get("workers") or self.settings.workers,
                        connect=lambda: connect(self.dsn, role=f"apply {self.name} backfill"),
                    )
                    self.reporter.event(
                        "backfill finished",
                        phase=phase.name,
                        table=part.table.display,
                        rows=outcome.rows,
                        batches=outcome.batches,
                        seconds=round(outcome.seconds, 2),
                        slowest_batch_ms=round(outcome.slowest_batch_seconds * 1000),
                        workers=outcome.workers,
                        rows_swept=outcome.swept,
                    )
                elif isinstance(step, DataCheckStep):
                    run_data_check(
                        conn,
                        part,
                        phase,
                        number,
                        step,
                        store=self.store,
                        settings=self.settings,
                        reporter=self.reporter,
                    )
                elif isinstance(step, VerifyStep):
                    self.checks.verify_phase(conn, part, phase, step, number)
                    with conn.transaction():
                        self.store.step_done(conn, self.name, phase.index, number + 1)
                elif isinstance(step, ShadowReadStep):
                    self.checks.shadow_read(conn, phase, step)
                    with conn.transaction():
                        self.store.step_done(conn, self.name, phase.index, number + 1)
                elif isinstance(step, ViolationCheck):
                    from pgshift.operations.violations import run_violation_check

                    run_violation_check(conn, step, self.settings)
                    with conn.transaction():
                        self.store.step_done(conn, self.name, phase.index, number + 1)
                elif isinstance(step, GateStep):
                    self.checks.pass_gate(conn, compiled, phase, step)
                    with conn.transaction():
                        self.store.step_done(conn, self.name, phase.index, number + 1)
                else:
                    # checked again inside the step's transaction: a swap never commits over a
                    # row written meanwhile that the trigger could not map
                    with self._blockers(conn, compiled, phase):
                        skipped = run_sql_step(
                            conn,
                            step,
                            self.settings,
                            self._recorder(
                                phase.index, number + 1, self._rows_check(compiled, phase, number)
                            ),
                            label,
                        )
                    if skipped:
                        self.reporter.event(
                            "step already done", phase=phase.name, step=step.description
                        )
                failpoint(f"{label}:after")
        except (GateWaiting, DifferencesFound) as stop:
            if isinstance(stop, DifferencesFound) and phase.kind != "gate":
                self._fail(conn, compiled, phase, stop)
            raise
        except KeyboardInterrupt:
            self.store.set_phase(conn, self.name, phase.index, "failed", error="interrupted")
            self.store.set_status(conn, self.name, "paused", "interrupted")
            self.store.event(conn, self.name, "interrupted", phase=phase.name)
            raise
        except Exception as error:
            if isinstance(step, SqlStep) and step.undo_on_failure:
                self._undo(conn, phase, step)
            self._fail(conn, compiled, phase, error)
        self.store.set_phase(conn, self.name, phase.index, "done")
        self.store.event(conn, self.name, "phase done", phase=phase.name)
        self.reporter.event("phase done", migration=self.name, phase=phase.name)

    def _blockers(
        self, conn: psycopg.Connection[Any], compiled: CompiledPlan, phase: Phase
    ) -> AbstractContextManager[None]:
        """Cutover's steps terminate the sessions blocking them on the migrated table(s) when
        the plan opts in (terminate_blockers_after)."""
        if phase.kind != "cutover":
            return nullcontext()
        tables = [
            t.display
            for part in compiled.each()
            for t in (part.table, part.new_table)
            if t is not None
        ]

        def record(detail: dict[str, Any]) -> None:
            self.store.event(conn, self.name, "blocker terminated", phase=phase.name, detail=detail)

        return terminating_blockers(self.dsn, conn, self.settings, tables, record)

    def _before_no_return(
        self, conn: psycopg.Connection[Any], compiled: CompiledPlan, phase: Phase
    ) -> None:
        """Recorded rows stop a phase past which nothing rolls back before it is even marked
        started, so the migration can still be rolled back (or the rows fixed)."""
        try:
            check_row_errors(
                conn, self.store, self.name, compiled.plan.target, compiled.plan.versions
            )
        except RowErrorsFound as error:
            message = f"{phase.name} (the point of no return) not started: {error}"
            self.store.set_status(conn, self.name, "failed", message)
            self.store.event(conn, self.name, "phase not started", phase=phase.name)
            log.error("phase not started", migration=self.name, phase=phase.name, error=message)
            raise MigrationFailed(message) from error

    def _undo(self, conn: psycopg.Connection[Any], phase: Phase, step: SqlStep) -> None:
        """Take back what a failed step's phase left in force, and start the phase over."""
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        undo = SqlStep(
            description=f"take back: {step.description}",
            statements=step.undo_on_failure,
            lock="ACCESS EXCLUSIVE",
        )
        try:
            run_sql_step(
                conn, undo, self.settings, self._recorder(phase.index, 0), f"{phase.name}:undo"
            )
        except Exception as error:  # the failure being handled matters more; say it and go on
            log.error(
                "could not take back a failed step", step=step.description, error=one_line(error)
            )

    def _recorder(
        self,
        idx: int,
        steps_done: int,
        check: Callable[[psycopg.Connection[Any]], None] | None = None,
    ) -> Callable[[psycopg.Connection[Any]], None]:
        """Records a step as done (after `check`); runs inside the step's own transaction when
        it has one."""

        def record(conn: psycopg.Connection[Any]) -> None:
            if check is not None:
                check(conn)
            self.store.step_done(conn, self.name, idx, steps_done)

        return record

    def _rows_check(
        self, compiled: CompiledPlan, phase: Phase, number: int
    ) -> Callable[[psycopg.Connection[Any]], None]:
        """Rows the triggers recorded as not mapped fail the phase (on_failure applies), up to
        contract (checked before it starts, `_before_no_return`): the old shape they concern
        goes with it."""
        contract = next((p.index for p in compiled.phases if p.kind == "contract"), None)
        moot = contract is not None and phase.index >= contract

        def check(conn: psycopg.Connection[Any]) -> None:
            if not moot:
                check_row_errors(
                    conn, self.store, self.name, compiled.plan.target, compiled.plan.versions
                )

        return check

    def _fail(
        self, conn: psycopg.Connection[Any], compiled: CompiledPlan, phase: Phase, error: Exception
    ) -> NoReturn:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()

        def undo(state: MigrationState, target: int) -> None:
            try:
                self._rollback_phases(conn, compiled, state, target=target)
            except Exception:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.rollback()
                raise

        fail_phase(
            conn, self.store, self.plan, compiled.phases, phase, error, one_line(error), undo
        )

    # ---------------------------------------------------------------- verify

    def verify(self, chunk_size: int = 100_000, workers: int | None = None) -> VerifyResult:
        """A row-hash comparison now, at any phase after backfill; `workers` chunks at once
        (default: the plan's setting)."""
        with (
            migration_lock(self.dsn, self.name, "verify"),
            connect(self.dsn, role=f"verify {self.name}") as conn,
        ):
            self._connected(conn)
            compiled, state = prepare(conn, self.loaded, self.store)
            if compiled.plan.target == "operations":
                raise UsageError(
                    f"plan {self.name} changes no shape to compare row by row: its verify phase"
                    " counts the rows a new constraint would reject (migrate apply --until verify)"
                )
            throttle = Throttle(conn, self.store, self.name, self.settings) if state else None
            result = summed(
                [
                    (
                        part.table.display,
                        run_verify(
                            conn,
                            part,
                            chunk_size=chunk_size,
                            throttle=throttle,
                            reporter=self.reporter,
                            workers=workers,
                        ),
                    )
                    for part in compiled.each()
                ]
            )
            if state is not None:
                detail = {k: v for k, v in result.to_json().items() if k != "examples"}
                self.store.event(conn, self.name, "verified", detail=detail)
            return result

    # ---------------------------------------------------------------- rollback

    def rollback(self, to: str | None = None) -> RunResult:
        with (
            migration_lock(self.dsn, self.name, "rollback"),
            connect(self.dsn, role=f"rollback {self.name}") as conn,
            recording_lock_waits(self.store, conn, self.name),
        ):
            self._connected(conn)
            self.store.ensure_schema(conn)
            compiled, state = prepare(conn, self.loaded, self.store)
            if state is None:
                raise UsageError(
                    f"migration {self.name} has never been applied here; nothing to roll back"
                )
            for table in sorted(t.display for t in compiled.tables):
                table_lock(conn, table)  # the snapshot's names: they may be renamed
            if state.plan_hash != self.loaded.sha256 and not self.force:
                raise UsageError(
                    f"plan {self.name} changed since this migration started: rollback would run"
                    " other SQL than apply did; restore the plan as applied, or pass --force"
                )
            target = -1 if to is None else compiled.phase(to).index
            self.store.event(conn, self.name, "rollback started", detail={"to": to})
            # rows written since cutover that did not map back: another pass, now
            remap(conn, self.store, compiled, self.settings, ("down",))
            undone = self._rollback_phases(conn, compiled, state, target, lose_rows=self.force)
            status = "rolled_back" if target == -1 else "paused"
            self.store.set_status(conn, self.name, status)
            self.store.event(conn, self.name, "rollback done", detail={"to": to})
            where = "every phase" if to is None else f"the phases after {to}"
            return RunResult(self.name, status, f"rolled back {where}", to, undone)

    def _rollback_phases(
        self,
        conn: psycopg.Connection[Any],
        compiled: CompiledPlan,
        state: MigrationState,
        target: int,
        lose_rows: bool = False,
    ) -> list[str]:
        """Roll back the phases after `target`. Rolling back cutover while rows written since
        could not be mapped back is refused (inside the swap back too) unless `lose_rows`."""
        todo = [
            p
            for p in reversed(compiled.phases)
            if p.index > target and state.phase(p.index).status not in ("pending", "rolled_back")
        ]
        for phase in todo:
            if not phase.reversible:
                # started is enough: a contract stopped half-way has already dropped old objects
                raise MigrationFailed(
                    f"{phase.name} has started: it is the point of no return, so phases before it"
                    f" cannot be rolled back; run `migrate apply` to finish it, and write a new"
                    " migration to change the table back"
                )

        def refuse(c: psycopg.Connection[Any]) -> None:
            refusal = refuse_losing(
                c, self.store, self.name, compiled.plan.target, compiled.plan.versions
            )
            if refusal is not None:
                raise MigrationFailed(refusal)

        # only while the swap is in force (a crash may have left records of one undone); in
        # versions mode, the new version's writes are lost with its shape at dual_write's undo
        undoing = "dual_write" if compiled.plan.versions else "cutover"
        guard = (
            not lose_rows
            and any(p.kind == undoing for p in todo)
            and (compiled.plan.versions or swapped(conn, compiled))
        )
        if guard:
            refuse(conn)
        for phase in todo:
            ps = state.phase(phase.index)
            first = phase.forward[0] if phase.forward else None
            transactional = isinstance(first, SqlStep) and first.transactional
            if phase.kind == "sql" and transactional and ps.status != "done" and ps.steps_done == 0:
                # its one transactional step never committed: nothing of it to undo
                self.store.set_phase(conn, self.name, phase.index, "rolled_back", reset=True)
                continue
            self.reporter.event("rolling back", migration=self.name, phase=phase.name)
            for number, step in enumerate(phase.rollback):
                # the swap back (its first step) commits only if no such row came meanwhile
                last_word = guard and phase.kind == undoing and number == 0
                run_sql_step(
                    conn,
                    step,
                    self.settings,
                    refuse if last_word else lambda c: None,
                    f"{phase.name}:rollback:{number}",
                )
            self.store.set_phase(conn, self.name, phase.index, "rolled_back", reset=True)
            self.store.event(conn, self.name, "phase rolled back", phase=phase.name)
            if phase.kind in ("cutover", "dual_write"):
                # the trigger that recorded them is gone: what they describe no longer exists
                gone = DIRECTIONS if phase.kind == "dual_write" else ("down",)
                lost = self.store.clear_row_errors(conn, self.name, gone)
                if lost and phase.kind == "cutover":
                    self.store.event(
                        conn, self.name, "rolled back without unmapped rows", detail={"rows": lost}
                    )
        return [p.name for p in todo]
