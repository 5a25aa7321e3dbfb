"""The demo's table and its simulated application traffic, against a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from pgshift.demo.traffic import Columns, Traffic, TrafficStats, random_email
from pgshift.errors import PgshiftError

ROWS = 2000
ALL_KINDS = {"insert": 3, "update": 4, "delete": 2, "key_update": 1}


def scalar(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def run_for(traffic: Traffic, seconds: float) -> tuple[TrafficStats, float]:
    """Run the traffic for `seconds`; the stats and how long stop() took."""
    traffic.start()
    time.sleep(seconds)
    before = time.perf_counter()
    stats = traffic.stop()
    return stats, time.perf_counter() - before


def test_seed_creates_the_demo_table(conn: psycopg.Connection[Any]) -> None:
    create_accounts(conn, ROWS)
    assert scalar(conn, "SELECT count(*) FROM accounts") == ROWS
    columns = conn.execute(
        """SELECT attname, format_type(atttypid, atttypmod), attnotnull,
                  pg_get_expr(adbin, adrelid)
           FROM pg_attribute LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum
           WHERE attrelid = 'accounts'::regclass AND attnum > 0 ORDER BY attnum"""
    ).fetchall()
    assert columns == [
        ("id", "integer", True, "nextval('accounts_id_seq'::regclass)"),
        ("balance", "integer", True, None),
        ("email", "text", True, None),
        ("status", "text", False, None),
        ("created_at", "timestamp with time zone", True, "now()"),
        ("updated_at", "timestamp with time zone", False, None),
    ]
    indexes = {
        name: definition
        for name, definition in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'accounts'"
        )
    }
    assert set(indexes) == {"accounts_pkey", "accounts_email_idx", "accounts_balance_idx"}
    assert indexes["accounts_email_idx"].endswith("(email)")
    assert indexes["accounts_balance_idx"].endswith("(balance)")
    # ANALYZE ran: the planner knows the row count.
    assert scalar(conn, "SELECT reltuples FROM pg_class WHERE oid = 'accounts'::regclass") == ROWS
    # The sequence continues after the seeded keys.
    assert scalar(conn, "SELECT max(id) FROM accounts") == ROWS
    assert scalar(conn, "SELECT last_value FROM accounts_id_seq") == ROWS
    # Distinct, realistic, mixed-case addresses.
    assert scalar(conn, "SELECT count(DISTINCT email) FROM accounts") == ROWS
    assert scalar(conn, "SELECT count(*) FROM accounts WHERE email !~ '^[^@ ]+@[^@ ]+\\.'") == 0
    assert scalar(conn, "SELECT count(*) FROM accounts WHERE email <> lower(email)") > ROWS // 2
    assert scalar(conn, "SELECT count(*) FROM accounts WHERE email = lower(email)") > 0
    assert scalar(conn, "SELECT count(*) FROM accounts WHERE status IS NULL") > 0
    assert scalar(conn, "SELECT count(DISTINCT status) FROM accounts") > 2
    assert scalar(conn, "SELECT count(*) FROM accounts WHERE updated_at < created_at") == 0
    assert scalar(conn, "SELECT count(*) FROM accounts WHERE updated_at IS NULL") > 0


def test_seed_in_another_schema_and_again_with_replace(conn: psycopg.Connection[Any]) -> None:
    create_accounts(conn, 10, table="Users", schema="app")
    assert scalar(conn, 'SELECT count(*) FROM app."Users"') == 10
    with pytest.raises(psycopg.errors.DuplicateTable):
        create_accounts(conn, 10, table="Users", schema="app")
    create_accounts(conn, 0, table="Users", schema="app", replace=True)
    assert scalar(conn, 'SELECT count(*) FROM app."Users"') == 0
    assert scalar(conn, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'app'") == 3, (
        "indexes of the replaced table are gone, the new ones are there"
    )


def test_traffic_does_every_kind_of_write_and_counts_them_exactly(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    create_accounts(conn, ROWS)
    traffic = Traffic(dsn, connections=4, rate=100, mix=ALL_KINDS, seed=7)
    stats, stop_took = run_for(traffic, 2.0)

    assert stats.failed == 0, stats.errors
    assert stats.errors == []
    assert stop_took < 1.0
    assert min(stats.inserts, stats.updates, stats.deletes, stats.key_updates) > 0
    assert stats.writes == stats.inserts + stats.updates + stats.deletes + stats.key_updates
    assert stats.interrupted == 0
    # Each write is its own committed transaction, so the table follows the counts exactly.
    assert scalar(conn, "SELECT count(*) FROM accounts") == ROWS + stats.inserts - stats.deletes
    # Every insert and every key update took one value from the sequence, nothing else did.
    assert (
        scalar(conn, "SELECT last_value FROM accounts_id_seq")
        == ROWS + stats.inserts + stats.key_updates
    )
    # Updates really changed rows.
    assert (
        scalar(conn, "SELECT count(*) FROM accounts WHERE updated_at IS NOT NULL AND id <= 2000")
        > 0
    )
    # A steady rate: about 100 a second on each of 4 connections, never a burst above it.
    attempts = stats.writes + stats.missed
    assert attempts <= 4 * 100 * stats.seconds + 4
    assert attempts >= 4 * 100 * stats.seconds * 0.3
    assert 0 < stats.p99_latency_ms <= stats.worst_latency_ms
    assert stats.seconds >= 2.0
    assert traffic.stop() is stats, "stopping again returns the same result"


def test_traffic_on_a_key_without_default(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE items (item_no bigint PRIMARY KEY, label text NOT NULL)")
    conn.execute("INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 500) i")
    columns = Columns(insert={"label": random_email}, update={"label": "upper(label)"})
    with Traffic(
        dsn, table="items", key="item_no", connections=3, rate=0, mix=ALL_KINDS, columns=columns
    ) as traffic:
        time.sleep(1.0)
    stats = traffic.stop()
    assert stats.failed == 0, stats.errors
    assert min(stats.inserts, stats.updates, stats.deletes, stats.key_updates) > 0
    assert scalar(conn, "SELECT count(*) FROM items") == 500 + stats.inserts - stats.deletes
    # Fresh keys came from one counter above the largest key, one per insert or key update
    # tried (a key update that found no row used one too): no collisions.
    assert scalar(conn, "SELECT max(item_no) FROM items") <= (
        500 + stats.inserts + stats.key_updates + stats.missed
    )


def test_rate_zero_writes_as_fast_as_it_can(dsn: str, conn: psycopg.Connection[Any]) -> None:
    create_accounts(conn, ROWS)
    stats, stop_took = run_for(Traffic(dsn, connections=2, rate=0, seed=1), 1.0)
    assert stats.failed == 0, stats.errors
    assert stats.writes > 2 * 50  # far above what rate=50 would allow in a second
    assert stop_took < 1.0
    assert scalar(conn, "SELECT count(*) FROM accounts") == ROWS + stats.inserts - stats.deletes


def test_traffic_survives_type_changes_and_a_table_swap(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Prepared writes keep working when the table changes under them, as in a cutover."""
    create_accounts(conn, ROWS)
    traffic = Traffic(dsn, connections=4, rate=100, mix=ALL_KINDS, seed=3)
    traffic.start()
    time.sleep(0.5)
    conn.execute("ALTER TABLE accounts ALTER balance TYPE bigint")
    time.sleep(0.3)
    conn.execute("ALTER TABLE accounts ALTER id TYPE bigint")
    time.sleep(0.3)
    with conn.transaction():
        conn.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        conn.execute("CREATE TABLE accounts_new (LIKE accounts INCLUDING ALL)")
        conn.execute("INSERT INTO accounts_new SELECT * FROM accounts")
        conn.execute("ALTER TABLE accounts RENAME TO accounts_old")
        conn.execute("ALTER TABLE accounts_new RENAME TO accounts")
    time.sleep(0.5)
    stats = traffic.stop()
    assert stats.failed == 0, stats.errors
    # Keys above the old table's largest were written after the swap, into the new table.
    assert (
        scalar(conn, "SELECT count(*) FROM accounts WHERE id > (SELECT max(id) FROM accounts_old)")
        > 0
    )
    assert scalar(conn, "SELECT count(*) FROM accounts") == ROWS + stats.inserts - stats.deletes, (
        "no write went to the old table after the copy, and none was lost"
    )


def test_a_failing_write_is_counted_with_its_message(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    create_accounts(conn, 100)
    traffic = Traffic(dsn, connections=2, rate=0, mix={"insert": 1})
    traffic.start()
    time.sleep(0.3)
    conn.execute("ALTER TABLE accounts ADD CONSTRAINT no_new_rows CHECK (balance < 0) NOT VALID")
    time.sleep(0.5)
    stats = traffic.stop()
    assert stats.inserts > 0
    assert stats.failed > 0
    assert 0 < len(stats.errors) <= 10
    assert all("\n" not in error for error in stats.errors)
    assert stats.errors[0].startswith("insert: 23514 ")
    assert "no_new_rows" in stats.errors[0]
    # Failed inserts left nothing behind: the count still follows the successful writes.
    assert scalar(conn, "SELECT count(*) FROM accounts") == 100 + stats.inserts


def test_a_dropped_table_fails_every_write_and_stop_stays_prompt(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    create_accounts(conn, 100)
    traffic = Traffic(dsn, connections=3, rate=0, mix=ALL_KINDS)
    traffic.start()
    time.sleep(0.3)
    conn.execute("DROP TABLE accounts")
    time.sleep(0.5)
    before = time.perf_counter()
    stats = traffic.stop()
    assert time.perf_counter() - before < 1.0
    assert stats.writes > 0
    assert stats.failed > 0
    assert len(stats.errors) <= 10
    assert any("42P01" in error and "accounts" in error for error in stats.errors)


def test_stop_cancels_writes_stuck_behind_a_lock(dsn: str, conn: psycopg.Connection[Any]) -> None:
    create_accounts(conn, 100)
    traffic = Traffic(dsn, connections=3, rate=20, mix=ALL_KINDS)
    traffic.start()
    time.sleep(0.3)
    with conn.transaction():
        conn.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        time.sleep(1.0)
        before = time.perf_counter()
        stats = traffic.stop()
        stop_took = time.perf_counter() - before
    assert stop_took < 1.5
    assert stats.failed == 0, stats.errors
    assert stats.interrupted == 3, "each writer was waiting for the lock"
    assert stats.worst_latency_ms >= 1000
    assert not any(thread.name.startswith("pgshift-traffic") for thread in threading.enumerate())
    assert (
        scalar(
            conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'demo app%'"
        )
        == 0
    )


def test_traffic_refuses_what_it_cannot_do(dsn: str, conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(ValueError, match="unknown kinds"):
        Traffic(dsn, mix={"upsert": 1})
    with pytest.raises(ValueError, match="rate"):
        Traffic(dsn, rate=-1)
    with pytest.raises(ValueError, match="connections"):
        Traffic(dsn, connections=0)
    with pytest.raises(ValueError, match="at least one"):
        Traffic(dsn, mix={"insert": 0})
    with pytest.raises(PgshiftError, match="accounts"):
        Traffic(dsn).start()
    conn.execute("CREATE TABLE notes (id text PRIMARY KEY)")
    with pytest.raises(PgshiftError, match="integer"):
        Traffic(dsn, table="notes").start()
    assert not any(thread.name.startswith("pgshift-traffic") for thread in threading.enumerate())
