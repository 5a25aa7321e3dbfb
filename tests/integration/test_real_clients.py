"""What real clients see while a `columns` plan runs: psycopg 3 (default auto-prepare),
SQLAlchemy 2 ORM, asyncpg in transactions and pgbench -M prepared, on 2 connections each.

Rename mode (today's default) gives the changed column's name to a column of another type at
cutover, and back at the swap back: every prepared statement returning it fails with 0A000
"cached plan must not change result type", once per connection and swap, after which the
driver prepares it again (psycopg drops its statements at ROLLBACK, asyncpg its cache on this
error); pgbench -M prepared aborts the client. Between steps the test waits until every
connection has committed WARM transactions, so each has prepared its statements again before
the next swap: the counts below are exact, whatever the machine's speed.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from tests.integration.clients import KINDS, ClientError, Clients, balance_sum, seed_accounts
from tests.integration.helpers import cli, write_plan

ROWS = 2000  # enough rows that a backfill batch seldom waits for a client's row lock
CONNECTIONS = 2
# commits each connection makes between steps: psycopg prepares a statement at its 6th run
# (SQLAlchemy runs its SELECT twice per transaction), asyncpg and pgbench at the first
WARM = 10
PREPARING = ("psycopg", "sqlalchemy", "asyncpg")
CACHED_PLAN = "cached plan must not change result type"

WIDEN = """
version: 1
name: widen_balance
table: public.accounts
columns:
  balance:
    type: bigint
    up: balance::bigint
    down: balance::integer
settings: {lock_timeout: 1s, lock_retries: 60}
phases: [expand, dual_write, {backfill: {batch_size: 200}}, cutover, contract]
"""

# the control: a new computed column, so no column a client reads changes type
ADD_COLUMN = """
version: 1
name: add_note_length
table: public.accounts
columns:
  note_length:
    type: integer
    up: coalesce(length(note), 0)
settings: {lock_timeout: 1s, lock_retries: 60}
phases: [expand, dual_write, {backfill: {batch_size: 200}}, cutover, contract]
"""

# (window name, migrate arguments after the plan path); a window lasts until the next starts
STEPS = (
    ("expand..backfill", ("apply", "--until", "backfill")),
    ("cutover", ("apply", "--until", "cutover")),
    ("swap back", ("rollback", "--to", "backfill")),
    ("cutover again, contract", ("apply",)),
)
SWAPS = ("cutover", "swap back", "cutover again, contract")


def migrate_under_clients(dsn: str, plan: str, clients: Clients) -> list[tuple[str, float]]:
    """Run STEPS with the clients running; each step starts once every connection has
    committed WARM transactions since the last one ended. Returns (window, start) pairs."""
    clients.wait_each(WARM)
    windows = [("before", 0.0)]
    for name, args in STEPS:
        windows.append((name, time.monotonic()))
        result = cli(dsn, args[0], plan, *args[1:])
        assert result.exit_code == 0, result.output
        clients.wait_each(WARM, since=clients.committed())
    return windows


def window_of(error: ClientError, windows: list[tuple[str, float]]) -> str:
    return [name for name, start in windows if start <= error.at][-1]


def test_rename_mode_fails_each_prepared_statement_once_per_connection_and_swap(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    seed_accounts(conn, ROWS)
    with Clients(dsn, KINDS, connections=CONNECTIONS, rows=ROWS) as running:
        windows = migrate_under_clients(dsn, write_plan(tmp_path, WIDEN), running)

    errors = running.errors
    assert running.unrecorded_errors == 0
    assert {e.sqlstate for e in errors} == {"0A000"}, errors
    # asyncpg words the error its own way; the others pass on the server's message
    assert all(e.message == CACHED_PLAN for e in errors if e.kind != "asyncpg"), errors
    seen = Counter((e.connection, window_of(e, windows)) for e in errors)
    expected: Counter[tuple[str, str]] = Counter()
    for kind in PREPARING:
        for connection in running.connections(kind):
            expected.update((connection, swap) for swap in SWAPS)
    # pgbench -M prepared aborts each client at cutover; none is left for the swap back
    expected.update((connection, "cutover") for connection in running.connections("pgbench"))
    assert seen == expected
    assert sorted(running.aborted) == running.connections("pgbench")
    assert {e.error for e in running.by_kind()["asyncpg"]} == {"InvalidCachedStatementError"}
    assert {e.error for e in running.by_kind()["psycopg"]} == {"FeatureNotSupported"}
    assert all(count > 0 for count in running.transactions.values()), running.transactions

    # every failed transaction rolled back whole, an aborted pgbench client's too
    assert balance_sum(conn) == ROWS * 1000
    assert conn.execute(
        "SELECT format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = 'accounts'::regclass AND attname = 'balance'"
    ).fetchone() == ("bigint",)


def test_a_plan_changing_no_type_the_clients_read_gives_them_no_error(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    seed_accounts(conn, ROWS)
    with Clients(dsn, KINDS, connections=CONNECTIONS, rows=ROWS) as running:
        migrate_under_clients(dsn, write_plan(tmp_path, ADD_COLUMN), running)
        assert running.pgbench is not None and not running.pgbench.finished(), "pgbench ran on"

    assert running.errors == []
    assert running.aborted == []
    assert all(count > 0 for count in running.transactions.values()), running.transactions
    assert balance_sum(conn) == ROWS * 1000
    # the plan did its work under them: the seeded rows have the new column filled
    assert conn.execute(
        "SELECT count(*) FROM accounts WHERE id <= %s AND note_length IS DISTINCT FROM length(note)",
        (ROWS,),
    ).fetchone() == (0,)


def test_search_path_decides_which_accounts_every_client_uses(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """A new application version reaches its schema's view through search_path, so every kind
    must send its statements where search_path says. Here the first schema on the path holds
    an `accounts` table of its own: which relation each kind wrote shows in the rows."""
    seed_accounts(conn, ROWS)
    seed_accounts(conn, ROWS, schema="v2 app")  # a name that needs quoting and escaping
    path = '"v2 app", public'
    with Clients(dsn, KINDS, connections=CONNECTIONS, rows=ROWS, search_path=path) as running:
        running.wait_each(WARM)

    assert running.errors == []
    assert all(count >= WARM for count in running.transactions.values()), running.transactions
    assert balance_sum(conn, "v2 app.accounts") == ROWS * 1000
    untouched = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE balance = 1000) FROM public.accounts"
    ).fetchone()
    assert untouched == (ROWS, ROWS)
    # each kind's own writes: the Python kinds insert fresh accounts, pgbench only transfers
    assert conn.execute('SELECT count(*) > %s FROM "v2 app".accounts', (ROWS,)).fetchone() == (
        True,
    )


VERSIONS = """
version: 1
name: widen_versions
table: public.accounts
application: {mode: versions, schema: app_v2}
columns:
  balance:
    type: bigint
    up: balance::bigint
    down: balance::integer
settings: {lock_timeout: 1s, lock_retries: 60}
phases:
  - expand
  - dual_write
  - backfill: {batch_size: 200}
  - verify
  - gate: {name: old_version_gone, approval: false, require_no_old_sessions: true}
  - contract
"""


def test_versions_mode_gives_neither_version_an_error(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The old version runs from the start and is stopped before contract, the new version
    (app_v2 first on its search_path) starts once backfill is done and runs through contract:
    every kind of both, preparing as it does by default, sees no error at all."""
    seed_accounts(conn, ROWS)
    conn.close()  # a session older than the new version: the gate would wait for it
    plan = write_plan(tmp_path, VERSIONS)
    old = Clients(dsn, KINDS, connections=CONNECTIONS, rows=ROWS).start()
    try:
        old.wait_each(WARM)
        result = cli(dsn, "apply", plan, "--until", "verify")
        assert result.exit_code == 0, result.output
        old.wait_each(WARM, since=old.committed())
        new = Clients(
            dsn,
            KINDS,
            connections=CONNECTIONS,
            rows=ROWS,
            search_path="app_v2, public",
            fresh_from=10_000_000,
        ).start()
        try:
            new.wait_each(WARM)
            old.wait_each(WARM, since=old.committed())
            # the gate holds while the old version runs, naming its sessions
            result = cli(dsn, "apply", plan)
            assert result.exit_code == 3, result.output
            assert "connected before the new version was ready" in result.output
            old.stop()  # the old version's deploy is over
            result = cli(dsn, "apply", plan)
            assert result.exit_code == 0, result.output
            new.wait_each(WARM, since=new.committed())
        finally:
            new.stop()
    finally:
        old.stop()

    for running in (old, new):
        assert running.errors == [], running.errors
        assert running.unrecorded_errors == 0
        assert running.aborted == []
        assert all(count >= WARM for count in running.transactions.values())
    with psycopg.connect(dsn, autocommit=True) as check:
        # transfers of both versions, through both shapes: not one unit lost or made
        assert balance_sum(check) == ROWS * 1000
        assert check.execute(
            "SELECT format_type(atttypid, NULL) FROM pg_attribute"
            " WHERE attrelid = 'public.accounts'::regclass AND attname = 'balance'"
        ).fetchone() == ("bigint",)
        inserted = check.execute(
            "SELECT count(*) FILTER (WHERE id > %s AND id < 10000000),"
            " count(*) FILTER (WHERE id >= 10000000) FROM accounts",
            (ROWS,),
        ).fetchone()
        assert inserted is not None and inserted[0] > 0 and inserted[1] > 0
