"""max_replication_lag against a real streaming standby whose replay is paused: the backfill
stops between batches, says why in the log and in `migrate status`, and finishes once the
standby replays again. The lag is the throttle's own measurement from sampled WAL positions;
`reply_time`, which the earlier estimate used, refreshes with every status reply whether replay
moves or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from pgshift.demo.seed import create_accounts
from pgshift.engine.executor import prepare
from pgshift.engine.preflight import preflight, render_preflight
from pgshift.engine.state import StateStore
from pgshift.engine.throttle import ReplicaLag, Throttle
from pgshift.plan.load import load_plan_text
from pgshift.plan.model import Settings
from tests.integration.helpers import cli, write_plan
from tests.integration.replica import ReplicaPair, find_binaries, streaming_pair

MIGRATE = (sys.executable, "-m", "pgshift.cli")
PLAN = """version: 1
name: replica_lag
table: public.accounts
columns:
  balance:
    type: bigint
settings:
  max_replication_lag: 1s
phases:
  - expand
  - dual_write
  # lag is known from the throttle's first sample on: the pause makes the backfill (~3 s)
  # outlast max_replication_lag, so it is caught mid-way
  - backfill: {batch_size: 200, batch_pause: 200ms}
  - cutover
  - contract
"""


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicaPair]:
    binaries = find_binaries(os.environ.get("PGSHIFT_TEST_DSN"))
    if isinstance(binaries, str):
        pytest.skip(binaries)
    with streaming_pair(binaries) as made:
        yield made


@pytest.fixture
def primary(pair: ReplicaPair) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pair.primary_dsn, autocommit=True) as conn:
        conn.prepare_threshold = None
        yield conn


@pytest.fixture
def standby(pair: ReplicaPair) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pair.standby_dsn, autocommit=True) as conn:
        try:
            yield conn
        finally:
            conn.execute("SELECT pg_wal_replay_resume()")  # the next test needs it replaying


def _wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout:g}s"
        time.sleep(0.1)
    return value


def test_measured_lag_grows_while_replay_is_paused_and_clears_after(
    pair: ReplicaPair, primary: psycopg.Connection[Any], standby: psycopg.Connection[Any]
) -> None:
    settings = Settings(max_replication_lag=timedelta(seconds=1))
    store = StateStore()
    store.ensure_schema(primary)
    throttle = Throttle(primary, store, "nothing", settings)
    primary.execute("CREATE TABLE wal_maker (v int)")
    _wait_for(
        lambda: throttle.replica_lags() == [ReplicaLag(pair.standby_name, 0.0, 0)], 10, "caught up"
    )

    standby.execute("SELECT pg_wal_replay_pause()")
    for n in range(8):
        primary.execute("INSERT INTO wal_maker VALUES (%s)", (n,))
        throttle.replica_lags()
        time.sleep(0.2)
    (lag,) = throttle.replica_lags()
    assert lag.name == pair.standby_name
    assert lag.seconds > 1.2 and lag.behind_bytes > 0
    why = throttle.reason()
    assert why is not None and pair.standby_name in why and "max_replication_lag 1s" in why

    standby.execute("SELECT pg_wal_replay_resume()")
    _wait_for(lambda: throttle.reason() is None, 10, "lag cleared after resume")


def test_backfill_waits_for_a_paused_standby_and_finishes_after(
    pair: ReplicaPair,
    primary: psycopg.Connection[Any],
    standby: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    create_accounts(primary, 3000)
    path = write_plan(tmp_path, PLAN)
    dsn = pair.primary_dsn
    until_dual_write = cli(dsn, "apply", path, "--until", "dual_write")
    assert until_dual_write.exit_code == 0, until_dual_write.output

    standby.execute("SELECT pg_wal_replay_pause()")
    process = subprocess.Popen(
        [*MIGRATE, "--dsn", dsn, "--log-format", "json", "apply", path, "--until", "backfill"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        status = _wait_for(lambda: _waiting(dsn), 10, "migrate status shows waiting_for")
        reason = status["waiting_for"]
        assert pair.standby_name in reason and "max_replication_lag 1s" in reason, reason
        held = _backfill(status)["rows"]
        time.sleep(1.5)
        again = _status(dsn)
        assert _backfill(again)["rows"] == held < 3000  # no batch runs while it lags
        assert again["waiting_for"] is not None

        standby.execute("SELECT pg_wal_replay_resume()")
        _out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err[-3000:]
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    waiting = [e for e in events if e.get("event") == "waiting"]
    assert len(waiting) == 1, waiting
    assert pair.standby_name in waiting[0]["reason"]
    assert "max_replication_lag" in waiting[0]["reason"]
    assert any(e.get("event") == "resuming" for e in events)

    final = _status(dsn)
    assert final["waiting_for"] is None
    backfill = _backfill(final)
    assert backfill["status"] == "done" and backfill["rows"] == 3000


def _status(dsn: str) -> dict[str, Any]:
    result = cli(dsn, "status", "replica_lag", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _waiting(dsn: str) -> dict[str, Any] | None:
    status = _status(dsn)
    return status if status["waiting_for"] else None


def _backfill(status: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in status["phases"] if p["kind"] == "backfill")


def test_preflight_lists_the_standby(
    pair: ReplicaPair, primary: psycopg.Connection[Any], standby: psycopg.Connection[Any]
) -> None:
    create_accounts(primary, 100, table="preflight_accounts")
    text = PLAN.replace("public.accounts", "public.preflight_accounts")
    compiled, _state = prepare(primary, load_plan_text(text), StateStore())
    standby.execute("SELECT pg_wal_replay_pause()")
    primary.execute("UPDATE preflight_accounts SET balance = balance + 1")

    def behind() -> dict[str, Any] | None:
        data = preflight(primary, compiled, timedelta(seconds=1))
        return data if data["replicas"][0]["behind_bytes"] else None

    data = _wait_for(behind, 10, "the standby reported behind")
    (replica,) = data["replicas"]
    assert replica["name"] == pair.standby_name and replica["state"] == "streaming"
    assert replica["behind_bytes"] > 0
    assert any(
        line.startswith(f"  replica {pair.standby_name}: streaming")
        for line in render_preflight(data)
    )


def test_a_role_without_pg_monitor_is_told_once_and_not_held(
    pair: ReplicaPair, primary: psycopg.Connection[Any]
) -> None:
    primary.execute("CREATE ROLE plain_user LOGIN")
    store = StateStore()
    store.ensure_schema(primary)
    primary.execute("GRANT USAGE ON SCHEMA pgshift TO plain_user")
    primary.execute("GRANT SELECT ON ALL TABLES IN SCHEMA pgshift TO plain_user")
    dsn = pair.primary_dsn.replace("user=postgres", "user=plain_user")
    settings = Settings(max_replication_lag=timedelta(seconds=1))
    with psycopg.connect(dsn, autocommit=True) as plain, capture_logs() as logs:
        throttle = Throttle(plain, store, "nothing", settings)
        for _ in range(3):
            assert throttle.reason() is None
    unreadable = [e for e in logs if e["event"] == "replica lag unreadable"]
    assert len(unreadable) == 1 and "pg_monitor" in unreadable[0]["reason"]
