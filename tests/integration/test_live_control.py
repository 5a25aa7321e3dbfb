"""Changing a running migration without stopping it (`migrate set`), and the state schema's
upgrade that stores such changes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgshift.demo.seed import create_accounts
from pgshift.engine.state import _UPGRADES, SCHEMA_VERSION, StateStore
from tests.integration.helpers import cli, write_plan

PLAN = """version: 1
name: live
table: public.accounts
columns:
  balance: {type: bigint}
phases:
  - expand
  - dual_write
  - backfill: {batch_size: 10, batch_pause: 100ms}
"""


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    create_accounts(conn, 3_000)
    return conn


def _batches(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    if conn.execute("SELECT to_regclass('pgshift.phases')").fetchone() == (None,):
        return 0, 0
    row = conn.execute(
        "SELECT batches, rows_done FROM pgshift.phases WHERE migration = 'live'"
        " AND kind = 'backfill'"
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _wait_for(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_set_changes_the_batches_of_a_running_backfill(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN)
    process = subprocess.Popen(
        [sys.executable, "-m", "pgshift.cli", "--dsn", dsn, "--log-format", "json", "apply", plan],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: _batches(accounts)[0] >= 2)
        # at 10 rows and 100 ms a batch, 3,000 rows would take 30 s; 1,000 a batch, no pause
        result = cli(dsn, "set", "live", "batch_size=1000", "batch_pause=0")
        assert result.exit_code == 0, result.output
        assert "batch_pause=0, batch_size=1000" in result.stdout
        status = json.loads(cli(dsn, "status", "live", "--json").stdout)
        assert status["overrides"] == {"batch_size": 1000, "batch_pause": 0}
        _out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err[-2000:]
    finally:
        process.kill()
    batches, rows = _batches(accounts)
    assert rows == 3_000
    # the big batches took the rest: far fewer than the 300 small ones it would have run
    assert batches < 60, batches
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    changed = [e for e in logged if e.get("event") == "settings changed"]
    assert changed and "batch_size=1000" in changed[0]["now"]
    events = accounts.execute(
        "SELECT detail FROM pgshift.events WHERE event = 'settings changed'"
    ).fetchall()
    assert events[0][0]["set"] == {"batch_size": 1000, "batch_pause": 0}

    # KEY= goes back to the plan's value; a finished migration takes no change
    result = cli(dsn, "set", "live", "batch_size=")
    assert result.exit_code == 2 and "no batch is left" in result.stderr  # --until-less: done
    assert cli(dsn, "set", "live").stdout.strip().endswith("batch_pause=0, batch_size=1000")


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("lock_timeout=5s", "cannot be changed while a migration runs; these can: batch_size"),
        ("batch_time=5", "is not a duration"),
        ("batch_size=-1", "positive whole number"),
        ("nice_ratio", "is not key=value"),
        ("nice_ratio=-1", "greater than or equal to 0"),
    ],
)
def test_set_refuses_what_it_cannot_change_before_connecting(pair: str, message: str) -> None:
    result = cli("host=/nonexistent", "set", "live", pair)
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr


def test_set_takes_effect_when_the_key_is_reset(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(
        tmp_path, PLAN.replace("\n  - backfill:", "\n  - gate: {name: g}\n  - backfill:")
    )
    assert cli(dsn, "apply", plan).exit_code == 3  # stops at the gate, before the backfill
    assert cli(dsn, "set", "live", "batch_size=500", "nice_ratio=0.5").exit_code == 0
    result = cli(dsn, "set", "live", "nice_ratio=")
    assert result.stdout.strip().endswith("settings changed while running: batch_size=500")
    text = cli(dsn, "status", "live").stdout
    assert "settings changed while running (migrate set): batch_size=500" in text
    assert cli(dsn, "apply", plan, "--approve", "g").exit_code == 0
    batches, rows = _batches(accounts)
    assert rows == 3_000 and batches <= 7  # 500 a batch (and an empty last), not 10


def test_an_older_state_schema_is_upgraded_in_place(conn: psycopg.Connection[Any]) -> None:
    store = StateStore()
    with conn.transaction():
        conn.execute("CREATE SCHEMA pgshift")
        conn.execute(
            "CREATE TABLE pgshift.schema_version (version int NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version in (1, 2):
            conn.execute(sql.SQL(_UPGRADES[version]).format(s=sql.Identifier("pgshift")))
            conn.execute("INSERT INTO pgshift.schema_version (version) VALUES (%s)", (version,))
        conn.execute(
            "INSERT INTO pgshift.migrations (name, plan_hash, table_name) VALUES ('old', 'h', 't')"
        )
    store.ensure_schema(conn)
    versions = [r[0] for r in conn.execute("SELECT version FROM pgshift.schema_version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    state = store.get(conn, "old")
    assert state is not None and state.overrides == {}
    assert store.set_overrides(conn, "old", {"batch_time": "1s"}) == {"batch_time": "1s"}
