"""The `migrate` command line: parse, call, print, exit. No logic of its own."""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

import click

from pgshift import __version__
from pgshift.errors import (
    DifferencesFound,
    ExitCode,
    MigrationFailed,
    PgshiftError,
    PlanError,
    PlanErrors,
    UsageError,
    no_phase_named,
)

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    import psycopg

    from pgshift.engine.executor import Executor, RunResult
    from pgshift.engine.state import MigrationState, StateStore
    from pgshift.move.executor import MoveExecutor
    from pgshift.plan.load import LoadedPlan
    from pgshift.report.metrics import LiveMetrics


class Options:
    def __init__(
        self,
        dsn: str | None,
        state_schema: str,
        verbose: int,
        destination_dsn: str | None = None,
        log_format: str | None = None,
    ) -> None:
        self.given_dsn = dsn
        self.log_format = log_format
        self.state_schema = state_schema
        self.verbose = verbose
        self.destination_dsn = destination_dsn  # a move's destination server

    @property
    def has_database(self) -> bool:
        """A database was named: --dsn, $DATABASE_URL or libpq's PG* variables."""
        return bool(
            self.given_dsn or any(k in os.environ for k in ("PGHOST", "PGDATABASE", "PGSERVICE"))
        )

    @property
    def dsn(self) -> str:
        return self.given_dsn or ""

    def store(self, actor: str | None = None) -> StateStore:
        from pgshift.engine.state import StateStore

        return StateStore(self.state_schema, actor=actor or _actor())

    def executor(
        self, loaded: LoadedPlan, force: bool = False, metrics: LiveMetrics | None = None
    ) -> Executor | MoveExecutor:
        """The executor of the plan's target: a move runs on two servers. `metrics` hears
        what it records (--metrics-file, --metrics-port)."""
        from pgshift.engine.progress import Reporter

        if loaded.plan.move is not None:
            from pgshift.move.executor import MoveExecutor  # only a move: not on every command

            return MoveExecutor(
                self.dsn,
                self.destination_dsn,
                loaded,
                self.store(),
                Reporter(),
                force=force,
                metrics=metrics,
            )
        from pgshift.engine.executor import Executor

        return Executor(self.dsn, loaded, self.store(), Reporter(), force=force, metrics=metrics)


def _actor() -> str:
    """Who the events name: $PGSHIFT_ACTOR, else $USER or $LOGNAME, else the operating
    system's name of the account (a container or CI job often sets neither), else `pgshift`."""
    named = (os.environ.get(v) for v in ("PGSHIFT_ACTOR", "USER", "LOGNAME"))
    given = next((name for name in named if name), None)
    if given:
        return given
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name or "pgshift"
    except (ImportError, AttributeError, KeyError):  # no password database, or no entry
        return "pgshift"


def fail(error: BaseException, verbose: int) -> NoReturn:
    """One line on stderr, the matching exit status; the traceback only with -v."""
    message, code = _message(error)
    if verbose:
        traceback.print_exception(error, file=sys.stderr)
    for line in _lines(error, message):
        # a gate that waits is where the plan stops on purpose (exit 3), not a failure
        click.echo(f"{'stopped' if code == ExitCode.WAITING else 'error'}: {line}", err=True)
    sys.exit(int(code))


def _lines(error: BaseException, message: str) -> list[str]:
    """Every error of an invalid plan, one line each; else the one message."""
    if isinstance(error, PlanErrors):
        return [str(e) for e in error.errors]
    return [message]


def _message(error: BaseException) -> tuple[str, int]:
    """The one line a failed command prints, and its exit status."""
    psycopg = sys.modules.get("psycopg")  # not loaded: the error is none of its errors
    if isinstance(error, PgshiftError):
        message, code = str(error), error.exit_code
    elif psycopg is not None and isinstance(error, psycopg.OperationalError):
        first = str(error).strip().splitlines()[0] if str(error).strip() else "connection failed"
        message, code = (
            f"cannot reach the database: {first}; check --dsn or $DATABASE_URL",
            ExitCode.FAILED,
        )
    elif psycopg is not None and isinstance(error, psycopg.Error):
        detail = error.diag.message_primary or str(error).splitlines()[0]
        message, code = f"database error: {detail}", ExitCode.FAILED
    else:
        message, code = (
            f"internal error: {type(error).__name__}: {error} (run with -v for details)",
            ExitCode.FAILED,
        )
    return message, code


class Group(click.Group):
    """Turns every error into one line and an exit status. The commands of LAZY_COMMANDS are
    imported only when they run or a listing names them, so that no other command pays for
    their imports at start-up (lint's: its rules and their configuration)."""

    LAZY_COMMANDS = {"lint": "pgshift.lint.command:lint_command"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self.LAZY_COMMANDS:
            module, name = self.LAZY_COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(module), name)
            self.add_command(command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted; state kept: run the same command again to continue", err=True)
            sys.exit(130)
        except Exception as error:
            options = ctx.find_object(Options)
            fail(error, options.verbose if options else 0)


@contextmanager
def _start_up() -> Iterator[None]:
    """A command's imports and plan loading, most of a short command's time: without the
    cyclic garbage collector, which would walk the growing heap of modules, classes and
    schemas again and again (and once more at exit) to find nothing to free. What start-up
    made lives as long as the process; gc.freeze() leaves it out of later collections."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.freeze()


def _load(path: str) -> LoadedPlan:
    from pgshift.plan.load import load_plan

    return load_plan(path)


def _located(error: PlanError, loaded: LoadedPlan) -> PlanError:
    if error.where is None and error.path is not None and error.at is not None:
        return error.located(loaded.where_in(error.path, *error.at))
    if error.where is None and error.path is not None:
        # an error about a whole column entry points at its name, not at its first option
        whole_entry = len(error.path) == 2 and error.path[0] == "columns"
        return error.located(loaded.source.where(error.path, at_key=whole_entry))
    return error


def _with_plan_locations(loaded: LoadedPlan, action: Callable[[], Any]) -> Any:
    try:
        return action()
    except PlanError as error:
        raise _located(error, loaded) from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dsn",
    envvar="DATABASE_URL",
    help="Database to migrate (default: $DATABASE_URL, else libpq's PG* variables).",
)
@click.option(
    "--destination-dsn",
    envvar="DESTINATION_DATABASE_URL",
    help="A move's destination server (default: $DESTINATION_DATABASE_URL).",
)
@click.option(
    "--state-schema", default="pgshift", show_default=True, help="Schema holding pgshift's state."
)
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default=None,
    help="Log lines on stderr (default: console on a terminal, else json).",
)
@click.option("-v", "--verbose", count=True, help="More detail; -vv for debug.")
@click.version_option(__version__, prog_name="pgshift")
@click.pass_context
def main(
    ctx: click.Context,
    dsn: str | None,
    destination_dsn: str | None,
    state_schema: str,
    log_format: str | None,
    verbose: int,
) -> None:
    """pgshift: zero-downtime migrations for PostgreSQL."""
    if ctx.invoked_subcommand != "lint":  # lint logs nothing: spare it structlog's import
        with _start_up():
            from pgshift.log import configure

        configure(log_format, verbose)
    ctx.obj = Options(dsn, state_schema, verbose, destination_dsn, log_format)


pass_options = click.make_pass_decorator(Options)


@main.command("plan")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (SQL included).")
@click.option("--sql", "with_sql", is_flag=True, help="Show every step's SQL under it.")
@click.option(
    "--check-data",
    is_flag=True,
    help="Also check every row's `up` (or new_table mapping) now, read only; exit 1 if any fails.",
)
@pass_options
def plan_command(
    options: Options, plan_file: str, as_json: bool, with_sql: bool, check_data: bool
) -> None:
    """Validate PLAN_FILE and show what each phase will run, with locks and rollback."""
    from pgshift.compile import check_available
    from pgshift.db import connect
    from pgshift.engine.data_check import check_plan_data, failure_message, success_message
    from pgshift.engine.executor import prepare
    from pgshift.engine.preflight import preflight, render_preflight
    from pgshift.engine.progress import Reporter
    from pgshift.move.commands import plan_output, refuse_checks
    from pgshift.plan.plan_lint import lint_plan
    from pgshift.report.preview import preview_data, render_text

    loaded = _load(plan_file)
    _with_plan_locations(loaded, lambda: check_available(loaded.plan))
    findings = lint_plan(loaded)
    for finding in findings:
        click.echo(f"lint: {finding}", err=True)
    errors = [f for f in findings if f.finding.fails]
    if errors:
        raise PlanError(
            f"{len(errors)} DDL safety rule(s) broken (above); fix them or accept one with"
            " `-- pgshift:allow RULE` on its line",
            where=str(errors[0]).split(": ", 1)[0],
        )
    if check_data and not options.has_database:
        raise UsageError("--check-data reads the table: pass --dsn (or set $DATABASE_URL)")
    if not options.has_database:
        message = f"plan {loaded.plan.name} is valid; pass --dsn to check it against the database and see its SQL"
        click.echo(
            json.dumps({"migration": loaded.plan.name, "valid": True, "phases": None})
            if as_json
            else message
        )
        return
    if loaded.plan.move is not None:
        if check_data:
            raise UsageError("--check-data is for table migrations; a move maps no values")
        text, checks = _with_plan_locations(
            loaded,
            lambda: plan_output(
                options.dsn, options.destination_dsn, loaded, options.store(), as_json
            ),
        )
        click.echo(text)
        refuse_checks(checks)
        return
    with connect(options.dsn, role="plan") as conn:
        compiled, state = _with_plan_locations(
            loaded, lambda: prepare(conn, loaded, options.store())
        )
        checks = preflight(conn, compiled, compiled.plan.settings.lock_timeout)
        checked = (
            check_plan_data(conn, compiled, state, options.store(), Reporter())
            if check_data
            else None
        )
    data = preview_data(compiled)
    data["preflight"] = checks
    if checked is not None:
        step, result = checked
        data["data_check"] = {
            "rows": result.rows,
            "holds": not result.failures,
            "failures": [f.to_json() for f in result.failures],
        }
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo("\n".join(render_preflight(checks)))
        click.echo(render_text(data, sql=with_sql))
    if checked is not None:
        step, result = checked
        if result.failures:
            if not as_json:
                click.echo(f"\ndata check: {step.what} fails for these rows:")
                for failure in result.failures:
                    column = f"column {failure.column}: " if failure.column else ""
                    click.echo(f"  {column}{failure.describe(step.key)}")
            raise MigrationFailed(failure_message(step, result))
        if not as_json:
            click.echo(f"\ndata check: {success_message(step, result)}")


def _reported(
    options: Options,
    plan_file: str,
    report: str | None,
    action: Callable[[LoadedPlan], RunResult],
) -> None:
    """Load the plan, run `action` on it, print its outcome and a summary of the migration
    (phases, times, rows, what to run next) whatever the outcome; with --report, write the JSON
    report then too (an invalid plan and an unreachable database as well, their error as
    `last_error`), and append a Markdown summary to $GITHUB_STEP_SUMMARY when it is set."""
    import psycopg

    from pgshift.report.summary import render_summary

    started = time.monotonic()
    code: int = ExitCode.DONE
    name: str | None = None
    error_line: str | None = None
    unreachable = False
    try:
        loaded = _load(plan_file)
        name = loaded.plan.name
        result = action(loaded)
        click.echo(result.message)
    except KeyboardInterrupt:
        code, error_line = 130, "interrupted"  # what the command line exits with on Ctrl-C
        raise
    except Exception as error:
        error_line, code = _message(error)
        unreachable = isinstance(error, psycopg.OperationalError)
        raise
    finally:
        data = _final_report(options, name, plan_file, report, code, unreachable)
        if data is not None:
            if error_line is not None and code not in (ExitCode.DONE, ExitCode.WAITING):
                data["last_error"] = error_line
            _write_report(data, report)
            if data["phases"] and code != 130:
                click.echo(render_summary(data, plan_file, time.monotonic() - started))


def _final_report(
    options: Options,
    name: str | None,
    plan_file: str,
    report: str | None,
    code: int,
    unreachable: bool,
) -> dict[str, Any] | None:
    """The migration's report as the state has it, else (a plan that did not load, a database
    out of reach, a migration never started) one with what is known; None when nobody reads it
    (no --report, no step summary, and nothing ran that a summary would show)."""
    import psycopg

    from pgshift.db import connect
    from pgshift.report.report import fallback_report

    wanted = report is not None or bool(os.environ.get("GITHUB_STEP_SUMMARY"))
    if not wanted and (name is None or unreachable or code in (ExitCode.USAGE, 130)):
        return None
    data: dict[str, Any] = fallback_report(name, plan_file, code)
    if unreachable:
        data["status"] = "unknown"  # the database is out of reach: the error says so
    elif name is not None:
        try:
            with connect(options.dsn, role="report") as conn:
                state = options.store().get(conn, name)
                if state is not None:
                    data = _migration_report(conn, state, code, options.destination_dsn)
        except psycopg.Error:
            data["status"] = "unknown"  # the database is out of reach: the error says so
    return data


def _migration_report(
    conn: psycopg.Connection[Any],
    state: MigrationState,
    exit_code: int | None = None,
    destination_dsn: str | None = None,
) -> dict[str, Any]:
    """The report, with the old version's sessions counted while both versions are served,
    and a move's replication."""
    from pgshift.engine.locks import lock_holder
    from pgshift.engine.sessions import old_sessions
    from pgshift.engine.state import LOCK_CLASS
    from pgshift.move.commands import move_status
    from pgshift.report.report import migration_report, versions_window

    since = versions_window(state)
    old = len(old_sessions(conn, since)) if since is not None else None
    move = move_status(conn, state, destination_dsn)
    runner = None
    if state.status == "running":
        holder = lock_holder(conn, LOCK_CLASS, state.name)
        if holder is not None:
            runner = {"pid": holder[0], "application": holder[1], "since": holder[2]}
    return migration_report(state, exit_code=exit_code, old_sessions=old, move=move, runner=runner)


def _write_report(data: dict[str, Any], path: str | None) -> None:
    from pgshift.report.report import github_summary

    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as out:
            out.write(github_summary(data))


def _metrics_options(command: F) -> F:
    """--metrics-file and --metrics-port (docs/operations.md#metrics)."""
    command = click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        help="While this runs, serve the migration's metrics at http://HOST:PORT/metrics"
        " (OpenMetrics, or Prometheus text for a client not asking for it).",
    )(command)
    return click.option(
        "--metrics-file",
        type=click.Path(dir_okay=False),
        help="Rewrite this file with the migration's metrics at every batch and transition"
        " (Prometheus text format, for node_exporter's textfile collector: name it *.prom).",
    )(command)


@main.command("apply")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--until", help="Stop after this phase (a kind, or a gate or sql phase's name).")
@click.option(
    "--approve", "approve", multiple=True, metavar="GATE", help="Approve this gate (repeatable)."
)
@click.option(
    "--force", is_flag=True, help="Continue although the plan changed since the migration started."
)
@click.option("--report", type=click.Path(dir_okay=False), help="Write the JSON report here.")
@_metrics_options
@pass_options
def apply_command(
    options: Options,
    plan_file: str,
    until: str | None,
    approve: tuple[str, ...],
    force: bool,
    report: str | None,
    metrics_file: str | None,
    metrics_port: int | None,
) -> None:
    """Run PLAN_FILE from its last checkpoint."""
    from pgshift.report.metrics import serving_metrics

    def run(loaded: LoadedPlan) -> Any:
        gates = _gates_of(loaded, approve)  # before anything connects or writes
        _phase_of(loaded, until)
        with serving_metrics(metrics_file, metrics_port) as metrics:
            executor = options.executor(loaded, force=force, metrics=metrics)
            return _with_plan_locations(loaded, lambda: executor.apply(until, gates))

    _reported(options, plan_file, report, run)


def _phase_of(loaded: LoadedPlan, name: str | None) -> None:
    """Refuse a phase name (`--until`, `--to`) the plan does not have, before connecting."""
    phases = loaded.plan.phases
    names = list(dict.fromkeys([p.name for p in phases] + [p.kind for p in phases]))
    if name is not None and name not in names:
        raise no_phase_named(name, loaded.plan.name, names)


def _gates_of(loaded: LoadedPlan, names: tuple[str, ...]) -> tuple[str, ...]:
    """`names`, each a gate of the plan."""
    gates = [p.name for p in loaded.plan.phases if p.kind == "gate"]
    for name in names:
        if name not in gates:
            have = f"its gates: {', '.join(gates)}" if gates else "it has no gate"
            raise UsageError(f"plan {loaded.plan.name} has no gate named {name!r}; {have}")
    return names


@main.command("rollback")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--to", "to", help="Undo the phases after this one only.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.option(
    "--force",
    is_flag=True,
    help="Roll back although the plan changed since it ran, or although rows written since"
    " cutover could not be mapped back through down (the old shape then lacks them).",
)
@_metrics_options
@pass_options
def rollback_command(
    options: Options,
    plan_file: str,
    to: str | None,
    report: str | None,
    force: bool,
    metrics_file: str | None,
    metrics_port: int | None,
) -> None:
    """Undo applied phases in reverse order, up to the point of no return."""
    from pgshift.report.metrics import serving_metrics

    def run(loaded: LoadedPlan) -> Any:
        _phase_of(loaded, to)  # before anything connects or writes
        with serving_metrics(metrics_file, metrics_port) as metrics:
            executor = options.executor(loaded, force=force, metrics=metrics)
            return _with_plan_locations(loaded, lambda: executor.rollback(to))

    _reported(options, plan_file, report, run)


@main.command("verify")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result as JSON: counts, differences, example keys.",
)
@click.option("--chunk-size", default=100_000, show_default=True, help="Keys per chunk.")
@click.option(
    "--workers",
    type=click.IntRange(1, 32),
    default=None,
    help="Chunks compared at once, each on its own pair of connections (default: the plan's"
    " `workers` setting); a move compares one table at a time.",
)
@pass_options
def verify_command(
    options: Options, plan_file: str, as_json: bool, chunk_size: int, workers: int | None
) -> None:
    """Row-hash comparison of the new shape with the old, now; exit 4 on any difference."""
    with _start_up():
        from pgshift.engine.checks import differences_message
        from pgshift.report.verify_table import (
            MOVE_SIDES,
            TABLE_SIDES,
            render_verify,
            verify_json,
        )

        loaded = _load(plan_file)
        executor = options.executor(loaded)
    result = _with_plan_locations(loaded, lambda: executor.verify(chunk_size, workers))
    sides = MOVE_SIDES if loaded.plan.move is not None else TABLE_SIDES
    if as_json:
        click.echo(json.dumps(verify_json(result, sides), indent=2, default=str))
    else:
        click.echo(render_verify(result, sides))
    if result.differences:
        raise DifferencesFound(differences_message(result))


@main.command("approve")
@click.argument("plan_or_name")
@click.argument("gate")
@click.option(
    "--by",
    "by",
    default=None,
    help="Who approves (default: $PGSHIFT_ACTOR, else $USER, else the account's name).",
)
@pass_options
def approve_command(options: Options, plan_or_name: str, gate: str, by: str | None) -> None:
    """Record an approval of GATE (who and when), so `apply` passes it."""
    from pgshift.db import connect

    name = _migration_name(plan_or_name)
    if _is_plan_file(plan_or_name):
        _gates_of(_load(plan_or_name), (gate,))
    who = by or _actor()
    with connect(options.dsn, role="approve") as conn:
        store = options.store()
        state = store.get(conn, name)
        if state is None:
            raise UsageError(
                f"no migration named {name} in state schema {options.state_schema}: apply"
                " its plan up to the gate first, then approve it"
            )
        if not store.approve(conn, name, gate, who):
            gates = [p.name for p in state.phases if p.kind == "gate"]
            have = f"its gates: {', '.join(gates)}" if gates else "it has no gate"
            raise UsageError(f"migration {name} has no gate named {gate!r}; {have}")
    click.echo(f"gate {gate} of {name} approved by {who}")


@main.command("status")
@click.argument("plan_or_name", required=False)
@click.option("--json", "as_json", is_flag=True)
@pass_options
def status_command(options: Options, plan_or_name: str | None, as_json: bool) -> None:
    """Every migration in the state schema, or one: phases, progress, rows/s, ETA, errors."""
    from pgshift.db import connect
    from pgshift.report.report import render_status

    store = options.store()
    with connect(options.dsn, role="status") as conn:
        names = store.names(conn) if plan_or_name is None else [_migration_name(plan_or_name)]
        reports = []
        for name in names:
            state = store.get(conn, name)
            if state is None:
                raise UsageError(
                    f"no migration named {name} in state schema {options.state_schema}"
                )
            reports.append(_migration_report(conn, state, None, options.destination_dsn))
    if as_json:
        click.echo(json.dumps(reports[0] if plan_or_name else reports, indent=2, default=str))
    elif not reports:
        click.echo(f"no migrations in state schema {options.state_schema}")
    else:
        click.echo("\n\n".join(render_status(r) for r in reports))


@main.command("metrics")
@click.argument("plan_or_name", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["openmetrics", "prometheus"]),
    default="openmetrics",
    show_default=True,
    help="OpenMetrics text, or the Prometheus text format 0.0.4 (node_exporter's textfile"
    " collector reads only that one).",
)
@pass_options
def metrics_command(options: Options, plan_or_name: str | None, fmt: str) -> None:
    """Every migration's metrics in the state schema (or one's), for Prometheus: status,
    progress, rows/s, throttling, lock waits (docs/operations.md#metrics)."""
    from pgshift.db import connect
    from pgshift.report.metrics import families, from_store, render

    store = options.store()
    with connect(options.dsn, role="metrics") as conn:
        names = store.names(conn) if plan_or_name is None else [_migration_name(plan_or_name)]
        snapshots, now = from_store(conn, store, names)
    click.echo(render(families(snapshots, now), openmetrics=fmt == "openmetrics"), nl=False)


def _migration_name(plan_or_name: str) -> str:
    """A plan file's migration name, or the name itself."""
    if _is_plan_file(plan_or_name):
        return _load(plan_or_name).plan.name
    return plan_or_name


def _is_plan_file(plan_or_name: str) -> bool:
    return plan_or_name.endswith((".yaml", ".yml")) or Path(plan_or_name).is_file()


def _set_paused(options: Options, name: str, paused: bool) -> None:
    from pgshift.db import connect

    store = options.store()
    with connect(options.dsn, role="pause") as conn:
        state = store.get(conn, _migration_name(name)) if paused else None
        if state is not None and state.status in ("done", "rolled_back"):
            what = "is done" if state.status == "done" else "was rolled back"
            raise UsageError(f"migration {state.name} {what}: nothing runs that a pause would stop")
        if not store.set_paused(conn, _migration_name(name), paused):
            raise UsageError(f"no migration named {name} in state schema {options.state_schema}")
    verb = "paused: backfill and verify stop after the current batch" if paused else "resumed"
    click.echo(f"{_migration_name(name)} {verb}")


@main.command("set")
@click.argument("name")
@click.argument("assignments", nargs=-1, metavar="KEY=VALUE...")
@pass_options
def set_command(options: Options, name: str, assignments: tuple[str, ...]) -> None:
    """Change settings of a migration while it runs (batch_size, batch_time, batch_pause,
    nice_ratio, nice_min_active_sessions, max_active_sessions, max_replication_lag), from any
    shell; the run takes
    them before its next batch. `KEY=` goes back to the plan's value; no KEY=VALUE shows them."""
    from pgshift.db import connect
    from pgshift.engine.live_settings import describe, parse_assignments

    changes = parse_assignments(assignments)  # before connecting
    name = _migration_name(name)
    store = options.store()
    with connect(options.dsn, role="set") as conn:
        state = store.get(conn, name)
        if state is None:
            raise UsageError(f"no migration named {name} in state schema {options.state_schema}")
        if changes and state.status in ("done", "rolled_back"):
            what = "is done" if state.status == "done" else "was rolled back"
            raise UsageError(f"migration {name} {what}: no batch is left to take a setting")
        now = store.set_overrides(conn, name, changes) if changes else state.overrides
    click.echo(f"{name}: settings changed while running: {describe(now or {})}")


@main.command("forget")
@click.argument("name")
@pass_options
def forget_command(options: Options, name: str) -> None:
    """Take a done or rolled-back migration off `migrate status` (its events stay: `migrate
    history`); its plan may then be applied anew."""
    from pgshift.db import connect
    from pgshift.engine.locks import migration_lock

    name = _migration_name(name)
    store = options.store()
    with (
        migration_lock(options.dsn, name, "forget"),
        connect(options.dsn, role=f"forget {name}") as conn,
    ):
        state = store.get(conn, name)
        if state is None:
            raise UsageError(f"no migration named {name} in state schema {options.state_schema}")
        if state.status not in ("done", "rolled_back"):
            raise UsageError(
                f"migration {name} is {state.status}: finish it (`migrate apply`) or roll it"
                " back (`migrate rollback`) first; forgetting it would leave its objects behind"
            )
        store.forget(conn, name)
    click.echo(f"{name} forgotten; `migrate history {name}` still shows its events")


@main.command("history")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
@pass_options
def history_command(options: Options, name: str | None, as_json: bool) -> None:
    """The event log of migration NAME (who did what, when), or every migration recorded
    here, forgotten ones included."""
    from pgshift.db import connect
    from pgshift.report.history import render_events, render_histories

    store = options.store()
    with connect(options.dsn, role="history") as conn:
        if name is None:
            rows = store.histories(conn)
            click.echo(
                json.dumps(rows, default=str, indent=2) if as_json else render_histories(rows)
            )
            return
        name = _migration_name(name)
        events = store.events(conn, name) if store.exists(conn) else []
    if not events:
        raise UsageError(
            f"no events of a migration named {name} in state schema {options.state_schema}"
        )
    click.echo(
        json.dumps(events, default=str, indent=2) if as_json else render_events(name, events)
    )


@main.command("pause")
@click.argument("name")
@pass_options
def pause_command(options: Options, name: str) -> None:
    """Stop backfill and verify of NAME between batches (from any shell)."""
    _set_paused(options, name, True)


@main.command("resume")
@click.argument("name")
@pass_options
def resume_command(options: Options, name: str) -> None:
    """Let a paused backfill or verify of NAME continue."""
    _set_paused(options, name, False)


@main.command("runbook")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write the runbook to this file."
)
@pass_options
def runbook_command(options: Options, plan_file: str, output: str | None) -> None:
    """A Markdown runbook of PLAN_FILE: pre-flight checks, each phase's SQL, locks, go / no-go
    criteria and rollback, and where the point of no return is."""
    from pgshift.db import connect
    from pgshift.report.runbook import build_runbook

    loaded = _load(plan_file)
    if not options.has_database:
        raise UsageError(
            "runbook needs the database for its SQL and pre-flight checks: pass --dsn"
            " (or set $DATABASE_URL)"
        )
    if loaded.plan.move is not None:
        from pgshift.move.runbook import build_move_runbook

        text = _with_plan_locations(
            loaded,
            lambda: build_move_runbook(
                options.dsn, options.destination_dsn, loaded, options.store(), plan_file
            ),
        )
    else:
        with connect(options.dsn, role="runbook") as conn:
            text = _with_plan_locations(
                loaded, lambda: build_runbook(conn, loaded, options.store(), plan_file)
            )
    if output is None:
        click.echo(text, nl=False)
        return
    Path(output).write_text(text, encoding="utf-8")
    click.echo(f"runbook of {loaded.plan.name} written to {output}")


@main.command("demo")
@click.option("--rows", default=200_000, show_default=True, help="Rows in the demo table.")
@click.option(
    "--connections", default=4, show_default=True, help="Simulated application connections."
)
@click.option("--rate", default=50.0, show_default=True, help="Writes per second per connection.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Where the embedded PostgreSQL keeps its data.",
)
@click.option(
    "--mode",
    type=click.Choice(["versions", "rename"]),
    default="versions",
    show_default=True,
    help="versions: an old and a new application version side by side, no cutover;"
    " rename: one application, the columns renamed under it at cutover.",
)
@pass_options
def demo_command(
    options: Options,
    rows: int,
    connections: int,
    rate: float,
    data_dir: str | None,
    mode: Literal["versions", "rename"],
) -> None:
    """The whole flow on an embedded PostgreSQL with live simulated traffic."""
    from pgshift.demo.run import run_demo
    from pgshift.log import configure

    configure(options.log_format, options.verbose, events=False)  # the demo prints its own
    code = run_demo(
        dsn=options.given_dsn,
        rows=rows,
        connections=connections,
        rate=rate,
        data_dir=Path(data_dir) if data_dir else None,
        mode=mode,
        echo=click.echo,
    )
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
