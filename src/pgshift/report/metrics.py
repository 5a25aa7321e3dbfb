"""The migrations' state as metrics for Prometheus (docs/operations.md#metrics).

One set of metric families, written two ways: the OpenMetrics text format (what `migrate
metrics` prints and `--metrics-port` serves to a scraper asking for it), and the Prometheus
text format 0.0.4 (what `--metrics-file` writes: node_exporter's textfile collector reads only
that one, and refuses OpenMetrics' `# EOF` and counter naming). Only gauges and counters are
used, so both say the same. Everything comes from the state store, so any shell can ask
(`migrate metrics`); a running `apply` or `rollback` adds what only it knows, the current
rows/s, and rewrites its file at every batch and transition.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import psycopg
import structlog

from pgshift.engine.observe import StoreListener
from pgshift.engine.state import MigrationState, PhaseState, StateStore
from pgshift.errors import UsageError

log = structlog.get_logger("pgshift.metrics")

OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

STATUSES = ("pending", "running", "waiting", "paused", "failed", "rolled_back", "done")
PHASE_STATUSES = ("pending", "running", "waiting", "done", "failed", "rolled_back")
THROTTLE_REASONS = (
    "paused",
    "replica_lag",
    "max_active_sessions",
    "throttle_query",
    "gate",
    "copy",
    "other",
)
# events counted by the counters
LOCK_WAIT = "lock not granted"
BLOCKER_TERMINATED = "blocker terminated"
HOOK_FAILED = "hook failed"

_LAG = re.compile(r"^replica (?P<replica>.+) lags (?P<seconds>[0-9.]+)s")
RATE_WINDOW_SECONDS = 10.0


def throttle_reason(reason: str | None) -> str | None:
    """The kind of wait a stored throttle reason describes (a label with few values; the full
    text, with its changing numbers, is `migrate status`'s)."""
    if reason is None:
        return None
    if reason.startswith("paused"):
        return "paused"
    if _LAG.match(reason):
        return "replica_lag"
    if "max_active_sessions" in reason:
        return "max_active_sessions"
    if reason.startswith("throttle_query"):
        return "throttle_query"
    if reason.startswith("gate "):
        return "gate"
    if reason.startswith("the copy"):
        return "copy"
    return "other"


@dataclass
class Family:
    """One metric family; a counter's name is without `_total` (its samples have it)."""

    name: str
    kind: Literal["gauge", "counter"]
    help: str
    unit: str | None = None
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))


@dataclass
class Snapshot:
    """What one migration's metrics are made of: its state, its events counted by name, and
    the live rows/s of phases (by index) a running command measured."""

    state: MigrationState
    counts: Counter[str]
    rates: dict[int, float] = field(default_factory=dict)


def _elapsed(phase: PhaseState, now: datetime) -> float | None:
    if phase.started_at is None or phase.status == "pending":
        return None
    end = phase.finished_at if phase.status not in ("running", "waiting") else None
    return max(((end or now) - phase.started_at).total_seconds(), 0.0)


def families(snapshots: list[Snapshot], now: datetime) -> list[Family]:
    """Every family, with a sample per migration (and phase) where it applies."""
    status = Family(
        "pgshift_migration_status",
        "gauge",
        "1 for the migration's status, 0 for the others",
    )
    paused = Family(
        "pgshift_migration_paused", "gauge", "1 while migrate pause is in force, else 0"
    )
    throttled = Family(
        "pgshift_migration_throttled",
        "gauge",
        "1 for what the migration waits for now (reason), 0 for the others",
    )
    lag = Family(
        "pgshift_replica_lag_seconds",
        "gauge",
        "how far behind a replica is while the migration waits for it (max_replication_lag)",
        unit="seconds",
    )
    row_errors = Family(
        "pgshift_migration_row_errors",
        "gauge",
        "rows the dual-write triggers could not map, waiting to be fixed",
    )
    phase_status = Family(
        "pgshift_phase_status", "gauge", "1 for the phase's status, 0 for the others"
    )
    rows_done = Family(
        "pgshift_phase_rows_done",
        "gauge",
        "rows done by the phase: copied (backfill), compared (verify), checked (data check)",
    )
    rows_expected = Family(
        "pgshift_phase_rows_expected",
        "gauge",
        "rows the phase expects to do (the table's estimate), when known",
    )
    progress = Family(
        "pgshift_phase_progress_ratio",
        "gauge",
        "rows done over rows expected, 0 to 1",
        unit="ratio",
    )
    rate = Family(
        "pgshift_phase_rows_per_second",
        "gauge",
        "rows per second: over the last seconds while apply runs, else the phase's average",
    )
    duration = Family(
        "pgshift_phase_duration_seconds",
        "gauge",
        "how long the phase has run (or ran)",
        unit="seconds",
    )
    lock_waits = Family(
        "pgshift_lock_waits",
        "counter",
        "lock requests not granted within lock_timeout (or deadlocks), each retried or failed",
    )
    terminated = Family(
        "pgshift_blockers_terminated",
        "counter",
        "sessions terminated for blocking cutover (terminate_blockers_after)",
    )
    hook_failures = Family("pgshift_hook_failures", "counter", "hooks that failed or timed out")
    for snap in snapshots:
        state = snap.state
        name = state.name
        for value in STATUSES:
            status.add(
                int(state.status == value), migration=name, table=state.table_name, status=value
            )
        paused.add(int(state.paused), migration=name)
        why = throttle_reason(state.throttle_reason)
        for value in THROTTLE_REASONS:
            throttled.add(int(why == value), migration=name, reason=value)
        found = _LAG.match(state.throttle_reason or "")
        if found:
            lag.add(float(found["seconds"]), migration=name, replica=found["replica"])
        row_errors.add(state.row_errors, migration=name)
        lock_waits.add(snap.counts[LOCK_WAIT], migration=name)
        terminated.add(snap.counts[BLOCKER_TERMINATED], migration=name)
        hook_failures.add(snap.counts[HOOK_FAILED], migration=name)
        for phase in state.phases:
            labels = {"migration": name, "phase": phase.name}
            for value in PHASE_STATUSES:
                phase_status.add(
                    int(phase.status == value), **labels, kind=phase.kind, status=value
                )
            elapsed = _elapsed(phase, now)
            if elapsed is not None:
                duration.add(round(elapsed, 3), **labels)
            if phase.rows_done or phase.rows_total:
                rows_done.add(phase.rows_done, **labels)
            if phase.rows_total:
                rows_expected.add(phase.rows_total, **labels)
                done = 1.0 if phase.status == "done" else phase.rows_done / phase.rows_total
                progress.add(round(min(done, 1.0), 4), **labels)
            live = snap.rates.get(phase.idx)
            if live is not None:
                rate.add(round(live, 1), **labels)
            elif phase.rows_done and elapsed:
                rate.add(round(phase.rows_done / elapsed, 1), **labels)
    return [
        status,
        paused,
        throttled,
        lag,
        row_errors,
        phase_status,
        rows_done,
        rows_expected,
        progress,
        rate,
        duration,
        lock_waits,
        terminated,
        hook_failures,
    ]


def _value(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(found: list[Family], openmetrics: bool = True) -> str:
    """The families as OpenMetrics text (ending `# EOF`), or as Prometheus text 0.0.4."""
    lines: list[str] = []
    for family in found:
        if not family.samples:
            continue
        sample = f"{family.name}_total" if family.kind == "counter" else family.name
        described = family.name if openmetrics else sample
        lines.append(f"# TYPE {described} {family.kind}")
        if family.unit and openmetrics:
            lines.append(f"# UNIT {described} {family.unit}")
        lines.append(f"# HELP {described} {family.help}")
        for labels, value in family.samples:
            shown = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(
                f"{sample}{{{shown}}} {_value(value)}" if shown else f"{sample} {_value(value)}"
            )
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n" if lines else ""


def from_store(
    conn: psycopg.Connection[Any], store: StateStore, names: list[str]
) -> tuple[list[Snapshot], datetime]:
    """The snapshots of `names` as the state has them, and the server's time now."""
    snapshots = []
    for name in names:
        state = store.get(conn, name)
        if state is None:
            raise UsageError(f"no migration named {name} in state schema {store.schema}")
        counts = Counter(str(e["event"]) for e in store.events(conn, name))
        snapshots.append(Snapshot(state, counts))
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    return snapshots, row[0] if row else datetime.now(UTC)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` whole: a reader (node_exporter) never sees half a file. The temporary
    file is hidden and has no .prom suffix, so the collector never reads it."""
    folder = path.parent
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class LiveMetrics(StoreListener):
    """The metrics of the migrations a running command records through the observed store:
    refreshed from the state at each event, updated in memory at each batch, status and
    throttle change, and published (file rewritten, text served) each time."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}
        self._samples: dict[tuple[str, int], deque[tuple[float, int]]] = {}
        self._text = {True: "# EOF\n", False: ""}

    def text(self, openmetrics: bool) -> str:
        with self._lock:
            return self._text[openmetrics]

    # ------------------------------------------------------------ what the store hears

    def on_event(
        self,
        store: StateStore,
        conn: psycopg.Connection[Any],
        name: str,
        event: str,
        phase: str | None,
        detail: dict[str, Any] | None,
    ) -> None:
        snap = self._snapshots.get(name)
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            state = store.get(conn, name)
            if state is not None and snap is None:
                counts = Counter(str(e["event"]) for e in store.events(conn, name))
                snap = self._snapshots[name] = Snapshot(state, counts)
            elif state is not None and snap is not None:
                snap.state = state
                snap.counts[event] += 1
        elif snap is not None:
            snap.counts[event] += 1
        self.publish()

    def on_status(self, name: str, status: str, error: str | None) -> None:
        snap = self._snapshots.get(name)
        if snap is not None:
            snap.state.status = status
            snap.state.last_error = error
            self.publish()

    def on_phase(self, name: str, idx: int, status: str, reset: bool) -> None:
        snap = self._snapshots.get(name)
        if snap is None or idx >= len(snap.state.phases):
            return
        phase = snap.state.phases[idx]
        phase.status = status
        if reset:
            phase.rows_done = 0
        if status != "running":
            self._samples.pop((name, idx), None)
            snap.rates.pop(idx, None)
        self.publish()

    def on_throttle(self, name: str, reason: str | None) -> None:
        snap = self._snapshots.get(name)
        if snap is not None:
            snap.state.throttle_reason = reason
            self.publish()

    def on_rows(self, name: str, idx: int, rows: int, added: bool) -> None:
        snap = self._snapshots.get(name)
        if snap is None or idx >= len(snap.state.phases):
            return
        phase = snap.state.phases[idx]
        phase.rows_done = phase.rows_done + rows if added else rows
        now = time.monotonic()
        window = self._samples.setdefault((name, idx), deque())
        window.append((now, phase.rows_done))
        while len(window) > 2 and now - window[0][0] > RATE_WINDOW_SECONDS:
            window.popleft()
        (t0, r0), (t1, r1) = window[0], window[-1]
        if t1 - t0 >= 0.5:
            snap.rates[idx] = max(r1 - r0, 0) / (t1 - t0)
        self.publish()

    # ------------------------------------------------------------ publishing

    def publish(self) -> None:
        found = families(list(self._snapshots.values()), datetime.now(UTC))
        texts = {True: render(found, openmetrics=True), False: render(found, openmetrics=False)}
        with self._lock:
            self._text = texts
        if self.path is not None:
            try:
                write_atomically(self.path, texts[False])
            except OSError as error:  # metrics never stop a migration
                log.warning("cannot write the metrics file", file=str(self.path), error=str(error))


class _Handler(BaseHTTPRequestHandler):
    metrics: LiveMetrics  # set on the class made per server

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404, "metrics are at /metrics")
            return
        openmetrics = "application/openmetrics-text" in self.headers.get("Accept", "")
        body = self.metrics.text(openmetrics).encode()
        self.send_response(200)
        self.send_header("Content-Type", OPENMETRICS_TYPE if openmetrics else PROMETHEUS_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not worth a log line


@contextlib.contextmanager
def serving_metrics(path: str | None, port: int | None) -> Iterator[LiveMetrics | None]:
    """The live metrics of the command inside: written to `path` at every change (when given),
    served over HTTP at /metrics on `port` of every interface (when given); None with neither."""
    if path is None and port is None:
        yield None
        return
    metrics = LiveMetrics(Path(path) if path else None)
    if metrics.path is not None and not metrics.path.parent.is_dir():
        raise UsageError(f"--metrics-file {path}: folder {metrics.path.parent} does not exist")
    if port is None:
        yield metrics
        return
    handler = type("MetricsHandler", (_Handler,), {"metrics": metrics})
    try:
        server = ThreadingHTTPServer(("", port), handler)
    except OSError as error:
        raise UsageError(
            f"--metrics-port {port}: cannot listen there ({error.strerror}); pick another port"
        ) from None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="pgshift-metrics", daemon=True)
    thread.start()
    log.info("metrics served", url=f"http://0.0.0.0:{server.server_address[1]}/metrics")
    try:
        yield metrics
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
