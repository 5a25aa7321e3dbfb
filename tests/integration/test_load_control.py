"""Live load under control: nice_ratio (sleep in proportion to each batch's time, while other
sessions of the database are active) and max_active_sessions (wait while the database is
busy), on a real server."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from pgshift.engine import progress, throttle
from pgshift.engine.state import StateStore
from pgshift.plan.model import Settings
from tests.integration.helpers import cli, write_plan

PLAN = """version: 1
name: load_test
table: public.accounts
columns:
  balance:
    type: bigint
settings: {settings}
phases: [expand, dual_write, backfill]
"""


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    create_accounts(conn, 3_000)
    return conn


def _status(dsn: str) -> dict[str, Any]:
    return json.loads(cli(dsn, "status", "load_test", "--json").stdout)  # type: ignore[no-any-return]


def _backfill_rows(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT rows_done FROM pgshift.phases WHERE migration = 'load_test' AND kind = 'backfill'"
    ).fetchone()
    return int(row[0]) if row else 0


def _record_backfill(monkeypatch: pytest.MonkeyPatch) -> tuple[list[float], list[float]]:
    """Count nice's sleeps (without sleeping) and the backfill batches' own times."""
    sleeps: list[float] = []
    batches: list[float] = []
    monkeypatch.setattr(throttle, "_sleep", sleeps.append)
    original = progress.Reporter.batch

    def batch(self: Any, phase: str, report: Any, work: str = "backfill") -> None:
        if work == "backfill" and phase == "backfill":
            batches.append(report.batch_seconds)
        original(self, phase, report, work)

    monkeypatch.setattr(progress.Reporter, "batch", batch)
    return sleeps, batches


@contextlib.contextmanager
def _app_sessions(dsn: str, count: int) -> Iterator[None]:
    """`count` sessions of the database (application_name "app"), each running one statement
    until the block ends, active from its start on. The statement sleeps in short transactions
    (a DO block that commits every 0.1 s, for at most 2 minutes should the test be killed), so
    it holds no snapshot that would keep pgshift's CREATE INDEX CONCURRENTLY waiting."""
    pids: list[int] = []
    ready = threading.Barrier(count + 1)

    def busy() -> None:
        with psycopg.connect(dsn, autocommit=True, application_name="app") as app:
            pids.append(app.info.backend_pid)
            ready.wait()
            with contextlib.suppress(psycopg.errors.QueryCanceled):
                app.execute(
                    "DO $$ BEGIN FOR i IN 1..1200 LOOP PERFORM pg_sleep(0.1); COMMIT; END LOOP;"
                    " END $$"
                )

    workers = [threading.Thread(target=busy) for _ in range(count)]
    for worker in workers:
        worker.start()
    ready.wait()
    with psycopg.connect(dsn, autocommit=True) as watcher:
        try:
            deadline = time.monotonic() + 30
            while _active_apps(watcher) < count:
                assert time.monotonic() < deadline, "the app sessions never became active"
                time.sleep(0.01)
            yield
        finally:
            for pid in pids:
                watcher.execute("SELECT pg_cancel_backend(%s)", [pid])
            for worker in workers:
                worker.join(10)


def _active_apps(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'app' AND state = 'active'"
    ).fetchone()
    return int(row[0]) if row else 0


def test_defaults_sleep_only_while_the_application_is_busy() -> None:
    settings = Settings()
    assert settings.nice_ratio > 0 and settings.nice_min_active_sessions == 1


@pytest.mark.parametrize("ratio", [0, 0.5, 3])
def test_nice_ratio_sleeps_in_proportion_to_each_batch(
    dsn: str,
    accounts: psycopg.Connection[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ratio: float,
) -> None:
    """With nice_min_active_sessions 0, after every batch, busy or not (gh-ost's nice-ratio)."""
    sleeps, batches = _record_backfill(monkeypatch)
    settings = f"{{nice_ratio: {ratio}, nice_min_active_sessions: 0, batch_size: 250}}"
    path = write_plan(tmp_path, PLAN.format(settings=settings))
    result = cli(dsn, "apply", path)
    assert result.exit_code == 0, result.output
    assert _status(dsn)["status"] == "done"
    assert len(batches) == 3_000 // 250 + 1  # 12 full batches, then the empty open-ended one
    if ratio == 0:
        assert sleeps == []
        return
    # one sleep after every batch but the last, each `ratio` times that batch's own time: the
    # backfill takes (1 + ratio) times its batches' time
    assert len(sleeps) == len(batches) - 1
    assert sleeps == pytest.approx([ratio * seconds for seconds in batches[:-1]])
    assert sum(sleeps) == pytest.approx(ratio * sum(batches[:-1]))


def test_no_nice_sleep_on_an_idle_server(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No other session of the database runs a statement (pgshift's own do not count): the
    batches follow each other without a sleep, whatever nice_ratio says."""
    sleeps, batches = _record_backfill(monkeypatch)
    path = write_plan(tmp_path, PLAN.format(settings="{nice_ratio: 3, batch_size: 250}"))
    result = cli(dsn, "apply", path)
    assert result.exit_code == 0, result.output
    assert len(batches) == 3_000 // 250 + 1
    assert sleeps == []


def test_nice_sleeps_while_other_sessions_run_statements(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sessions of the application running a statement all along: a sleep after every batch
    but the last, nice_ratio times its time, as with nice_min_active_sessions 0."""
    sleeps, batches = _record_backfill(monkeypatch)
    path = write_plan(tmp_path, PLAN.format(settings="{nice_ratio: 3, batch_size: 250}"))
    with _app_sessions(dsn, 2):
        result = cli(dsn, "apply", path)
    assert result.exit_code == 0, result.output
    assert len(batches) == 3_000 // 250 + 1
    assert len(sleeps) == len(batches) - 1
    assert sleeps == pytest.approx([3 * seconds for seconds in batches[:-1]])


def test_nice_min_active_sessions_is_the_threshold(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two active sessions do not reach nice_min_active_sessions 3: no sleep; `migrate set` to 2
    while the backfill runs, and the batches after it sleep."""
    sleeps, batches = _record_backfill(monkeypatch)
    settings = "{nice_ratio: 3, nice_min_active_sessions: 3, batch_size: 250}"
    path = write_plan(tmp_path, PLAN.format(settings=settings))
    assert cli(dsn, "apply", path, "--until", "dual_write").exit_code == 0
    original = progress.Reporter.batch
    lowered: list[int] = []

    def batch(self: Any, phase: str, report: Any, work: str = "backfill") -> None:
        original(self, phase, report, work)
        if phase == "backfill" and len(batches) == 4:
            # after the 4th batch's nice, before the 5th batch's wait (which reads it)
            assert cli(dsn, "set", "load_test", "nice_min_active_sessions=2").exit_code == 0
            lowered.append(len(sleeps))

    monkeypatch.setattr(progress.Reporter, "batch", batch)
    with _app_sessions(dsn, 2):
        result = cli(dsn, "apply", path)
    assert result.exit_code == 0, result.output
    assert len(batches) == 3_000 // 250 + 1
    assert lowered == [0]  # no sleep before
    # the 4th batch's nice still has 3 (the next wait reads the change): from the 5th batch on,
    # every batch but the last sleeps
    assert len(sleeps) == len(batches) - 1 - 4


def test_a_busy_sample_holds_for_a_second(dsn: str, conn: psycopg.Connection[Any]) -> None:
    """One sample that saw the application busy keeps nice sleeping for BUSY_HOLD_SECONDS (by
    the throttle's clock), then idle samples end it; samples are at most BUSY_SAMPLE_SECONDS
    apart."""
    now = [0.0]
    settings = Settings(nice_ratio=1)
    gate = throttle.Throttle(conn, StateStore(), "m", settings, clock=lambda: now[0])
    assert not gate.busy()
    with _app_sessions(dsn, 1):
        assert not gate.busy()  # too soon for another sample: the idle one still answers
        now[0] += 2 * throttle.BUSY_SAMPLE_SECONDS
        assert gate.busy()
    deadline = time.monotonic() + 30
    while _active_apps(conn):
        assert time.monotonic() < deadline, "the app session stayed active"
        time.sleep(0.01)
    now[0] += throttle.BUSY_HOLD_SECONDS / 2
    assert gate.busy()
    now[0] += throttle.BUSY_HOLD_SECONDS
    assert not gate.busy()
    # nice_min_active_sessions 0: busy without looking
    gate.settings = Settings(nice_ratio=1, nice_min_active_sessions=0)
    assert gate.busy()


def test_max_active_sessions_holds_the_backfill(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """While more of the database's sessions than max_active_sessions are running a statement,
    the backfill waits and status says why; pgshift's own sessions do not count."""
    path = write_plan(tmp_path, PLAN.format(settings="{max_active_sessions: 1}"))
    assert cli(dsn, "apply", path, "--until", "dual_write").exit_code == 0
    pids: list[int] = []
    ready = threading.Barrier(3)

    def busy() -> None:
        with psycopg.connect(dsn, autocommit=True, application_name="app") as app:
            pids.append(app.info.backend_pid)
            ready.wait()
            with contextlib.suppress(psycopg.errors.QueryCanceled):
                app.execute("SELECT pg_sleep(120)")

    workers = [threading.Thread(target=busy) for _ in range(2)]
    for worker in workers:
        worker.start()
    ready.wait()
    process = subprocess.Popen(
        [sys.executable, "-m", "pgshift.cli", "--dsn", dsn, "--log-format", "json", "apply", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while _status(dsn)["waiting_for"] is None:
            assert time.monotonic() < deadline, "the backfill never waited"
            time.sleep(0.05)
        assert _status(dsn)["waiting_for"] == (
            "2 active sessions in the database, more than max_active_sessions 1"
        )
        assert _backfill_rows(accounts) == 0
        for pid in pids:
            accounts.execute("SELECT pg_cancel_backend(%s)", [pid])
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err[-2000:]
    finally:
        process.kill()
        for pid in pids:
            accounts.execute("SELECT pg_cancel_backend(%s)", [pid])
        for worker in workers:
            worker.join(10)
    assert _status(dsn)["status"] == "done"
    assert _status(dsn)["waiting_for"] is None
