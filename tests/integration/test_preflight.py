"""Pre-flight numbers against a real table: sizes, free disk needed, replicas, and the long
transactions that would hold up the cutover's lock."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.compile import CompiledPlan
from pgshift.demo.seed import create_accounts
from pgshift.engine.executor import prepare
from pgshift.engine.preflight import preflight, read_preflight, render_preflight
from pgshift.engine.state import StateStore
from pgshift.plan.load import load_plan_text

PLAN = """version: 1
name: preflight_test
table: public.accounts
columns:
  balance:
    type: bigint
settings:
  lock_timeout: 200ms
  max_replication_lag: 5s
phases: [expand, dual_write, backfill, cutover, contract]
"""

LOCK_TIMEOUT = timedelta(milliseconds=200)


@pytest.fixture
def compiled(conn: psycopg.Connection[Any]) -> CompiledPlan:
    create_accounts(conn, 2000)
    plan, _state = prepare(conn, load_plan_text(PLAN), StateStore())
    return plan


def test_sizes_rows_and_disk_needed(conn: psycopg.Connection[Any], compiled: CompiledPlan) -> None:
    data = preflight(conn, compiled, LOCK_TIMEOUT)
    table_bytes = conn.execute("SELECT pg_table_size('accounts')").fetchone()[0]  # type: ignore[index]
    assert data["table_bytes"] == table_bytes > 8192
    assert data["total_bytes"] > data["table_bytes"]  # the indexes
    assert 1800 <= data["rows_estimate"] <= 2200
    # balance is indexed: its index is rebuilt on the new column, so it counts on top
    (index,) = compiled.context.shape.indexes
    index_bytes = conn.execute(
        "SELECT pg_relation_size(%s::regclass)", (index.original.name,)
    ).fetchone()[0]  # type: ignore[index]
    assert data["rebuilt_index_bytes"] == {index.original.name: index_bytes}
    assert index_bytes > 0
    assert data["free_disk_needed_bytes"] == table_bytes + index_bytes
    assert data["replicas"] == []
    assert data["long_transactions"] == []
    assert data["lock_timeout_seconds"] == 0.2 and data["max_replication_lag_seconds"] == 5

    lines = render_preflight(data)
    assert lines[0] == "pre-flight:"
    assert any("~2,000 rows" in line for line in lines), lines
    assert "  replicas: none" in lines
    assert not any(line.startswith("warning:") for line in lines), lines


def test_a_table_copy_needs_the_table_with_its_indexes_and_the_runbook_agrees(
    conn: psycopg.Connection[Any],
) -> None:
    """new_table: the copy writes every row again, with indexes of its own; `migrate plan` and
    the runbook read it through the same query."""
    create_accounts(conn, 2000)
    text = (Path(__file__).resolve().parents[2] / "plans" / "accounts_bigint_key.yaml").read_text()
    compiled, _state = prepare(conn, load_plan_text(text), StateStore())
    total = conn.execute("SELECT pg_total_relation_size('accounts')").fetchone()
    assert total is not None
    data = preflight(conn, compiled, LOCK_TIMEOUT)
    assert data["free_disk_needed_bytes"] == total[0] > data["table_bytes"]
    assert data["rebuilt_index_bytes"] == {}
    totals = [r["bytes"] for r in read_preflight(conn, compiled).disk if r["what"] == "total"]
    assert totals == [total[0]]


def test_a_transaction_open_past_lock_timeout_is_listed(
    dsn: str, conn: psycopg.Connection[Any], compiled: CompiledPlan
) -> None:
    with psycopg.connect(dsn, application_name="long reader") as other:
        other.execute("SELECT 1 FROM accounts LIMIT 1")  # BEGIN is implicit: not autocommit
        pid = other.info.backend_pid
        # younger than the threshold: not listed
        assert preflight(conn, compiled, timedelta(hours=1))["long_transactions"] == []
        time.sleep(0.3)
        data = preflight(conn, compiled, LOCK_TIMEOUT)
        other.rollback()
    (found,) = data["long_transactions"]
    assert found["pid"] == pid
    assert found["age_seconds"] >= 0.2
    assert found["state"] == "idle in transaction"
    assert found["application_name"] == "long reader"
    assert found["query"] == "SELECT 1 FROM accounts LIMIT 1"
    assert found["holds_table_lock"] is True
    warnings = [line for line in render_preflight(data) if line.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: pid {pid} open for ")
    assert "would block the cutover lock" in warnings[0]


def test_our_own_transaction_is_not_listed(
    conn: psycopg.Connection[Any], compiled: CompiledPlan
) -> None:
    with conn.transaction():
        conn.execute("SELECT 1 FROM accounts LIMIT 1")
        time.sleep(0.3)
        assert preflight(conn, compiled, LOCK_TIMEOUT)["long_transactions"] == []


def test_replica_lines_and_warning() -> None:
    data = {
        "table": "public.accounts",
        "table_bytes": 3 * 1024 * 1024,
        "total_bytes": 5 * 1024 * 1024,
        "rows_estimate": None,
        "free_disk_needed_bytes": 4 * 1024 * 1024,
        "rebuilt_index_bytes": {},
        "replicas": [
            {"name": "fast", "state": "streaming", "lag_seconds": 0.1, "behind_bytes": 0},
            {"name": "slow", "state": "streaming", "lag_seconds": 12.5, "behind_bytes": 4096},
            {"name": "pid 7", "state": None, "lag_seconds": None, "behind_bytes": None},
        ],
        "long_transactions": [],
        "lock_timeout_seconds": 1.0,
        "max_replication_lag_seconds": 10.0,
    }
    lines = render_preflight(data)
    assert "row count unknown" in lines[1]
    assert "  replica slow: streaming, lag 12.5s, 4.0 KiB behind" in lines
    assert "  replica pid 7: state unreadable, lag unknown, unknown behind" in lines
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == [
        "warning: replica slow lags 12.5s, more than max_replication_lag 10s:"
        " the backfill will wait for it"
    ]
