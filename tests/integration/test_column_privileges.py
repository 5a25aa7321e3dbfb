"""A role that holds privileges on some columns only keeps them through the migration: on the
new column after the swap (rename mode), and on the version view's columns (versions mode)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgshift.demo.seed import create_accounts
from tests.integration.helpers import cli, write_plan

PLAN = """version: 1
name: column_rights
table: public.accounts
{application}columns:
  balance: {{type: bigint}}
phases: [expand, dual_write, backfill, {middle}contract]
"""


@pytest.fixture
def clerk(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A role that may read id and balance and update balance, nothing else."""
    create_accounts(conn, 200)
    name = f"clerk_{uuid.uuid4().hex[:10]}"
    role = sql.Identifier(name)
    conn.execute(sql.SQL("CREATE ROLE {}").format(role))
    conn.execute(
        sql.SQL("GRANT SELECT (id, balance), UPDATE (balance) ON accounts TO {}").format(role)
    )
    try:
        yield name
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
        conn.execute(sql.SQL("DROP ROLE {}").format(role))


def _as(dsn: str, role: str, search_path: str = "public") -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.SQL(search_path)))
    return conn


def _works(conn: psycopg.Connection[Any]) -> int:
    conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 7")
    row = conn.execute("SELECT id, balance FROM accounts WHERE id = 7").fetchone()
    assert row is not None
    return int(row[1])


def _denied(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT email FROM accounts WHERE id = 7")


def test_rename_mode_the_new_column_keeps_the_column_privileges(
    dsn: str, conn: psycopg.Connection[Any], clerk: str, tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN.format(application="", middle="cutover, "))
    with _as(dsn, clerk) as app:
        before = _works(app)
        assert cli(dsn, "apply", plan, "--until", "cutover").exit_code == 0
        assert _works(app) == before + 1  # the swapped-in bigint column, same rights
        _denied(app)
        assert cli(dsn, "rollback", plan, "--to", "backfill").exit_code == 0
        assert _works(app) == before + 2
        assert cli(dsn, "apply", plan).exit_code == 0
        assert _works(app) == before + 3
        _denied(app)


def test_versions_mode_the_view_carries_the_column_privileges(
    dsn: str, conn: psycopg.Connection[Any], clerk: str, tmp_path: Path
) -> None:
    plan = write_plan(
        tmp_path,
        PLAN.format(
            application="application: {mode: versions, schema: app_v2}\n",
            middle="{gate: {name: g, approval: false}}, ",
        ),
    )
    # PostgreSQL checks every column a view reads: a role reading some columns only is
    # refused through the version view, and `plan` says so
    planned = cli(dsn, "plan", plan)
    assert planned.exit_code == 0, planned.output
    assert f"role(s) {clerk} may read only some columns of public.accounts" in planned.stdout
    # with every column readable (column by column) and balance writable, it works
    conn.execute(
        sql.SQL("GRANT SELECT (email, status, created_at, updated_at) ON accounts TO {}").format(
            sql.Identifier(clerk)
        )
    )
    assert "may read only some columns" not in cli(dsn, "plan", plan).stdout
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    with _as(dsn, clerk, "app_v2, public") as new_version:
        before = _works(new_version)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            new_version.execute("UPDATE accounts SET email = 'x' WHERE id = 7")
        types = new_version.execute(
            "SELECT pg_typeof(balance)::text FROM accounts WHERE id = 7"
        ).fetchone()
        assert types == ("bigint",)  # through the view
    assert cli(dsn, "apply", plan).exit_code == 0
    with _as(dsn, clerk, "app_v2, public") as new_version:
        assert _works(new_version) == before + 1


def test_a_renamed_column_keeps_its_privileges_under_the_new_name(
    dsn: str, conn: psycopg.Connection[Any], clerk: str, tmp_path: Path
) -> None:
    role = sql.Identifier(clerk)
    conn.execute(
        sql.SQL("GRANT SELECT (email, status, created_at, updated_at) ON accounts TO {}").format(
            role
        )
    )
    conn.execute(sql.SQL("GRANT UPDATE (status) ON accounts TO {}").format(role))
    plan = write_plan(
        tmp_path,
        "version: 1\nname: rename_rights\ntable: public.accounts\n"
        "application: {mode: versions, schema: app_v2}\n"
        "operations:\n  - rename_column: {column: status, to: state}\n"
        "phases: [expand, {gate: {name: g, approval: false}}, contract]\n",
    )
    assert cli(dsn, "apply", plan, "--until", "expand").exit_code == 0
    with _as(dsn, clerk, "app_v2, public") as new_version:
        new_version.execute("UPDATE accounts SET state = 'vip' WHERE id = 7")
        assert new_version.execute("SELECT state FROM accounts WHERE id = 7").fetchone() == ("vip",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            new_version.execute("UPDATE accounts SET email = 'x' WHERE id = 7")
