"""`migrate runbook`: the Markdown a reviewer follows to run a migration.

The phases, their SQL, locks and estimates come from the same compiled plan and the same
preview data as `migrate plan`, so the runbook shows exactly what `migrate apply` runs. What
only the live database knows is read at generation time: sizes, replicas, long transactions,
and the backfill throughput a run of this migration measured. Every pre-flight query is printed
beside its result, so a reviewer can run it again just before starting.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

import psycopg
from psycopg import sql

from pgshift import __version__
from pgshift.compile import CompiledPlan
from pgshift.db import Query
from pgshift.engine.executor import prepare
from pgshift.engine.preflight import Preflight, read_preflight
from pgshift.engine.state import MigrationState, StateStore
from pgshift.errors import PlanError
from pgshift.phases.base import (
    BLOCKS_READS,
    BLOCKS_WRITES,
    BackfillStep,
    DataCheckStep,
    GateStep,
    LockLevel,
    Phase,
    ShadowReadStep,
    SqlStep,
    Step,
    VerifyStep,
)
from pgshift.phases.columns_shape import ColumnsShape
from pgshift.plan.durations import format_duration
from pgshift.plan.load import LoadedPlan
from pgshift.plan.plan_lint import lint_plan
from pgshift.report import preview
from pgshift.report.clients import client_impact
from pgshift.report.report import phase_report

POINT_OF_NO_RETURN = "POINT OF NO RETURN"
LOCK_ORDER: tuple[str, ...] = get_args(LockLevel)  # weakest first


def invalid_indexes_query(regclass: str) -> Query:
    return sql.SQL(
        "SELECT indexrelid::regclass AS invalid_index FROM pg_index"
        " WHERE indrelid = {}::regclass AND NOT indisvalid"
    ).format(sql.Literal(regclass))


def index_progress_query(regclass: str) -> Query:
    return sql.SQL(
        """SELECT pid, phase, blocks_done, blocks_total, tuples_done, tuples_total
  FROM pg_stat_progress_create_index
 WHERE relid = {}::regclass"""
    ).format(sql.Literal(regclass))


LOCK_WAITS_QUERY = sql.SQL(
    """SELECT pid, wait_event_type, wait_event,
       date_trunc('second', clock_timestamp() - query_start) AS waiting,
       left(regexp_replace(query, '[[:space:]]+', ' ', 'g'), 80) AS query
  FROM pg_stat_activity
 WHERE datname = current_database() AND wait_event_type = 'Lock'
 ORDER BY query_start"""
)


def backfill_check_query(compiled: CompiledPlan) -> Query | None:
    """Rows whose shadow columns differ from `up` (0 when backfill and trigger did their job).
    The expressions are the plan's own SQL, checked by `plan.check` before anything compiles."""
    shape = compiled.context.shape
    if not isinstance(shape, ColumnsShape):
        return None
    return sql.SQL("SELECT count(*) AS wrong_rows FROM {} WHERE {}").format(
        compiled.table.qualified,
        sql.SQL(" OR ").join(
            sql.SQL("{} IS DISTINCT FROM ({})").format(sql.Identifier(c.shadow), sql.SQL(c.up))
            for c in shape.columns
        ),
    )


# ------------------------------------------------------------------ what the database says


@dataclass(frozen=True)
class Measured:
    """Backfill throughput a run of this migration measured (its phase row in the state)."""

    rows: int
    seconds: float
    rows_per_second: float
    finished_at: datetime


@dataclass(frozen=True)
class Runbook:
    loaded: LoadedPlan
    compiled: CompiledPlan
    state: MigrationState | None
    preflight: Preflight
    measured: dict[int, Measured]  # by phase index
    notes: list[str]
    generated_at: datetime


def measured_backfills(compiled: CompiledPlan, state: MigrationState | None) -> dict[int, Measured]:
    """Finished backfills of this migration, with their real rows/s (as `migrate status`
    computes it). A rolled-back phase has its counters reset, so it never counts here."""
    out: dict[int, Measured] = {}
    if state is None:
        return out
    for phase in compiled.phases:
        if phase.kind != "backfill" or phase.index >= len(state.phases):
            continue
        ps = state.phase(phase.index)
        if ps.kind != phase.kind or ps.status != "done" or ps.finished_at is None:
            continue
        report = phase_report(ps)
        if report["rows_per_second"] and report["seconds"]:
            out[phase.index] = Measured(
                rows=ps.rows_done,
                seconds=float(report["seconds"]),
                rows_per_second=float(report["rows_per_second"]),
                finished_at=ps.finished_at,
            )
    return out


def refuse_lint_errors(loaded: LoadedPlan) -> list[str]:
    """As `migrate plan` does: a plan whose raw SQL breaks a DDL safety rule gets no runbook.
    The deliberately allowed findings are returned, to be shown to the reviewer."""
    findings = lint_plan(loaded)
    errors = [f for f in findings if not f.finding.allowed]
    if errors:
        first = errors[0].finding
        raise PlanError(
            f"{len(errors)} DDL safety rule(s) broken, first {first.rule} {first.message};"
            " `migrate lint` lists them all",
            where=f"{errors[0].file}:{first.line}:{first.column}",
        )
    return [f"accepted DDL safety finding: {f}" for f in findings]


def collect(
    conn: psycopg.Connection[Any],
    loaded: LoadedPlan,
    store: StateStore,
    now: datetime | None = None,
) -> Runbook:
    notes = refuse_lint_errors(loaded)
    compiled, state = prepare(conn, loaded, store)
    notes += preview.warnings(compiled)
    if state is not None and state.plan_hash != loaded.sha256:
        notes.append(
            f"the state of {loaded.plan.name} in this database was recorded for a different"
            f" version of the plan (hash {state.plan_hash[:12]}): `migrate apply` refuses it"
            " unless rolled back first or given --force"
        )
    return Runbook(
        loaded=loaded,
        compiled=compiled,
        state=state,
        preflight=read_preflight(conn, compiled),
        measured=measured_backfills(compiled, state),
        notes=notes,
        generated_at=now or datetime.now(UTC),
    )


def build_runbook(
    conn: psycopg.Connection[Any],
    loaded: LoadedPlan,
    store: StateStore,
    plan_path: str,
    now: datetime | None = None,
) -> str:
    """The runbook of a plan, against the database `conn` is connected to. Reads only."""
    return render(collect(conn, loaded, store, now), plan_path, store.schema)


# ------------------------------------------------------------------ Markdown


def _bytes(n: int | float | None) -> str:
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds // 60:.0f}m {seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h {seconds % 3600 // 60:02.0f}m"


def _code(text: Any) -> str:
    """Inline code that survives backticks and pipes in the text (a Markdown table cell)."""
    value = str(text).replace("|", "\\|")
    runs = re.findall(r"`+", value)
    fence = "`" * (max((len(r) for r in runs), default=0) + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def _sql_block(statements: list[str]) -> list[str]:
    return ["```sql", *statements, "```"]


def _query_block(query: Query, indent: str = "") -> list[str]:
    """A query in a ```sql block; `indent` nests it in a list item."""
    return [indent + line for line in "\n".join(_sql_block([query.as_string() + ";"])).split("\n")]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _lock_effect(lock: str) -> str:
    if lock == "none":
        return "no lock on the table"
    if lock in BLOCKS_READS:
        return (
            "**blocks reads and writes** of the table while held; while it waits for the lock,"
            " new queries on the table queue behind it"
        )
    if lock in BLOCKS_WRITES:
        return "**blocks writes** to the table while held (reads continue)"
    if lock == "SHARE UPDATE EXCLUSIVE":
        return (
            "reads and writes continue; conflicts only with autovacuum and other schema changes"
            " of the table"
        )
    if lock == "ROW EXCLUSIVE":
        return "reads and writes continue; only the rows being changed are locked"
    if lock == "ROW SHARE":
        return (
            "reads and writes continue; the rows being read are locked against deletes and key"
            " changes until the batch commits"
        )
    return "reads and writes continue"


# A shadow read takes as long as the plan's queries, run on both shapes: not estimated.
QUERIES_TIME = "as long as its queries take, run on both shapes (not estimated)"


def _reads_queries(phase: Phase) -> bool:
    return any(isinstance(s, ShadowReadStep) for s in phase.forward)


def _table_work(data: dict[str, Any]) -> str:
    if data["rewrites"]:
        return "**rewrites** the table"
    if data["scans"]:
        return "scans the table"
    return "neither scans nor rewrites the table (catalog or trigger changes only)"


class _Renderer:
    def __init__(self, book: Runbook, plan_path: str, state_schema: str) -> None:
        self.book = book
        self.compiled = book.compiled
        self.plan = book.compiled.plan
        self.settings = self.plan.settings
        self.table = book.compiled.table
        self.name = self.plan.name
        self.plan_arg = shlex.quote(plan_path)
        self.migrate = "migrate" + (
            f" --state-schema {shlex.quote(state_schema)}" if state_schema != "pgshift" else ""
        )
        self.phases = book.compiled.phases
        # the first irreversible phase: once it has run, nothing before it can be undone
        self.no_return = next((p for p in self.phases if not p.reversible), None)
        self.data = {
            p.index: preview.phase_data(
                p,
                self.compiled,
                book.measured[p.index].rows_per_second if p.index in book.measured else None,
            )
            for p in self.phases
        }
        self.lines: list[str] = []

    def cmd(self, *words: str) -> str:
        return " ".join([self.migrate, *words])

    def indexed_table(self, phase: Phase) -> str:
        """The table a phase's index builds are on, as regclass text: a `new_table` backfill
        builds the deferred indexes of `create` on the new table; every other build is on
        the live table."""
        new = self.compiled.new_table
        if new is not None and phase.kind == "backfill":
            return new.regclass
        return self.table.regclass

    def locked_table(self, step: Step, data: dict[str, Any]) -> str:
        """The table a step locks: a `new_table` plan's new table for the build of an index
        of `create` and for statements naming only the new table; else the live table."""
        new = self.compiled.new_table
        if new is not None and isinstance(step, SqlStep):
            if step.builds_index is not None and step.builds_index[1] in {
                i.name for i in new.indexes
            }:
                return new.display
            texts: list[str] = data["sql"]
            if texts and all(new.regclass in t and self.table.regclass not in t for t in texts):
                return new.display
        return self.table.display

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    # -------------------------------------------------------------- header

    def render(self) -> str:
        self.header()
        self.overview()
        self.clients()
        self.preflight()
        for phase in self.phases:
            self.phase(phase)
        self.add("---", "", f"Generated by pgshift {__version__}.")
        return "\n".join(self.lines) + "\n"

    def header(self) -> None:
        book, pre = self.book, self.book.preflight
        total = sum(d["estimated_seconds"] for d in self.data.values())
        s = self.settings
        self.add(f"# Runbook: {self.name}", "")
        if self.plan.description:
            self.add(self.plan.description, "")
        self.add(
            f"- **Migration:** `{self.name}`",
            f"- **Table:** `{self.table.display}` (key: {', '.join(f'`{k}`' for k in self.compiled.key)})",
            f"- **Plan:** `{self.plan_arg}` (hash `{book.loaded.sha256[:12]}`)",
            f"- **Generated:** {book.generated_at.strftime('%Y-%m-%d %H:%M:%S %Z')} by pgshift"
            f" {__version__}, against database `{pre.database}` ({pre.server_version})",
            f"- **State in this database:** {self.state_line()}",
            f"- **Estimated duration:** {preview.human_seconds(total)} of work in total, plus"
            " the time you take between phases",
            f"- **Settings:** lock_timeout {format_duration(s.lock_timeout)}, lock_retries"
            f" {s.lock_retries}, batch_size {s.batch_size} (batch_time"
            f" {format_duration(s.batch_time)}), max_replication_lag"
            f" {format_duration(s.max_replication_lag)}, on_failure {s.on_failure}",
            "",
            "Every `migrate` command below takes the database from `$DATABASE_URL` (or"
            " `--dsn`). The SQL shown is what `migrate apply` runs, step by step, with its own"
            " checkpoints: you do not run it by hand.",
            "",
        )
        for note in book.notes:
            self.add(f"> **Note:** {note}", "")

    def state_line(self) -> str:
        state = self.book.state
        if state is None:
            return "not started"
        done = [p.name for p in state.phases if p.status == "done"]
        line = f"`{state.status}`"
        line += f"; phases done: {', '.join(done)}" if done else "; no phase done"
        if state.last_error:
            line += f"; last error: {state.last_error}"
        return line

    def overview(self) -> None:
        self.add("## Overview", "")
        rows = []
        for phase in self.phases:
            data = self.data[phase.index]
            locks = sorted(
                {s["lock"] for s in data["steps"] if s["lock"] != "none"},
                key=LOCK_ORDER.index,
                reverse=True,
            )
            if phase is self.no_return:
                rollback = f"**none: {POINT_OF_NO_RETURN.lower()}**"
            elif not phase.reversible:
                rollback = "none"
            else:
                rollback = _code(self.rollback_command(phase))
            rows.append(
                [
                    str(phase.index + 1),
                    f"`{phase.name}`",
                    phase.summary,
                    ", ".join(locks) or "none",
                    QUERIES_TIME
                    if _reads_queries(phase)
                    else preview.human_seconds(data["estimated_seconds"]),
                    rollback,
                ]
            )
        self.add(
            *_table(["#", "phase", "does", "locks", "estimate", "rollback"], rows),
            "",
        )
        if self.no_return is not None:
            self.add(
                f"The **{POINT_OF_NO_RETURN.lower()}** is phase {self.no_return.index + 1},"
                f" `{self.no_return.name}`: every phase before it can be rolled back; once it"
                " has started, `migrate rollback` refuses.",
                "",
            )
        self.add(*self.mermaid(), "")

    def clients(self) -> None:
        """Which application clients see an error at which step, and what to do."""
        impact = client_impact(self.compiled)
        if not impact:
            return
        mode = self.plan.application.mode
        self.add(f"## Application clients (mode `{mode}`)", "")
        self.add(
            *_table(
                ["when", "who", "sees", "what to do"],
                [[c.when, c.who.rstrip(";"), c.error, c.action] for c in impact],
            ),
            "",
        )

    def mermaid(self) -> list[str]:
        out = ["```mermaid", "flowchart LR", "    start([before the migration])"]
        previous = "start"
        for phase in self.phases:
            node = f"p{phase.index + 1}"
            label = f"{phase.index + 1}. {phase.name}"
            if phase is self.no_return:
                label += f"<br/>{POINT_OF_NO_RETURN}"
            out.append(f'    {previous} --> {node}["{label}"]')
            previous = node
        out.append(f"    {previous} --> finish([done])")
        for phase in self.phases:
            if not phase.reversible:
                continue
            target = f"p{phase.index}" if phase.index > 0 else "start"
            label = "rollback" + (
                f" --to {self.phases[phase.index - 1].name}" if phase.index > 0 else ""
            )
            out.append(f'    p{phase.index + 1} -. "{label}" .-> {target}')
        if self.no_return is not None:
            out += [
                f"    class p{self.no_return.index + 1} noreturn",
                "    classDef noreturn fill:#fdd,stroke:#c00,stroke-width:3px",
            ]
        out.append("```")
        return out

    # -------------------------------------------------------------- pre-flight

    def preflight(self) -> None:
        pre = self.book.preflight
        size = pre.size
        rows = size["row_estimate"]
        self.add(
            "## Pre-flight checks",
            "",
            f"Read from the live database at {self.book.generated_at.strftime('%H:%M:%S %Z')}."
            " Run each query again just before starting: the numbers move.",
            "",
            "### 1. Table size and row estimate",
            "",
            f"- Table `{self.table.display}`: **{_bytes(size['table_bytes'])}**"
            f" ({_bytes(size['total_bytes'])} with its indexes)",
            (
                f"- Row estimate: **{rows:,}** rows (pg_class.reltuples; last analyzed"
                f" {_when(size['analyzed_at']) if size['analyzed_at'] else 'never'})"
                if rows is not None and rows >= 0
                else "- Row estimate: **unknown**: the table was never analyzed; run"
                f" `ANALYZE {self.table.regclass};` first so the estimates below mean something"
            ),
            "",
            *_query_block(pre.queries["size"]),
            "",
            "### 2. Free disk needed",
            "",
            "Until vacuum reclaims the old row versions and contract drops the old indexes, the"
            " migration needs about this much more disk:",
            "",
            *_table(
                ["what", "size"],
                [
                    [
                        r["what"],
                        f"**{_bytes(r['bytes'])}**" if r["what"] == "total" else _bytes(r["bytes"]),
                    ]
                    for r in pre.disk
                ],
            ),
            "",
            "The plan's own `sql` phases are not counted. WAL grows by at least as much while"
            " the backfill runs (more while an archive or a replication slot falls behind).",
            "Check the free space where the data lives (on a managed service, its free-storage"
            " metric instead):",
            "",
            *_query_block(pre.queries["disk"]),
            "",
            "```sh",
            "df -h \"$(psql -Atc 'SHOW data_directory')\"",
            "```",
            "",
            "### 3. Replicas and their lag",
            "",
        )
        limit = format_duration(self.settings.max_replication_lag)
        if pre.replicas:
            self.add(
                *_table(
                    ["replica", "state", "sync", "replay lag", "WAL not replayed yet"],
                    [
                        [
                            _code(r["replica"]),
                            str(r["state"]),
                            str(r["sync_state"]),
                            f"{r['replay_lag_seconds']}s"
                            if r["replay_lag_seconds"] is not None
                            else "none reported",
                            str(r["not_replayed"] or "unknown"),
                        ]
                        for r in pre.replicas
                    ],
                ),
                "",
            )
        else:
            self.add("Replicas streaming from this server: **none**.", "")
        self.add(
            f"The backfill waits while any replica lags more than {limit} (max_replication_lag)."
            " Go only when every replica is `streaming` with its replay lag well under that and"
            " little WAL not replayed yet.",
            "",
            *_query_block(pre.queries["replicas"]),
            "",
        )
        if pre.slots:
            self.add(
                "Replication slots (each keeps the WAL of the whole backfill until its consumer"
                " reads it; a logical consumer also receives every backfilled row):",
                "",
                *_table(
                    ["slot", "type", "active", "WAL retained"],
                    [
                        [
                            _code(s["slot_name"]),
                            str(s["slot_type"]),
                            str(s["active"]),
                            str(s["wal_retained"] or "unknown"),
                        ]
                        for s in pre.slots
                    ],
                ),
                "",
                *_query_block(pre.queries["slots"]),
                "",
            )
        timeout = format_duration(self.settings.lock_timeout)
        strong = [
            f"`{p.name}`" for p in self.phases if any(s.lock in BLOCKS_WRITES for s in p.forward)
        ]
        self.add(
            f"### 4. Transactions open longer than lock_timeout ({timeout})",
            "",
            f"Any of these holding a lock on `{self.table.display}` makes the strong-lock steps"
            f" (in {', '.join(strong) or 'no phase of this plan'}) time out after {timeout} and"
            f" retry, up to {self.settings.lock_retries} times; while each attempt waits, the"
            " application's queries on the table queue behind it.",
            "",
        )
        if pre.long_transactions:
            self.add(
                *_table(
                    ["pid", "age", "state", "holds a lock on the table", "query (first 80 chars)"],
                    [
                        [
                            str(t["pid"]),
                            _age(t["age_seconds"]),
                            str(t["state"]),
                            "**yes**" if t["locks_table"] else "no",
                            _code(t["query"] or ""),
                        ]
                        for t in pre.long_transactions
                    ],
                ),
                "",
                "Find out what they are before starting; end one only if you own it"
                " (`SELECT pg_terminate_backend(pid);` rolls it back).",
                "",
            )
        else:
            self.add("Transactions open longer than that: **none**.", "")
        self.add(
            *_query_block(pre.queries["long_transactions"]),
            "",
            "### 5. The plan and its state",
            "",
            "The plan still compiles against the live table, and nothing unexpected is recorded"
            " for it:",
            "",
            "```sh",
            self.cmd("plan", self.plan_arg),
            self.cmd("status", self.name),
            "```",
            "",
        )

    # -------------------------------------------------------------- phases

    def phase(self, phase: Phase) -> None:
        data = self.data[phase.index]
        count = len(self.phases)
        title = f"## Phase {phase.index + 1} of {count}: {phase.name}"
        if phase.name != phase.kind:
            title += f" ({phase.kind})"
        if phase is self.no_return:
            self.add("---", "", f"{title} — {POINT_OF_NO_RETURN}", "")
            self.add(
                "> [!CAUTION]",
                f"> **{POINT_OF_NO_RETURN}.** `{phase.name}` has no rollback. Once it has started,"
                " `migrate rollback` refuses, and going back needs a new migration. Start it only"
                " when the application has run on the new shape long enough that you will not"
                " want to go back.",
                "",
            )
        else:
            self.add(title, "")
        self.add(f"**What it does:** {phase.summary}.", "")
        status = self.phase_status(phase)
        if status:
            self.add(f"**Status in this database:** {status}", "")
        estimate = (
            QUERIES_TIME
            if _reads_queries(phase)
            else f"{preview.human_seconds(data['estimated_seconds'])} ({self.phase_basis(phase)})"
        )
        self.add(f"**Estimated duration:** {estimate}", "")
        self.before(phase)
        last = phase.index == len(self.phases) - 1
        self.add(
            "**Run:**",
            "",
            "```sh",
            self.cmd("apply", self.plan_arg)
            if last
            else self.cmd("apply", self.plan_arg, "--until", phase.name),
            "```",
            "",
        )
        for number, (step, step_data) in enumerate(
            zip(phase.forward, data["steps"], strict=True), start=1
        ):
            self.step(f"{phase.index + 1}.{number}", phase, step, step_data)
        self.watch(phase)
        self.go(phase)
        self.rollback(phase, data)

    def phase_status(self, phase: Phase) -> str | None:
        state = self.book.state
        if state is None or phase.index >= len(state.phases):
            return None
        ps = state.phase(phase.index)
        text = f"`{ps.status}`"
        if ps.finished_at is not None and ps.status in ("done", "failed"):
            text += f" at {_when(ps.finished_at)}"
        if ps.error:
            text += f" (error: {ps.error})"
        return text

    def phase_basis(self, phase: Phase) -> str:
        measured = self.book.measured.get(phase.index)
        if measured is not None:
            return self.measured_text(measured)
        bases = [self.step_basis(s) for s in phase.forward]
        kept = [b for b in bases if b is not None]
        return "; ".join(dict.fromkeys(kept)) if kept else "catalog changes only: milliseconds"

    def measured_text(self, m: Measured) -> str:
        return (
            f"based on **measured throughput**: {m.rows:,} rows in {m.seconds:.1f}s ="
            f" {m.rows_per_second:,.0f} rows/s, by the run of this migration that finished"
            f" {_when(m.finished_at)}"
        )

    def step_basis(self, step: Step) -> str | None:
        table = self.table
        if isinstance(step, BackfillStep):
            rows = max(table.row_estimate, 0)
            return (
                f"from catalog statistics: ~{rows:,} rows at an assumed"
                f" {preview.BACKFILL_ROWS_PER_SECOND:,} rows/s; no run has measured it here yet"
            )
        if isinstance(step, GateStep):
            approval = "it waits for an approval, as long as that takes"
            if step.wait:
                wait = f"its soak wait of {format_duration(step.wait)} after the previous phase"
                return f"{wait}; then {approval}" if step.approval else wait
            return f"no work; {approval}" if step.approval else "passes at once"
        if isinstance(step, SqlStep) and step.builds_index is not None:
            return (
                f"from catalog statistics: an index build over {_bytes(table.table_bytes)} at an"
                f" assumed {_bytes(preview.INDEX_BUILD_BYTES_PER_SECOND)}/s"
            )
        if step.scans:
            return (
                f"from catalog statistics: a scan of {_bytes(table.table_bytes)} at an assumed"
                f" {_bytes(preview.SCAN_BYTES_PER_SECOND)}/s"
            )
        return None

    def step(self, number: str, phase: Phase, step: Step, data: dict[str, Any]) -> None:
        timeout = format_duration(self.settings.lock_timeout)
        lock = data["lock"]
        measured = self.book.measured.get(phase.index)
        basis = (
            self.measured_text(measured)
            if measured is not None and isinstance(step, BackfillStep)
            else self.step_basis(step) or "catalog changes only"
        )
        lines = [
            f"### Step {number}: {data['description']}",
            "",
            f"- **Lock:** `{lock}` on `{self.locked_table(step, data)}`: {_lock_effect(lock)}"
            if lock != "none"
            else "- **Lock:** none",
        ]
        if lock != "none" and isinstance(step, SqlStep) and not step.transactional:
            lines.append(
                f"- **Held:** {data['lock_held']}; a CONCURRENTLY statement waits for older"
                " transactions without a time limit (its lock blocks no reads or writes); any"
                f" other statement waits at most lock_timeout {timeout}, retried up to"
                f" {self.settings.lock_retries} times with backoff"
            )
        elif lock != "none":
            lines.append(
                f"- **Held:** {data['lock_held']}; each attempt waits at most lock_timeout"
                f" {timeout} (less when the server's deadlock_timeout is shorter), retried up to"
                f" {self.settings.lock_retries} times with backoff"
            )
        if isinstance(step, ShadowReadStep):
            work, estimate = "reads what its queries read, on both shapes", QUERIES_TIME
        else:
            work = "none" if isinstance(step, GateStep) else _table_work(data)
            estimate = f"{preview.human_seconds(data['estimated_seconds'])} ({basis})"
        lines += [
            f"- **Table work:** {work}",
            "- **Runs:** " + self.how_it_runs(step, data),
            f"- **Estimated duration:** {estimate}",
            "",
        ]
        if data["sql"]:
            lines += [*_sql_block(data["sql"]), ""]
        if isinstance(step, BackfillStep):
            statement = (
                "the INSERT then copies exactly the rows of that key range"
                if self.compiled.new_table is not None
                else "the UPDATE then covers exactly that key range"
            )
            lines += [
                "Each batch fills its own `%s`: the previous batch's last key and the batch size"
                f" find the batch's upper key; {statement}.",
                "",
            ]
        self.add(*lines)

    def how_it_runs(self, step: Step, data: dict[str, Any]) -> str:
        if isinstance(step, GateStep):
            return (
                "changes nothing: `migrate apply` stops here (exit status 3) until the gate"
                " passes, then continues"
            )
        if isinstance(step, VerifyStep):
            return "one short REPEATABLE READ transaction per chunk, each checkpointed"
        if isinstance(step, DataCheckStep):
            return (
                "read only, one short transaction per batch (sized by batch_time, throttled and"
                " pausable like the backfill), each checkpointed; a row that fails stops the"
                " phase before the trigger exists, naming its key"
            )
        if isinstance(step, ShadowReadStep):
            return "one REPEATABLE READ, read-only transaction for every query on both shapes"
        if data["in_transaction"]:
            return "in one transaction with its checkpoint"
        return (
            "outside a transaction (CONCURRENTLY); an INVALID index left by a failed attempt is"
            " dropped before the retry"
        )

    def before(self, phase: Phase) -> None:
        items: list[str] = []
        if phase.kind == "cutover":
            items = [
                "Every phase before this one is `done` in `" + self.cmd("status", self.name) + "`.",
                "No transaction older than lock_timeout holds a lock on the table: pre-flight"
                " check 4 returns no row marked **yes**.",
                "Replicas have caught up: pre-flight check 3 shows every replica near 0 bytes of"
                " WAL not replayed yet.",
                "The application is ready for the new column types (its drivers and ORMs"
                " re-read column types after the rename; pooled connections with prepared"
                " statements may see `cached plan must not change result type` once).",
            ]
        elif phase is self.no_return:
            items = [
                "Every phase before this one is `done`, and the application has run on the new"
                " shape for as long as your rollback window (no errors, no code reading the old"
                " columns).",
                "You accept that after this phase the only way back is a new migration.",
            ]
        if items:
            self.add("**Before you start:**", "", *(f"- [ ] {i}" for i in items), "")

    def watch(self, phase: Phase) -> None:
        status = self.cmd("status", self.name)
        self.add("**How to watch it:**", "")
        if phase.kind == "gate":
            self.add(f"- `{status}` shows the gate waiting, and for what.")
        elif phase.kind == "backfill":
            self.add(
                f"- `{status}` shows rows done, rows/s and the ETA, and why it waits when it is"
                f" throttled (`{status} --json` for scripts).",
                f"- `{self.cmd('pause', self.name)}` stops it after the current batch, from any"
                f" shell; `{self.cmd('resume', self.name)}` continues it. Batches commit with"
                " their checkpoint, so a stop or a crash loses nothing.",
            )
        else:
            self.add(
                f"- `{status}` shows the phase's status and any error.",
                "- Ctrl-C (or a crash) keeps the state: `migrate apply` again continues from the"
                " last finished step.",
            )
        if any(isinstance(s, SqlStep) and s.builds_index is not None for s in phase.forward):
            self.add("- Index builds report their progress here:", "")
            self.add(*_query_block(index_progress_query(self.indexed_table(phase)), "  "))
        if any(s.lock in BLOCKS_READS or s.lock in BLOCKS_WRITES for s in phase.forward):
            self.add(
                "- Sessions waiting for a lock (the migration's own, or queued behind it):", ""
            )
            self.add(*_query_block(LOCK_WAITS_QUERY, "  "))
        self.add("")

    def go(self, phase: Phase) -> None:
        status = self.cmd("status", self.name)
        items = [f"`{status}` shows `{phase.name}` `done`, with no error."]
        regclass = self.indexed_table(phase)
        if any(isinstance(s, SqlStep) and not s.transactional for s in phase.forward):
            items.append(
                "No INVALID index left on the table (this returns no row):\n\n"
                + "\n".join(_query_block(invalid_indexes_query(regclass), "  "))
            )
        for step in phase.forward:
            if isinstance(step, GateStep) and step.approval:
                items.insert(
                    0,
                    "The reviewer who owns this stop approves it:"
                    f" `{self.cmd('approve', self.plan_arg, step.gate, '--by', 'NAME')}`, then"
                    f" `{self.cmd('apply', self.plan_arg)}` continues past it.",
                )
        if phase.kind == "dual_write":
            items.append(
                "The application's writes succeed and their latency has not changed: the trigger"
                " now runs inside every INSERT and UPDATE."
            )
        if phase.kind == "backfill":
            rows = max(self.table.row_estimate, 0)
            items.append(f"Rows done is close to the estimate (~{rows:,}).")
            check = backfill_check_query(self.compiled)
            if check is not None:
                items.append(
                    "Every row has its new value (0 expected; one full scan, so run it off-peak"
                    " or on a replica):\n\n" + "\n".join(_query_block(check, "  "))
                )
            items.append(
                "Replicas have caught up (pre-flight check 3: near 0 bytes of WAL not replayed"
                " yet) before the next phase."
            )
        if phase.kind == "cutover":
            items.append(
                "The application works on the new shape: error rate and latency as before."
                " From here until contract, rolling back is still one command."
            )
        self.add(
            "**Go / no-go before moving on:**",
            "",
            *(f"- [ ] {i}" for i in items),
            "",
        )

    def rollback_command(self, phase: Phase) -> str:
        if phase.index == 0:
            return self.cmd("rollback", self.plan_arg)
        return self.cmd("rollback", self.plan_arg, "--to", self.phases[phase.index - 1].name)

    def rollback(self, phase: Phase, data: dict[str, Any]) -> None:
        self.add("**Rollback at this point:**", "")
        if not phase.reversible:
            if phase is self.no_return:
                self.add(
                    f"None: this is the **{POINT_OF_NO_RETURN.lower()}**. Before this phase"
                    " starts, the previous phase's rollback still applies; once it has started,"
                    " `migrate rollback` refuses.",
                    "",
                )
            else:
                self.add("None: this phase is irreversible.", "")
            return
        command = self.rollback_command(phase)
        self.add("```sh", command, "```", "")
        if phase.index == 0:
            self.add("Undoes the whole migration (this phase is the first):", "")
        else:
            self.add(
                f"Undoes `{phase.name}` (and any later phase that ran), keeping"
                f" `{self.phases[phase.index - 1].name}` and what came before:",
                "",
            )
        if data["rollback"]:
            for step in data["rollback"]:
                self.add(
                    f"- {step['description']} (lock `{step['lock']}`:"
                    f" {_lock_effect(step['lock'])})",
                    "",
                    *_sql_block(step["sql"]),
                    "",
                )
        else:
            self.add(
                "- nothing to run for this phase itself"
                + (
                    " (the data it wrote goes with expand's rollback)"
                    if phase.kind == "backfill"
                    else " (a gate rolled back forgets its approval)"
                    if phase.kind == "gate"
                    else ""
                ),
                "",
            )
        blocked = self.no_return is not None and self.no_return.index < phase.index
        if phase.index > 0 and not blocked:
            earlier = ", ".join(p.name for p in reversed(self.phases[: phase.index + 1]))
            self.add(
                f"`{self.cmd('rollback', self.plan_arg)}` undoes every applied phase instead,"
                f" in reverse order ({earlier}), each with the rollback shown in its section.",
                "",
            )
        elif blocked:
            self.add(
                f"A full rollback is refused: `{self.no_return.name if self.no_return else ''}`"
                " has started.",
                "",
            )


def render(book: Runbook, plan_path: str, state_schema: str = "pgshift") -> str:
    return _Renderer(book, plan_path, state_schema).render()
