"""Application mode `versions`: after expand the old version keeps the table as it was and the
new version reads and writes the new shape through the version schema's view; writes of either
keep the other in step; contract, after a gate that can wait for the old version's sessions to
go, ends the old shape without changing what the new version's prepared statements return."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from tests.integration.helpers import cli, create_orders, definition, error_line, write_plan

COLUMNS_PLAN = """
version: 1
name: widen
table: public.accounts
application: {{mode: versions{schema}}}
columns:
  balance:
    type: bigint
phases:
  - expand
  - dual_write
  - backfill
  - verify
  - gate: {{name: old_gone, approval: false, require_no_old_sessions: true}}
  - contract
"""

TABLE_PLAN = """
version: 1
name: rekey
table: public.accounts
application: {mode: versions}
new_table:
  name: public.accounts_v2
  create: |
    CREATE TABLE public.accounts_v2 (id bigint PRIMARY KEY, balance bigint NOT NULL,
      email text NOT NULL, status text, created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz);
  reverse:
    id: id::integer
    balance: balance::integer
phases:
  - expand
  - dual_write
  - backfill
  - verify
  - gate: {name: old_gone, approval: false, require_no_old_sessions: true}
  - contract
"""


def _new_version(dsn: str, schema: str) -> psycopg.Connection[Any]:
    """A connection of the new application version: the version schema first on its path,
    psycopg's default automatic preparing left on."""
    return psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema},public")


def _prepared(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> Any:
    """Run a statement often enough that psycopg prepares it on the server."""
    result = None
    for _ in range(6):
        result = conn.execute(query, params).fetchall()
    return result


def test_columns_both_versions_write_and_contract_keeps_new_statements(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 500)
    plan = write_plan(tmp_path, COLUMNS_PLAN.format(schema=""))
    old = psycopg.connect(dsn, autocommit=True)  # the old version: connected before expand
    try:
        _prepared(old, "SELECT id, balance FROM accounts WHERE id = %s", (1,))
        result = cli(dsn, "apply", plan, "--until", "verify")
        assert result.exit_code == 0, result.output
        new = _new_version(dsn, "pgshift_widen")
        # the new version writes values the old type cannot hold only where `down` can map them
        new.execute("UPDATE accounts SET balance = balance + 1000000 WHERE id = 1")
        new.execute("INSERT INTO accounts (id, balance, email) VALUES (9001, 77, 'n@v2.dev')")
        old.execute("UPDATE accounts SET balance = balance + 5 WHERE id = 2")
        old.execute("INSERT INTO accounts (id, balance, email) VALUES (9002, 66, 'o@v1.dev')")
        # each version sees the other's writes in its own shape
        assert (
            old.execute("SELECT balance FROM accounts WHERE id = 1").fetchone()[0]
            == (new.execute("SELECT balance FROM accounts WHERE id = 1").fetchone()[0])
        )
        assert new.execute("SELECT balance FROM accounts WHERE id = 9002").fetchone() == (66,)
        assert old.execute("SELECT balance FROM accounts WHERE id = 9001").fetchone() == (77,)
        types = new.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'pgshift_widen.accounts'::regclass AND attname = 'balance'"
        ).fetchone()
        assert types == ("bigint",)
        before = _prepared(new, "SELECT id, balance FROM accounts WHERE id = %s", (2,))
        assert cli(dsn, "verify", plan).exit_code == 0

        # the old version's session is still connected: the gate waits, naming it
        result = cli(dsn, "apply", plan)
        assert result.exit_code == 3, result.output
        assert "connected before the new version was ready" in result.output
        old_pid = old.info.backend_pid
        assert f"pid {old_pid}" in result.output
        status = json.loads(cli(dsn, "status", plan, "--json").stdout)
        # the old version's connection and this test's own
        app = status["application"]
        assert (app["mode"], app["schema"], app["old_sessions"]) == ("versions", "pgshift_widen", 2)
        # what lies ahead for the clients: the new version's way in, and contract
        assert [c["when"] for c in app["clients_ahead"]] == [
            "after backfill",
            "contract",
            "rollback of expand",
        ]
        text = cli(dsn, "status", plan).stdout
        assert "2 session(s) older than the new version" in text
        assert "clients, contract: sessions of the OLD version" in text
        old.close()
        conn.close()  # this test's own session is as old

        result = cli(dsn, "apply", plan)
        assert result.exit_code == 0, result.output
        # the statement the new version prepared before contract runs on, same types
        assert _prepared(new, "SELECT id, balance FROM accounts WHERE id = %s", (2,)) == before
        new.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 2")
        new.close()
    finally:
        old.close()
    conn = psycopg.connect(dsn, autocommit=True)
    columns = dict(
        conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'public.accounts'::regclass AND attnum > 0 AND NOT attisdropped"
        ).fetchall()
    )
    assert columns["balance"] == "bigint"
    assert not any(name.startswith("_pgshift") or "pgshift_old" in name for name in columns)
    triggers = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.accounts'::regclass"
        " AND NOT tgisinternal"
    ).fetchone()
    assert triggers == (0,)
    # the version schema stays for the new version's connections
    assert conn.execute("SELECT count(*) FROM pgshift_widen.accounts").fetchone() == (502,)


def test_columns_rollback_leaves_the_table_as_before(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 300)
    before = definition(conn)
    plan = write_plan(tmp_path, COLUMNS_PLAN.format(schema=", schema: app_v2"))
    assert cli(dsn, "apply", plan, "--until", "verify").exit_code == 0
    new = _new_version(dsn, "app_v2")
    new.execute("UPDATE accounts SET balance = 42 WHERE id = 3")
    new.close()
    live = "SELECT id, balance, email, status, created_at, updated_at FROM accounts ORDER BY id"
    data = conn.execute(live).fetchall()
    result = cli(dsn, "rollback", plan)
    assert result.exit_code == 0, result.output
    assert definition(conn) == before
    assert conn.execute(live).fetchall() == data  # the new version's write, in the old shape
    assert conn.execute("SELECT balance FROM accounts WHERE id = 3").fetchone() == (42,)
    assert conn.execute("SELECT to_regnamespace('app_v2')").fetchone() == (None,)


def test_new_table_both_versions_write_without_loops_and_contract(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 400)
    create_orders(conn)
    plan = write_plan(tmp_path, TABLE_PLAN)
    assert cli(dsn, "apply", plan, "--until", "verify").exit_code == 0
    new = _new_version(dsn, "pgshift_rekey")
    new.execute("UPDATE accounts SET balance = balance + 3 WHERE id = 5")
    new.execute("INSERT INTO accounts (id, balance, email) VALUES (8001, 9, 'n@v2.dev')")
    new.execute(
        "DELETE FROM accounts WHERE id = 6 AND NOT EXISTS"
        " (SELECT 1 FROM public.orders WHERE account_id = 6)"
    )
    conn.execute("UPDATE accounts SET balance = balance + 4 WHERE id = 10")
    conn.execute("INSERT INTO accounts (id, balance, email) VALUES (8002, 8, 'o@v1.dev')")
    old_rows = conn.execute("SELECT id, balance, email FROM public.accounts ORDER BY id").fetchall()
    new_rows = conn.execute(
        "SELECT id::int, balance::int, email FROM public.accounts_v2 ORDER BY id"
    ).fetchall()
    assert old_rows == new_rows
    assert cli(dsn, "verify", plan).exit_code == 0
    prepared = _prepared(new, "SELECT id, balance FROM accounts WHERE id = %s", (5,))

    conn.close()  # a session older than expand: the gate would wait for it
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 0, result.output
    assert _prepared(new, "SELECT id, balance FROM accounts WHERE id = %s", (5,)) == prepared
    new.execute("INSERT INTO accounts (id, balance, email) VALUES (8003, 1, 'after@contract.dev')")
    new.close()
    conn = psycopg.connect(dsn, autocommit=True)
    assert conn.execute("SELECT to_regclass('public.accounts_v2')").fetchone() == (None,)
    assert conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'public.accounts'::regclass AND attname = 'id'"
    ).fetchone() == ("bigint",)
    # other tables' foreign keys follow the live name and are valid again
    fk = conn.execute(
        "SELECT confrelid::regclass::text, convalidated FROM pg_constraint"
        " WHERE conrelid = 'public.orders'::regclass AND contype = 'f'"
    ).fetchone()
    assert fk == ("accounts", True)
    assert conn.execute("SELECT count(*) FROM accounts WHERE id >= 8001").fetchone() == (3,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda text: text.replace("  - contract", "  - cutover\n  - contract"),
            "has no cutover",
        ),
        (
            lambda text: text.replace("application: {mode: versions}", "").replace(
                "  - contract", "  - cutover\n  - contract"
            ),
            "require_no_old_sessions needs application mode versions",
        ),
        (
            lambda text: text.replace(
                "  - gate: {name: old_gone, approval: false, require_no_old_sessions: true}\n", ""
            ),
            "must come after 'gate'",
        ),
    ],
)
def test_plan_rules(dsn: str, tmp_path: Path, change: Any, message: str) -> None:
    plan = write_plan(tmp_path, change(TABLE_PLAN))
    result = cli(dsn, "plan", plan)
    assert result.exit_code == 2, result.output
    assert message in error_line(result)


def test_an_existing_schema_is_refused(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 10)
    conn.execute("CREATE SCHEMA app_v2")
    plan = write_plan(tmp_path, COLUMNS_PLAN.format(schema=", schema: app_v2"))
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 2, result.output
    assert "schema app_v2 already exists" in error_line(result)
    assert conn.execute("SELECT to_regnamespace('app_v2') IS NOT NULL").fetchone() == (True,)


def test_a_new_version_write_down_cannot_map_is_kept_and_fails_the_migration(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 200)
    plan = write_plan(tmp_path, COLUMNS_PLAN.format(schema=""))
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    new = _new_version(dsn, "pgshift_widen")
    # past integer: the old shape cannot hold it, and the new version's write still succeeds
    new.execute("UPDATE accounts SET balance = 5000000000 WHERE id = 7")
    new.execute("UPDATE accounts SET balance = 6000000000 WHERE id = 9")
    assert new.execute("SELECT balance FROM accounts WHERE id = 7").fetchone() == (5000000000,)
    new.close()
    before = conn.execute("SELECT balance FROM public.accounts WHERE id = 7").fetchone()
    assert before is not None and before[0] < 2**31  # kept its previous value

    result = cli(dsn, "apply", plan)
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert "row(s) written by the new version could not be mapped through down" in line
    assert "(id)=(7)" in line or "(id)=(9)" in line
    assert "integer out of range" in line

    result = cli(dsn, "rollback", plan)
    assert result.exit_code == 1, result.output
    assert "rollback would lose 2 row(s) written by the new version" in error_line(result)
    result = cli(dsn, "rollback", plan, "--force")
    assert result.exit_code == 0, result.output
    assert conn.execute("SELECT to_regnamespace('pgshift_widen')").fetchone() == (None,)


def test_plan_and_runbook_say_which_clients_see_an_error_and_when(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 10)
    versions = write_plan(tmp_path, COLUMNS_PLAN.format(schema=""), "versions.yaml")
    rename = write_plan(
        tmp_path,
        COLUMNS_PLAN.format(schema="")
        .replace("application: {mode: versions}\n", "")
        .replace("  - gate: {name: old_gone, approval: false, require_no_old_sessions: true}\n", "")
        .replace("  - contract", "  - cutover\n  - contract"),
        "rename.yaml",
    )
    text = cli(dsn, "plan", versions).stdout
    assert "application clients (mode versions):" in text
    assert "- after backfill: the new application version reads and writes" in text
    assert "search_path = pgshift_widen, public" in text
    data = json.loads(cli(dsn, "plan", versions, "--json").stdout)
    assert [c["when"] for c in data["clients"]] == [
        "expand",
        "after backfill",
        "contract",
        "rollback of expand",
    ]
    text = cli(dsn, "plan", rename).stdout
    assert "application clients (mode rename):" in text
    assert "- cutover: connections that prepared a statement returning balance" in text
    assert "- rollback of cutover: the same connections" in text
    book = cli(dsn, "runbook", rename).stdout
    assert "## Application clients (mode `rename`)" in book
    assert "| cutover | connections that prepared a statement returning balance" in book
