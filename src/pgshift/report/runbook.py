"""`migrate runbook`: the Markdown a reviewer follows to run a migration.

Each phase is a short list of steps (lock, hold, effect, estimate) with its go / no-go and its
rollback; the SQL of every step is in an appendix at the end, which the steps link to. The
phases, their SQL, locks and estimates come from the same compiled plan and the same
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
from pgshift.report.clients import clients_data
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
    # several tables: each one's pre-flight read (the first is `preflight`)
    others: tuple[Preflight, ...] = ()


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
    notes += [w for part in compiled.each() for w in preview.warnings(part, compiled)]
    notes += preview.operator_notes(compiled)
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
        preflight=read_preflight(conn, compiled.each()[0]),
        measured=measured_backfills(compiled, state),
        notes=notes,
        generated_at=now or datetime.now(UTC),
        others=tuple(read_preflight(conn, part) for part in compiled.parts[1:]),
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


# A shadow read takes as long as the plan's queries, run on both shapes: not estimated.
QUERIES_TIME = "as long as its queries take, run on both shapes (not estimated)"


def _reads_queries(phase: Phase) -> bool:
    return any(isinstance(s, ShadowReadStep) for s in phase.forward)


def _short_work(step: Step, data: dict[str, Any]) -> str:
    """A step's table work in a table cell."""
    if isinstance(step, GateStep):
        return "none"
    if isinstance(step, ShadowReadStep):
        return "reads what its queries read, on both shapes"
    if data["rewrites"]:
        return "**rewrites**"
    if data["scans"]:
        return "scans"
    return "catalog only"


def _short_effect(lock: str) -> str:
    """A lock's effect on the application in a table cell (the guide above the phases says
    more)."""
    if lock == "none":
        return "none"
    if lock in BLOCKS_READS:
        return "**blocks reads and writes**"
    if lock in BLOCKS_WRITES:
        return "**blocks writes**"
    return "none"


def _anchor(phase: Phase, number: int, rollback: bool = False) -> str:
    """The id of a step's SQL in the appendix: `sql-2-1`, or `sql-2-r1` for a rollback step."""
    return f"sql-{phase.index + 1}-{'r' if rollback else ''}{number}"


APPENDIX = "Appendix: the SQL of every step"
APPENDIX_ID = "appendix-the-sql-of-every-step"  # GitHub's anchor of its heading


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
        self.preflight_keys: list[str] = []
        self.checks: list[tuple[str, str, Query]] = []  # (anchor, title, query) for the appendix

    @staticmethod
    def lock_text(lock: str) -> str:
        effect = _short_effect(lock)
        return f"`{lock}`" + (f": {effect}" if effect != "none" else "")

    def query_link(self, anchor: str, title: str, query: Query) -> str:
        """A link to `query`, printed in full in the appendix under `title`."""
        self.checks.append((anchor, title, query))
        return f"[the query](#{anchor})"

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
        self.guide()
        for phase in self.phases:
            self.phase(phase)
        self.appendix()
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
            *self.tables_lines(),
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
            "`migrate` takes the database from `$DATABASE_URL` (or `--dsn`). The SQL of every"
            f" step, in the [appendix](#{APPENDIX_ID}), is what `migrate apply` runs, with its"
            " own checkpoints: you do not run it by hand.",
            "",
        )
        for note in book.notes:
            self.add(f"> **Note:** {note}", "")

    def tables_lines(self) -> list[str]:
        if not self.compiled.parts:
            keys = ", ".join(f"`{k}`" for k in self.compiled.key)
            return [f"- **Table:** `{self.table.display}` (key: {keys})"]
        lines = [f"- **Tables** ({len(self.compiled.parts)}, one cutover for all):"]
        for part in (preview.table_data(p) for p in self.compiled.parts):
            keys = ", ".join(f"`{k}`" for k in part["key"])
            lines.append(f"  - `{part['table']}`: {part['change']} (key: {keys})")
        return lines

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
                rollback = _code(
                    "rollback"
                    + (f" --to {self.phases[phase.index - 1].name}" if phase.index else "")
                )
            rows.append(
                [
                    str(phase.index + 1),
                    f"`{phase.name}`",
                    ", ".join(locks) or "none",
                    QUERIES_TIME
                    if _reads_queries(phase)
                    else preview.human_seconds(data["estimated_seconds"]),
                    rollback,
                ]
            )
        self.add(
            *_table(["#", "phase", "locks", "estimate", "rollback"], rows),
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
        impact = clients_data(self.compiled)
        if not impact:
            return
        mode = self.plan.application.mode
        self.add(f"## Application clients (mode `{mode}`)", "")
        self.add(
            *_table(
                ["when", "who", "sees", "what to do"],
                [[c["when"], c["who"].rstrip(";"), c["error"], c["action"]] for c in impact],
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

    PREFLIGHT_TITLES = {
        "size": "1. Table size and row estimate",
        "disk": "2. Free disk needed",
        "replicas": "3. Replicas and their lag",
        "slots": "3. Replication slots",
        "long_transactions": "4. Transactions open longer than lock_timeout",
    }

    def preflight_query(self, key: str) -> str:
        """A link to a pre-flight query, printed in full in the appendix."""
        self.preflight_keys.append(key)
        return f"[The query](#preflight-{key})."

    def preflight(self) -> None:
        pre = self.book.preflight
        size = pre.size
        rows = size["row_estimate"]
        self.add(
            "## Pre-flight checks",
            "",
            f"Read from the live database at {self.book.generated_at.strftime('%H:%M:%S %Z')}."
            " Run each check's query (in the appendix) again just before starting: the numbers"
            " move.",
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
            *(
                f"- Table `{part.table.display}`: **{_bytes(other.size['table_bytes'])}**"
                f" ({_bytes(other.size['total_bytes'])} with its indexes), row estimate"
                f" **{max(other.size['row_estimate'], 0):,}**"
                for part, other in zip(self.compiled.parts[1:], self.book.others, strict=True)
            ),
            "",
            self.preflight_query("size"),
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
            "```sh",
            "df -h \"$(psql -Atc 'SHOW data_directory')\"",
            "```",
            "",
            self.preflight_query("disk"),
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
        waits = (
            "Nothing of this plan waits for replicas (it has no backfill); an index build writes"
            " its index's WAL at once, so watch their lag while one runs."
            if self.compiled.plan.target == "operations"
            else f"The backfill waits while any replica lags more than {limit}"
            " (max_replication_lag)."
        )
        self.add(
            f"{waits} Go only when every replica is `streaming` with its replay lag well under"
            " that and little WAL not replayed yet.",
            "",
            self.preflight_query("replicas"),
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
                self.preflight_query("slots"),
                "",
            )
        timeout = format_duration(self.settings.lock_timeout)
        strong = [
            f"`{p.name}`" for p in self.phases if any(s.lock in BLOCKS_WRITES for s in p.forward)
        ]
        self.add(
            f"### 4. Transactions open longer than lock_timeout ({timeout})",
            "",
            f"One holding a lock on `{self.table.display}` makes the strong-lock steps (in"
            f" {', '.join(strong) or 'no phase of this plan'}) time out after {timeout} and retry,"
            f" up to {self.settings.lock_retries} times, the application's queries on the table"
            " queueing behind each attempt.",
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
            self.preflight_query("long_transactions"),
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

    def guide(self) -> None:
        """What every step list below assumes, said once."""
        timeout = format_duration(self.settings.lock_timeout)
        new = self.compiled.new_table
        other = f" (or `{new.display}` where named)" if new is not None else ""
        where = (
            "the table each step starts with (the swap's: on all of them)"
            if self.compiled.parts
            else f"`{self.table.display}`{other}"
        )
        self.add(
            "## How to read the steps",
            "",
            f"- Locks are on {where}. While a lock that **blocks reads** is"
            " held or awaited, new queries on the table queue behind it. Effect none: reads and"
            " writes continue (`ROW EXCLUSIVE` locks the rows changed, `ROW SHARE` the rows read"
            " against deletes and key changes).",
            f"- A lock is awaited at most lock_timeout {timeout} per attempt, retried up to"
            f" {self.settings.lock_retries} times with backoff. A step runs in one transaction"
            " with its checkpoint, except a CONCURRENTLY one: it waits for older transactions"
            " without a time limit (blocking no reads or writes), and an INVALID index a failed"
            " attempt leaves is dropped before the retry.",
            "- After Ctrl-C or a crash, `migrate apply` again continues from the last finished"
            f" step. `{self.cmd('rollback', self.plan_arg)}` (without `--to`) undoes every"
            " applied phase. A step's number links to its SQL.",
            "",
        )

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
                f"> **{POINT_OF_NO_RETURN}.** `{phase.name}` has no rollback: once it has started,"
                " `migrate rollback` refuses, and going back needs a new migration.",
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
        self.add(f"**Estimate:** {estimate}", "")
        self.before(phase)
        last = phase.index == len(self.phases) - 1
        run = (
            self.cmd("apply", self.plan_arg)
            if last
            else self.cmd("apply", self.plan_arg, "--until", phase.name)
        )
        self.add(f"**Run:** `{run}`", "")
        rows = [
            self.step_row(phase, number, step, step_data)
            for number, (step, step_data) in enumerate(
                zip(phase.forward, data["steps"], strict=True), start=1
            )
        ]
        self.add(*_table(["step", "lock", "held", "effect", "table work"], rows), "")
        self.watch(phase)
        self.go(phase)
        self.rollback(phase, data)

    def step_row(self, phase: Phase, number: int, step: Step, data: dict[str, Any]) -> list[str]:
        """One step as a table row; its SQL is linked, in the appendix."""
        lock = data["lock"]
        locked = self.locked_table(step, data)
        where = f" on `{locked}`" if locked != self.table.display else ""
        held = data["lock_held"] if lock != "none" else "none"
        if lock != "none" and isinstance(step, SqlStep) and not step.transactional:
            held += "; outside a transaction"
        label = f"{phase.index + 1}.{number}"
        if data["sql"]:
            label = f"[{label}](#{_anchor(phase, number)})"
        return [
            f"{label} {data['description']}".replace("|", "\\|"),
            f"`{lock}`{where}" if lock != "none" else "none",
            held.replace("|", "\\|"),
            _short_effect(lock),
            _short_work(step, data),
        ]

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
        if phase.kind == "gate":
            line = f"`{status}` shows the gate waiting, and for what"
        elif phase.kind == "backfill":
            line = (
                f"`{status}` shows rows done, rows/s, the ETA and why it is throttled;"
                f" `{self.cmd('pause', self.name)}` stops it after the current batch (nothing is"
                f" lost), `{self.cmd('resume', self.name)}` continues it"
            )
        else:
            line = f"`{status}` for the phase's status"
        if any(s.lock in BLOCKS_READS or s.lock in BLOCKS_WRITES for s in phase.forward):
            line += "; [sessions waiting for a lock](#lock-waits)"
        if any(isinstance(s, SqlStep) and s.builds_index is not None for s in phase.forward):
            query = index_progress_query(self.indexed_table(phase))
            line += "; index builds' progress: " + self.query_link(
                f"index-progress-{phase.index + 1}",
                f"progress of {phase.name}'s index builds",
                query,
            )
        self.add(f"**Watch:** {line}.", "")

    def go(self, phase: Phase) -> None:
        status = self.cmd("status", self.name)
        items = [f"`{status}` shows `{phase.name}` `done`, no error."]
        regclass = self.indexed_table(phase)
        if any(isinstance(s, SqlStep) and not s.transactional for s in phase.forward):
            query = invalid_indexes_query(regclass)
            link = self.query_link(
                f"invalid-{phase.index + 1}", f"INVALID indexes after {phase.name}", query
            )
            items.append(f"No INVALID index left on the table: {link} returns no row.")
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
                link = self.query_link(
                    f"wrong-rows-{phase.index + 1}",
                    f"rows without their new value ({phase.name})",
                    check,
                )
                items.append(
                    f"Every row has its new value: {link} returns 0 (one full scan: run it"
                    " off-peak or on a replica)."
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
            "**Go / no-go:**",
            "",
            *(f"- [ ] {i}" for i in items),
            "",
        )

    def rollback_command(self, phase: Phase) -> str:
        if phase.index == 0:
            return self.cmd("rollback", self.plan_arg)
        return self.cmd("rollback", self.plan_arg, "--to", self.phases[phase.index - 1].name)

    def rollback(self, phase: Phase, data: dict[str, Any]) -> None:
        if not phase.reversible:
            if phase is self.no_return:
                self.add(
                    f"**Rollback:** none, the **{POINT_OF_NO_RETURN.lower()}**."
                    " Until it starts, the previous phase's rollback applies.",
                    "",
                )
            else:
                self.add("**Rollback:** none, this phase is irreversible.", "")
            return
        command = self.rollback_command(phase)
        what = (
            "undoes the whole migration (this phase is the first)"
            if phase.index == 0
            else f"undoes `{phase.name}` and any later phase that ran"
        )
        self.add(f"**Rollback:** `{command}` {what}:", "")
        if data["rollback"]:
            for number, step in enumerate(data["rollback"], start=1):
                link = f"[SQL](#{_anchor(phase, number, rollback=True)})" if step["sql"] else ""
                self.add(
                    f"- {step['description']} ({self.lock_text(step['lock'])}) {link}".rstrip()
                )
            self.add("")
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
        if blocked:
            self.add(
                f"A full rollback is refused: `{self.no_return.name if self.no_return else ''}`"
                " has started.",
                "",
            )

    # -------------------------------------------------------------- appendix

    def appendix(self) -> None:
        """The SQL of every step and rollback step, each under the anchor its step links to."""
        self.add(
            "---",
            "",
            f"## {APPENDIX}",
            "",
            "What `migrate apply` and `migrate rollback` run, step by step, with their own"
            " checkpoints: you do not run it by hand. Steps without SQL (gates, verify) are not"
            " listed.",
            "",
        )
        for phase in self.phases:
            data = self.data[phase.index]
            if not any(d["sql"] for d in data["steps"] + data["rollback"]):
                continue
            self.add(f"### Phase {phase.index + 1}: {phase.name}", "")
            for number, (step, step_data) in enumerate(
                zip(phase.forward, data["steps"], strict=True), start=1
            ):
                if not step_data["sql"]:
                    continue
                self.add(
                    f'<a id="{_anchor(phase, number)}"></a>',
                    f"**{phase.index + 1}.{number} {step_data['description']}** — runs"
                    f" {self.how_it_runs(step, step_data)}",
                    "",
                    *_sql_block(step_data["sql"]),
                    "",
                )
                if isinstance(step, BackfillStep):
                    statement = (
                        "the INSERT then copies exactly the rows of that key range"
                        if self.compiled.new_table is not None
                        else "the UPDATE then covers exactly that key range"
                    )
                    self.add(
                        "Each batch fills its own `%s`: the previous batch's last key and the"
                        f" batch size find the batch's upper key; {statement}.",
                        "",
                    )
            for number, step_data in enumerate(data["rollback"], start=1):
                if not step_data["sql"]:
                    continue
                self.add(
                    f'<a id="{_anchor(phase, number, rollback=True)}"></a>',
                    f"**Rollback of {phase.name}, step {number}: {step_data['description']}**",
                    "",
                    *_sql_block(step_data["sql"]),
                    "",
                )
        self.add(
            "### Queries to watch and check",
            "",
            '<a id="lock-waits"></a>',
            "**Sessions waiting for a lock** (the migration's own, or queued behind it):",
            "",
            *_query_block(LOCK_WAITS_QUERY),
            "",
        )
        for anchor, title, query in self.checks:
            self.add(
                f'<a id="{anchor}"></a>',
                f"**{title[0].upper()}{title[1:]}:**",
                "",
                *_query_block(query),
                "",
            )
        queries = self.book.preflight.queries
        for key in self.preflight_keys:
            self.add(
                f'<a id="preflight-{key}"></a>',
                f"**Pre-flight {self.PREFLIGHT_TITLES.get(key, key)}:**",
                "",
                *_query_block(queries[key]),
                "",
            )


def render(book: Runbook, plan_path: str, state_schema: str = "pgshift") -> str:
    return _Renderer(book, plan_path, state_schema).render()
