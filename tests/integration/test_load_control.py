"""Live load under control: nice_ratio (sleep in proportion to each batch's time) and
max_active_sessions (wait while the database is busy), on a real server."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from pgshift.engine import progress, throttle
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


@pytest.mark.parametrize("ratio", [0, 0.5, 3])
def test_nice_ratio_sleeps_in_proportion_to_each_batch(
    dsn: str,
    accounts: psycopg.Connection[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ratio: float,
) -> None:
    sleeps, batches = _record_backfill(monkeypatch)
    path = write_plan(tmp_path, PLAN.format(settings=f"{{nice_ratio: {ratio}, batch_size: 250}}"))
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
