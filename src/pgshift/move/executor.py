"""The state machine of a move: the executor of the other targets, with two servers.

The same phases, checkpoints, failpoints, gates, automatic rollback and point of no return as
`engine/executor.py`, with what a move changes: each step runs on the server it names (both
connections are held for the whole command), the checkpoint stays in the source's state
schema (a destination step's completion is recorded there after it commits, so such a step
must be safe to run twice, and is), the pre-flight checks of both servers run before anything
is applied, and the moved tables' columns on the source are compared before each step and
while waiting with what they were when the move started (DDL during a move stops it).

The table executor's row errors, swap guard and table snapshot have no meaning here, which is
why this is a class of its own rather than branches through that one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, NoReturn

import psycopg
import structlog
from psycopg import sql
from psycopg.types.json import Jsonb

from pgshift.db import connect
from pgshift.engine.checks import approval_and_soak, pass_or_hold
from pgshift.engine.executor import RunResult, accept_plan_change, fail_phase, one_line
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
from pgshift.engine.state import MigrationState, StateStore
from pgshift.engine.steps import run_sql_step
from pgshift.errors import (
    DifferencesFound,
    GateWaiting,
    MigrationFailed,
    PgshiftError,
    UsageError,
)
from pgshift.move.catalog import MoveSource, fingerprint, from_snapshot, read_source, to_snapshot
from pgshift.move.compile import compile_move
from pgshift.move.names import MoveNames
from pgshift.move.preflight import refuse, run_preflight
from pgshift.move.runner import MoveRunner, Servers, conninfo_for
from pgshift.move.schema import MovedSchema, moved_schema
from pgshift.move.steps import (
    CatchUp,
    CompiledMove,
    Fence,
    Hook,
    MovePhase,
    MoveStep,
    MoveVerify,
    Subscribe,
    SyncSequences,
    Unsubscribe,
    WaitCopy,
)
from pgshift.move.verify import verify_move
from pgshift.phases.base import GateStep, Server, SqlStep
from pgshift.plan.load import LoadedPlan
from pgshift.verify.rowhash import VerifyResult

log = structlog.get_logger("pgshift.move")

Connection = psycopg.Connection[Any]
NO_DESTINATION = (
    "a move needs its destination: pass --destination-dsn (or set DESTINATION_DATABASE_URL)"
)


def prepare_move(
    src: Connection,
    loaded: LoadedPlan,
    store: StateStore,
    shown: dict[Server, str],
) -> tuple[CompiledMove, MigrationState | None, MoveSource | None]:
    """Compile the move against what the source says now, or, once the migration has started,
    against what it said then (kept in the state): the source's catalog changes under a move
    (fence triggers), and the plan must keep meaning what it meant. The source's facts come
    back too while it has not started (for the pre-flight checks)."""
    plan = loaded.plan
    names = MoveNames(plan.name, store.schema)
    state = store.get(src, plan.name)
    snapshot = state.snapshot if state is not None and isinstance(state.snapshot, dict) else {}
    if state is not None and state.started and "move" not in snapshot:
        raise UsageError(
            f"migration {plan.name} in this database is not a move: roll it back or name the"
            " move otherwise"
        )
    if state is not None and state.started:
        data = snapshot["move"]
        tables = from_snapshot(data["tables"])
        schema = MovedSchema(
            tuple(data["schemas"]), tuple(data["before_copy"]), tuple(data["after_copy"])
        )
        source = None
    else:
        source = read_source(src, plan, store.schema)
        tables = source.tables
        schema = moved_schema(conninfo_for(src), [t.qualified for t in tables], source.sequences)
    return compile_move(plan, names, tables, schema, shown), state, source


class MoveExecutor:
    def __init__(
        self,
        dsn: str,
        destination_dsn: str | None,
        loaded: LoadedPlan,
        store: StateStore,
        reporter: Reporter | None = None,
        force: bool = False,
        metrics: StoreListener | None = None,
    ) -> None:
        self.dsn = dsn
        self.destination_dsn = destination_dsn
        self.loaded = loaded
        self.plan = loaded.plan
        self.name = loaded.plan.name
        # every event, status and progress recorded fires the plan's hooks and feeds `metrics`
        self.store = observed_store(store, loaded.plan, *([metrics] if metrics else []))
        self.reporter = reporter or Reporter(bar=False)
        self.force = force
        self.settings = loaded.plan.settings

    # ---------------------------------------------------------------- connections

    @contextmanager
    def _servers(self, role: str) -> Iterator[Servers]:
        if not self.destination_dsn:
            raise UsageError(NO_DESTINATION)
        with ExitStack() as stack:
            src = stack.enter_context(connect(self.dsn, role=f"{role} {self.name}"))
            dst = stack.enter_context(connect(self.destination_dsn, role=f"{role} {self.name}"))
            self.settings = below_deadlock_timeout(src, self.plan.settings)
            servers = Servers(src, dst)
            try:
                yield servers
            finally:
                if servers.destination is not dst:  # connected again after a failure
                    servers.destination.close()

    def _prepare(
        self, servers: Servers
    ) -> tuple[CompiledMove, MigrationState | None, MoveSource | None]:
        shown: dict[Server, str] = {
            "source": servers.shown("source"),
            "destination": servers.shown("destination"),
        }
        compiled, state, source = prepare_move(servers.source, self.loaded, self.store, shown)
        if _same_database(servers):
            raise UsageError(
                "the destination is the source database: point --destination-dsn at another"
                " server (or database)"
            )
        return compiled, state, source

    # ---------------------------------------------------------------- apply

    def apply(self, until: str | None = None, approve: tuple[str, ...] = ()) -> RunResult:
        with (
            migration_lock(self.dsn, self.name, "apply"),
            self._servers("apply") as servers,
            recording_lock_waits(self.store, servers.source, self.name),
        ):
            src = servers.source
            self.store.ensure_schema(src)
            compiled, state, source = self._prepare(servers)
            for table in compiled.tables:
                table_lock(src, table.display)
            if until is not None:
                compiled.phase(until)
            if state is None or not state.started:
                assert source is not None
                checks = run_preflight(servers.source, servers.destination, compiled, source)
                refuse(checks)
            state = self._record(servers, compiled, state)
            for gate in approve:
                if not any(p.kind == "gate" and p.name == gate for p in compiled.phases):
                    raise UsageError(f"plan {self.name} has no gate named {gate!r}")
                self.store.approve(src, self.name, gate, self.store.actor)
            if state.status == "done":
                return RunResult(self.name, "done", f"migration {self.name} is already done")
            self.store.set_status(src, self.name, "running")
            self.store.event(src, self.name, "apply started", detail={"until": until})
            runner = self._runner(servers, compiled)
            run: list[str] = []
            for phase in compiled.phases:
                if state.phase(phase.index).status != "done":
                    self._run_phase(servers, runner, compiled, phase, state)
                    run.append(phase.name)
                if until is not None and until in (phase.name, phase.kind):
                    self.store.set_status(src, self.name, "paused")
                    self.store.event(
                        src, self.name, "stopped", phase=phase.name, detail={"until": until}
                    )
                    return RunResult(
                        self.name,
                        "paused",
                        f"stopped after {phase.name} (--until)",
                        phase.name,
                        run,
                    )
            self.store.set_status(src, self.name, "done")
            self.store.event(src, self.name, "done")
            return RunResult(self.name, "done", f"migration {self.name} done", None, run)

    def _record(
        self, servers: Servers, compiled: CompiledMove, state: MigrationState | None
    ) -> MigrationState:
        src = servers.source
        if state is None or not state.started:
            self.store.create(
                src,
                self.name,
                self.loaded.sha256,
                compiled.display,
                [(p.kind, p.name) for p in compiled.phases],
                {
                    "move": {
                        "tables": to_snapshot(compiled.tables),
                        "schemas": list(compiled.schema.schemas),
                        "before_copy": list(compiled.schema.before_copy),
                        "after_copy": list(compiled.schema.after_copy),
                        "fingerprint": fingerprint(src, compiled.tables),
                        "destination": servers.shown("destination"),
                        "names": {"forward": compiled.names.forward, "back": compiled.names.back},
                    }
                },
                compiled.rows or None,
            )
        else:
            phases = [(p.kind, p.name) for p in compiled.phases]
            accept_plan_change(src, self.store, state, self.loaded, phases, self.force)
        if state is not None and state.started and self.force:
            self._accept_columns(src, compiled)
        fresh = self.store.get(src, self.name)
        assert fresh is not None
        return fresh

    def _accept_columns(self, src: Connection, compiled: CompiledMove) -> None:
        """--force: the moved tables' columns as they are now become the expected ones (the
        destination was made to match by hand)."""
        now = fingerprint(src, compiled.tables)
        src.execute(
            sql.SQL(
                "UPDATE {}.migrations SET snapshot = jsonb_set(snapshot, '{{move,fingerprint}}', "
                "%s)"
                " WHERE name = %s"
            ).format(sql.Identifier(self.store.schema)),
            (Jsonb(now), self.name),
        )
        self.store.event(src, self.name, "columns accepted (--force)")

    def _check_ddl(self, src: Connection, compiled: CompiledMove) -> Callable[[], None]:
        def check() -> None:
            state = self.store.get(src, self.name)
            expected = (state.snapshot or {}).get("move", {}).get("fingerprint") if state else None
            if not expected:
                return
            now = fingerprint(src, compiled.tables)
            for table, digest in expected.items():
                if now.get(table) != digest:
                    what = "is gone" if now.get(table) is None else "changed its columns"
                    raise MigrationFailed(
                        f"DDL on the source during the move: {table} {what} since the move"
                        " started, and logical replication does not carry DDL; make the"
                        " destination's table match and run `migrate apply --force`, or"
                        " `migrate rollback`"
                    )

        return check

    def _runner(self, servers: Servers, compiled: CompiledMove) -> MoveRunner:
        return MoveRunner(
            servers,
            compiled,
            self.store,
            self.settings,
            self.reporter,
            self._check_ddl(servers.source, compiled),
        )

    def _run_phase(
        self,
        servers: Servers,
        runner: MoveRunner,
        compiled: CompiledMove,
        phase: MovePhase,
        state: MigrationState,
    ) -> None:
        src = servers.source
        steps_done = state.phase(phase.index).steps_done
        self.store.set_phase(src, self.name, phase.index, "running")
        self.store.event(src, self.name, "phase started", phase=phase.name)
        self.reporter.event("phase started", migration=self.name, phase=phase.name)
        try:
            for number in range(steps_done, len(phase.forward)):
                step = phase.forward[number]
                label = f"{phase.name}:{number}"
                if phase.kind != "contract":
                    runner.check_ddl()
                failpoint(f"{label}:before")
                self.reporter.event(
                    "step", phase=phase.name, step=step.description, server=_server(step)
                )
                self._run_step(servers, runner, compiled, phase, number, step, label)
                failpoint(f"{label}:after")
            if phase.kind == "cutover":
                self._window(src, phase)
        except GateWaiting:
            raise
        except KeyboardInterrupt:
            self.store.set_phase(src, self.name, phase.index, "failed", error="interrupted")
            self.store.set_status(src, self.name, "paused", "interrupted")
            self.store.event(src, self.name, "interrupted", phase=phase.name)
            raise
        except Exception as error:
            self._fail(servers, compiled, phase, error)
        self.store.set_phase(src, self.name, phase.index, "done")
        self.store.event(src, self.name, "phase done", phase=phase.name)
        self.reporter.event("phase done", migration=self.name, phase=phase.name)

    def _record_step(self, src: Connection, phase: MovePhase, number: int) -> None:
        with src.transaction():
            self.store.step_done(src, self.name, phase.index, number + 1)

    def _run_step(
        self,
        servers: Servers,
        runner: MoveRunner,
        compiled: CompiledMove,
        phase: MovePhase,
        number: int,
        step: MoveStep,
        label: str,
    ) -> None:
        src = servers.source

        def record(conn: Connection) -> None:
            self.store.step_done(conn, self.name, phase.index, number + 1)

        if isinstance(step, SqlStep) and step.server == "source":
            if run_sql_step(src, step, self.settings, record, label):
                self.reporter.event("step already done", phase=phase.name, step=step.description)
            return
        if isinstance(step, Fence) and step.server == "source":

            def fenced(conn: Connection) -> None:
                row = conn.execute("SELECT clock_timestamp()").fetchone()
                assert row is not None
                if step.starts_window:
                    self.store.save_result(
                        conn, self.name, phase.index, {"fenced_at": row[0].isoformat()}, 0
                    )
                record(conn)

            runner.fence(step, label, fenced)
            return
        if isinstance(step, GateStep):
            self._pass_gate(src, phase, step)
        elif isinstance(step, SqlStep):
            if run_sql_step(servers.destination, step, self.settings, lambda c: None, label):
                self.reporter.event("step already done", phase=phase.name, step=step.description)
        elif isinstance(step, Fence):
            runner.fence(step, label, lambda c: None)
        elif isinstance(step, Subscribe):
            runner.subscribe(step, label)
        elif isinstance(step, Unsubscribe):
            runner.unsubscribe(step)
        elif isinstance(step, WaitCopy):
            runner.wait_copy(step, phase.index, phase.name)
        elif isinstance(step, CatchUp):
            runner.catch_up(step)
        elif isinstance(step, SyncSequences):
            runner.sync_sequences(step)
        elif isinstance(step, Hook):
            runner.hook(step)
        elif isinstance(step, MoveVerify):
            self._verify_phase(servers, compiled, phase, step)
        failpoint(f"{label}:before-record")
        self._record_step(src, phase, number)

    def _window(self, src: Connection, phase: MovePhase) -> None:
        """The write-blocked window of cutover: from the source's fence to the end of the
        phase (the destination open, the after_fence hook done)."""
        state = self.store.get(src, self.name)
        assert state is not None
        checkpoint = state.phase(phase.index).checkpoint or {}
        if "fenced_at" not in checkpoint or "write_blocked_seconds" in checkpoint:
            return
        row = src.execute(
            "SELECT extract(epoch FROM clock_timestamp() - %s::timestamptz)",
            (checkpoint["fenced_at"],),
        ).fetchone()
        assert row is not None
        seconds = round(float(row[0]), 3)
        with src.transaction():
            self.store.save_result(
                src, self.name, phase.index, {**checkpoint, "write_blocked_seconds": seconds}, 0
            )
            self.store.event(
                src,
                self.name,
                "writes moved to the destination",
                phase=phase.name,
                detail={"write_blocked_seconds": seconds},
            )
        self.reporter.event("writes moved to the destination", write_blocked_seconds=seconds)

    def _pass_gate(self, src: Connection, phase: MovePhase, step: GateStep) -> None:
        """As a table migration's gate: an approval and a soak time (exit 3 while shut)."""
        state = self.store.get(src, self.name)
        assert state is not None
        closed = approval_and_soak(src, state, phase.index, step, self.loaded.source.file)
        pass_or_hold(src, self.store, self.name, phase.index, step, closed)

    def _verify_phase(
        self, servers: Servers, compiled: CompiledMove, phase: MovePhase, step: MoveVerify
    ) -> None:
        result, detail = verify_move(
            servers, compiled, chunk_size=step.chunk_size, reporter=self.reporter
        )
        src = servers.source
        data = {**result.to_json(), **detail}
        with src.transaction():
            self.store.save_result(
                src, self.name, phase.index, {"result": data}, result.rows_compared
            )
            self.store.event(
                src,
                self.name,
                "verified",
                phase=phase.name,
                detail={k: v for k, v in data.items() if k != "examples"},
            )
        if result.differences:
            from pgshift.engine.checks import differences_message

            raise DifferencesFound(differences_message(result))

    # ---------------------------------------------------------------- failure

    def _fail(
        self, servers: Servers, compiled: CompiledMove, phase: MovePhase, error: Exception
    ) -> NoReturn:
        src = servers.source
        message = str(error) if isinstance(error, PgshiftError) else one_line(error)
        for conn in (servers.source, servers.destination):
            if (
                not conn.broken
                and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
            ):
                conn.rollback()

        def undo(state: MigrationState, target: int) -> None:
            self._rollback_phases(self._reconnected(servers), compiled, state, target)

        fail_phase(src, self.store, self.plan, compiled.phases, phase, error, message, undo)

    def _reconnected(self, servers: Servers) -> Servers:
        """The destination again, when its connection broke (the failure being handled)."""
        if servers.destination.broken or servers.destination.closed:
            assert self.destination_dsn is not None
            servers.destination = connect(self.destination_dsn, role=f"rollback {self.name}")
        return servers

    # ---------------------------------------------------------------- verify

    def verify(self, chunk_size: int = 100_000, workers: int | None = None) -> VerifyResult:
        with migration_lock(self.dsn, self.name, "verify"), self._servers("verify") as servers:
            compiled, state, _ = self._prepare(servers)
            result, detail = verify_move(
                servers, compiled, chunk_size=chunk_size, reporter=self.reporter
            )
            if state is not None:
                self.store.event(
                    servers.source,
                    self.name,
                    "verified",
                    detail={
                        k: v for k, v in {**result.to_json(), **detail}.items() if k != "examples"
                    },
                )
            return result

    # ---------------------------------------------------------------- rollback

    def rollback(self, to: str | None = None) -> RunResult:
        with (
            migration_lock(self.dsn, self.name, "rollback"),
            self._servers("rollback") as servers,
            recording_lock_waits(self.store, servers.source, self.name),
        ):
            src = servers.source
            self.store.ensure_schema(src)
            compiled, state, _ = self._prepare(servers)
            if state is None:
                raise UsageError(
                    f"migration {self.name} has never been applied here; nothing to roll back"
                )
            for table in compiled.tables:
                table_lock(src, table.display)
            if state.plan_hash != self.loaded.sha256 and not self.force:
                raise UsageError(
                    f"plan {self.name} changed since this migration started: rollback would run"
                    " other SQL than apply did; restore the plan as applied, or pass --force"
                )
            target = -1 if to is None else compiled.phase(to).index
            self.store.event(src, self.name, "rollback started", detail={"to": to})
            undone = self._rollback_phases(servers, compiled, state, target)
            status = "rolled_back" if target == -1 else "paused"
            self.store.set_status(src, self.name, status)
            self.store.event(src, self.name, "rollback done", detail={"to": to})
            where = "every phase" if to is None else f"the phases after {to}"
            return RunResult(self.name, status, f"rolled back {where}", to, undone)

    def _rollback_phases(
        self,
        servers: Servers,
        compiled: CompiledMove,
        state: MigrationState,
        target: int,
    ) -> list[str]:
        src = servers.source
        todo = [
            p
            for p in reversed(compiled.phases)
            if p.index > target and state.phase(p.index).status not in ("pending", "rolled_back")
        ]
        for phase in todo:
            if not phase.reversible:
                raise MigrationFailed(
                    f"{phase.name} has started: it is the point of no return, so phases before it"
                    " cannot be rolled back; run `migrate apply` to finish it, and move the"
                    " tables back with a new migration if you must"
                )
        runner = self._runner(servers, compiled)
        for phase in todo:
            self.reporter.event("rolling back", migration=self.name, phase=phase.name)
            for number, step in enumerate(phase.rollback):
                label = f"{phase.name}:rollback:{number}"
                self.reporter.event(
                    "step", phase=phase.name, step=step.description, server=_server(step)
                )
                self._rollback_step(servers, runner, step, label)
            self.store.set_phase(src, self.name, phase.index, "rolled_back", reset=True)
            self.store.event(src, self.name, "phase rolled back", phase=phase.name)
        return [p.name for p in todo]

    def _rollback_step(
        self, servers: Servers, runner: MoveRunner, step: MoveStep, label: str
    ) -> None:
        if isinstance(step, SqlStep):
            run_sql_step(servers.conn(step.server), step, self.settings, lambda c: None, label)
        elif isinstance(step, Fence):
            runner.fence(step, label, lambda c: None)
        elif isinstance(step, Subscribe):
            runner.subscribe(step, label)
        elif isinstance(step, Unsubscribe):
            runner.unsubscribe(step)
        elif isinstance(step, CatchUp):
            runner.catch_up(step)
        elif isinstance(step, SyncSequences):
            runner.sync_sequences(step)
        elif isinstance(step, Hook):
            runner.hook(step)
        else:  # nothing else rolls back
            raise AssertionError(step)
        failpoint(f"{label}:after")


def _same_database(servers: Servers) -> bool:
    """Whether both connections reach one database (same cluster, same name). A role that may
    not read the cluster's identifier is not stopped by this check."""
    ids = []
    for conn in (servers.source, servers.destination):
        try:
            row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        except psycopg.Error:
            return False
        ids.append((row[0] if row else None, conn.info.dbname))
    return ids[0] == ids[1]


def _server(step: MoveStep) -> str:
    return "source" if isinstance(step, GateStep) else step.server


__all__ = ["MoveExecutor", "prepare_move"]
