"""Bad operations are refused before anything changes, each with one `file:line:column` error
naming what is wrong: checked against the live catalog (columns, names, keys, referenced
tables and their types) and by trying expressions on the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from tests.integration.helpers import cli, definition, error_line, write_plan

HEAD = "version: 1\nname: bad_ops\ntable: public.accounts\noperations:\n"
PHASES = "phases: [expand, verify, contract]\n"

BAD = [
    ("missing_column", "  - rename_column: {column: nope, to: x}\n", "has no column 'nope'"),
    (
        "name_taken",
        "  - rename_column: {column: status, to: email}\n",
        "already has a column 'email'",
    ),
    ("table_name_taken", "  - rename_table: {to: owners}\n", "public.owners is already a table"),
    (
        "fk_missing_table",
        "  - add_foreign_key: {name: fk, columns: [owner_id], references: {table: nowhere, columns: [id]}}\n",
        "'nowhere' does not exist",
    ),
    (
        "fk_missing_column",
        "  - add_foreign_key: {name: fk, columns: [owner_id], references: {table: owners, columns: [nope]}}\n",
        "has no column 'nope'",
    ),
    (
        "fk_other_type",
        "  - add_foreign_key: {name: fk, columns: [email], references: {table: owners, columns: [id]}}\n",
        "email is text but public.owners.id is integer",
    ),
    (
        "fk_not_unique",
        "  - add_foreign_key: {name: fk, columns: [status], references: {table: owners, columns: [label]}}\n",
        "neither its primary key nor unique",
    ),
    (
        "conflict",
        "  - rename_column: {column: status, to: state}\n  - set_default: {column: status, default: \"'x'\"}\n",
        "operation 1 already changes column status",
    ),
    ("drop_key_column", "  - drop_column: {column: id}\n", "part of the primary key"),
    (
        "second_primary_key",
        "  - add_primary_key: {columns: [email]}\n",
        "has a primary key already",
    ),
    (
        "check_unknown_column",
        '  - add_check: {name: c, check: "nope > 0"}\n',
        "has no column 'nope'",
    ),
    (
        "check_not_expression",
        '  - add_check: {name: c, check: "balance >"}\n',
        "not a SQL expression",
    ),
    ("check_type_error", '  - add_check: {name: c, check: "email > 0"}\n', "check does not work"),
    ("drop_constraint_index", "  - drop_index: {name: accounts_pkey}\n", "backs the constraint"),
    ("drop_missing_index", "  - drop_index: {name: nope}\n", "has no index 'nope'"),
    ("already_not_null", "  - set_not_null: {column: email}\n", "NOT NULL already"),
    (
        "constraint_name_taken",
        "  - add_unique: {name: accounts_pkey, columns: [email]}\n",
        "already has a constraint or index",
    ),
    (
        "same_name_twice",
        "  - create_index: {name: ix, columns: [email]}\n  - create_index: {name: ix, columns: [status]}\n",
        "uses the name 'ix' too",
    ),
    (
        "default_wrong_type",
        "  - set_default: {column: balance, default: \"'abc'\"}\n",
        "default does not work",
    ),
    (
        "index_name_is_a_table",
        "  - create_index: {name: owners, columns: [email]}\n",
        "is already a table",
    ),
]


@pytest.mark.parametrize(("case", "body", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_bad_operation_is_refused_at_its_line_and_nothing_changes(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, case: str, body: str, fragment: str
) -> None:
    create_accounts(conn, 50)
    conn.execute("CREATE TABLE owners (id int PRIMARY KEY, label text)")
    conn.execute("ALTER TABLE accounts ADD COLUMN owner_id int")
    text = HEAD + body + PHASES
    plan = write_plan(tmp_path, text)
    before = definition(conn)
    for command in ("plan", "apply"):
        result = cli(dsn, command, plan)
        assert result.exit_code == 2, (case, result.output)
        line = error_line(result)
        # the last operation entry is the one at fault
        at = len(HEAD.splitlines()) + len(body.splitlines())
        assert line.startswith(f"error: {plan}:{at}:"), line
        assert fragment in line, line
    assert definition(conn) == before
