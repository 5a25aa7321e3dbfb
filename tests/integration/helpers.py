"""What integration tests compare: a table's full definition and every row, and how they run
pgshift (in-process through click, or as a real process for crash tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from click.testing import CliRunner, Result
from psycopg import sql

from pgshift.cli import main

REPO = Path(__file__).resolve().parents[2]
PLANS = REPO / "plans"


def definition(conn: psycopg.Connection[Any], table: str = "public.accounts") -> dict[str, Any]:
    """Columns (in order, with types, NOT NULL, defaults), indexes, constraints, triggers,
    sequence ownership: everything `\\d+` would show that a migration could change."""
    oid = conn.execute("SELECT %s::regclass::oid", (table,)).fetchone()[0]  # type: ignore[index]
    return {
        "columns": conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull,"
            " pg_get_expr(adbin, adrelid) FROM pg_attribute LEFT JOIN pg_attrdef"
            " ON adrelid = attrelid AND adnum = attnum WHERE attrelid = %s AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum",
            (oid,),
        ).fetchall(),
        "indexes": conn.execute(
            "SELECT pg_get_indexdef(indexrelid), indisvalid, indisprimary FROM pg_index"
            " WHERE indrelid = %s ORDER BY 1",
            (oid,),
        ).fetchall(),
        "constraints": conn.execute(
            "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint"
            " WHERE conrelid = %s ORDER BY 1",
            (oid,),
        ).fetchall(),
        "triggers": conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal ORDER BY 1",
            (oid,),
        ).fetchall(),
        "sequences": conn.execute(
            "SELECT s.relname, a.attname, format_type(q.seqtypid, NULL) FROM pg_depend d"
            " JOIN pg_class s ON s.oid = d.objid JOIN pg_sequence q ON q.seqrelid = s.oid"
            " JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
            " WHERE d.refobjid = %s AND d.deptype IN ('a', 'i') ORDER BY 1",
            (oid,),
        ).fetchall(),
        "schemas": conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pgshift\\_%%' ORDER BY 1"
        ).fetchall(),
    }


def rows(conn: psycopg.Connection[Any], table: str = "public.accounts", key: str = "id") -> Any:
    """Every row's text, in key order: equal only when every value is equal."""
    query = sql.SQL("SELECT t::text FROM {} t ORDER BY {}").format(
        sql.Identifier(*table.split(".")), sql.Identifier(key)
    )
    return conn.execute(query).fetchall()


def cli(dsn: str, *args: str) -> Result:
    """Run `migrate` in-process; returns click's result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(
        main, ["--dsn", dsn, "--log-format", "json", *args], catch_exceptions=False
    )


def run_process(
    dsn: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `migrate` as a real process (crash tests kill it)."""
    return subprocess.run(
        [sys.executable, "-m", "pgshift.cli", "--dsn", dsn, "--log-format", "json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def write_plan(folder: Path, text: str, name: str = "plan.yaml") -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def error_line(result: Result) -> str:
    """The one `error:` line a failed command prints (log lines may share stderr)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def stop_line(result: Result) -> str:
    """The one `stopped:` line of a command that stopped at a gate (exit 3), and no `error:`."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("stopped:")]
    assert len(lines) == 1, result.stderr
    assert not any(line.startswith("error:") for line in result.stderr.splitlines())
    assert "Traceback" not in result.output
    return lines[0]


def plan_target(path: Path) -> str:
    from pgshift.plan.load import load_plan

    return load_plan(path).plan.target


def create_customers(conn: psycopg.Connection[Any], count: int) -> None:
    """The table of plans/split_full_name.yaml: full_name holds one, two or three words."""
    conn.execute(
        "CREATE TABLE customers (id serial PRIMARY KEY, full_name text NOT NULL, email text)"
    )
    conn.execute(
        "INSERT INTO customers (full_name, email)"
        " SELECT (ARRAY['Ada Lovelace', 'Cher', 'Jean Luc Picard', 'Grace Brewster Hopper',"
        " 'Alan Turing'])[1 + g %% 5], 'c' || g || '@example.dev' FROM generate_series(1, %s) g",
        (count,),
    )
    conn.execute("ANALYZE customers")


def create_orders(conn: psycopg.Connection[Any]) -> None:
    """A table referencing accounts, so cutover has a foreign key to move."""
    conn.execute(
        "CREATE TABLE orders (id serial PRIMARY KEY,"
        " account_id int NOT NULL REFERENCES accounts (id) ON DELETE CASCADE ON UPDATE CASCADE,"
        " amount int)"
    )
    conn.execute(
        "INSERT INTO orders (account_id, amount) SELECT id, 1 FROM accounts WHERE id % 7 = 0"
    )
