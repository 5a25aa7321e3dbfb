"""Several tables in one plan: an integer key and every column referencing it widened to bigint
together, with one cutover for all of them, under writers on the three tables; a kill -9 at
every step; a rollback after cutover; and the plan errors that change nothing."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.traffic import Traffic
from pgshift.engine.executor import prepare
from pgshift.engine.state import StateStore
from pgshift.phases.base import BackfillStep, SqlStep
from pgshift.plan.load import load_plan
from tests.integration.helpers import cli, error_line, run_process, write_plan
from tests.integration.test_referenced_key import ChildWriter, _constraint, _orphans, _schema

PLANS = Path(__file__).resolve().parents[2] / "plans"
# the bundled plans: the key and every reference in place, and by copying the three tables
SHORTHAND = (
    (PLANS / "widen_account_keys.yaml").read_text().replace("widen_account_keys", "widen_keys")
)
LISTED = """version: 1
name: widen_keys
tables:
  - table: accounts
    columns:
      id: {type: bigint}
  - table: public.transfers
    columns:
      account_id: {type: bigint}
  - table: history
    columns:
      aid: {type: bigint}
settings: {lock_timeout: 500ms, lock_retries: 60}
phases: [expand, dual_write, {backfill: {batch_size: 150}}, verify, cutover, contract]
"""
COPIED = (PLANS / "copy_account_keys.yaml").read_text().replace("copy_account_keys", "widen_keys")
MIX = {"insert": 3, "update": 3, "delete": 2, "key_update": 2}
COLUMNS = (("accounts", "id"), ("transfers", "account_id"), ("history", "aid"))


def _line_of(text: str, words: str) -> int:
    """The line of `text` where `words` first appear (1-based)."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if words in line)


def _types(conn: psycopg.Connection[Any]) -> dict[str, str]:
    return {
        f"{t}.{c}": conn.execute(
            "SELECT format_type(atttypid, NULL) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attname = %s AND NOT attisdropped",
            (t, c),
        ).fetchone()[0]  # type: ignore[index]
        for t, c in COLUMNS
    }


def _all(conn: psycopg.Connection[Any], type_: str) -> None:
    assert set(_types(conn).values()) == {type_}, _types(conn)
    for fk in ("transfers_account_id_fkey", "history_aid_fkey"):
        assert _constraint(conn, fk) == ("id", type_, True), fk
    assert _orphans(conn) == 0
    assert conn.execute(
        "SELECT count(*) FROM pg_constraint WHERE NOT convalidated"
        " AND conrelid IN ('accounts'::regclass, 'transfers'::regclass, 'history'::regclass)"
    ).fetchone() == (0,)


@pytest.mark.parametrize(
    "text", [SHORTHAND, LISTED, COPIED], ids=["with_references", "listed", "new_table"]
)
def test_a_key_and_its_references_widen_in_one_plan_under_writers(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, text: str
) -> None:
    _schema(conn)
    plan = write_plan(tmp_path, text)
    planned = cli(dsn, "plan", plan)
    assert planned.exit_code == 0, planned.output
    out = planned.stdout
    assert "migration widen_keys on 3 tables, one cutover:" in out
    if text is not COPIED:
        for line in ("public.accounts: id bigint", "public.transfers: account_id bigint"):
            assert line in out
        assert "public.history: aid bigint" in out
    # the referencing columns are the plan's own: no warning to widen them separately
    assert "widen them with migrations of their own" not in out
    assert out.count("swap: the new shapes of") == 1  # one swap transaction for all

    with (
        Traffic(dsn, connections=3, rate=50, mix=MIX, seed=5) as traffic,
        ChildWriter(dsn) as children,
    ):
        result = cli(dsn, "apply", plan, "--until", "verify")
        assert result.exit_code == 0, result.output
        verified = cli(dsn, "verify", plan, "--json")
        assert verified.exit_code == 0, verified.output
        compared = json.loads(verified.stdout)["rows_compared"]
        accounts = conn.execute("SELECT count(*) FROM accounts").fetchone()
        assert accounts is not None and compared > accounts[0]  # all three tables

        result = cli(dsn, "apply", plan, "--until", "cutover")
        assert result.exit_code == 0, result.output
        _all(conn, "bigint")

        # a rollback after cutover swaps all three back in one transaction
        back = cli(dsn, "rollback", plan, "--to", "verify")
        assert back.exit_code == 0, back.output
        _all(conn, "integer")

        result = cli(dsn, "apply", plan)
        assert result.exit_code == 0, result.output
    stats = traffic.stop()
    assert stats.failed == 0, stats.errors
    assert children.errors == [] and children.writes > 0
    assert stats.key_updates > 0 and stats.deletes > 0
    _all(conn, "bigint")
    status = cli(dsn, "status", "--json")
    assert status.exit_code == 0, status.output
    shown = json.loads(status.stdout)[0]["table"]
    assert sorted(shown.split(", ")) == ["public.accounts", "public.history", "public.transfers"]
    # every object pgshift made is gone with contract
    assert conn.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid IN"
        " ('accounts'::regclass, 'transfers'::regclass, 'history'::regclass)"
        " AND (attname LIKE '%pgshift%') AND NOT attisdropped"
    ).fetchone() == (0,)
    assert conn.execute(
        "SELECT count(*) FROM pg_class WHERE relname LIKE '%pgshift_old' OR relname LIKE '%_v2'"
    ).fetchone() == (0,)
    assert conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%pgshift%'"
    ).fetchone() == (0,)


def _labels(dsn: str, plan: str) -> list[str]:
    """A kill inside every step's transaction, after every step outside one, and inside and
    after a backfill batch."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        compiled, _ = prepare(conn, load_plan(plan), StateStore())
    labels = []
    for phase in compiled.phases:
        for number, step in enumerate(phase.forward):
            if isinstance(step, SqlStep) and step.transactional:
                labels.append(f"{phase.name}:{number}:in-transaction")
            elif isinstance(step, BackfillStep):
                # inside each table's second batch
                labels.append(f"{phase.name}:{number}:batch:2:in-transaction")
            else:
                labels.append(f"{phase.name}:{number}:after")
    return labels


@pytest.mark.parametrize("text", [SHORTHAND, COPIED], ids=["columns", "new_table"])
def test_kill_at_every_step_then_apply_finishes(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, text: str
) -> None:
    plan = write_plan(tmp_path, text)
    _schema(conn, rows=600)
    labels = _labels(dsn, plan)
    assert len(labels) > 25
    for label in labels:
        conn.execute("DROP SCHEMA IF EXISTS pgshift CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS pgshift_widen_keys CASCADE")
        _schema(conn, rows=600)
        crashed = run_process(dsn, "apply", plan, env={"PGSHIFT_FAILPOINT": label})
        assert crashed.returncode == -signal.SIGKILL, (label, crashed.stderr[-2000:])
        resumed = cli(dsn, "apply", plan)
        assert resumed.exit_code == 0, (label, resumed.output[-3000:])
        _all(conn, "bigint")
        row = conn.execute(
            "SELECT rows_done FROM pgshift.phases WHERE migration = 'widen_keys'"
            " AND kind = 'backfill'"
        ).fetchone()
        # every row of the three tables once: none lost, none counted twice
        assert (
            row
            == conn.execute(
                "SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM transfers)"
                " + (SELECT count(*) FROM history)"
            ).fetchone()
        ), label


def test_a_referencing_column_of_another_type_is_an_error_that_changes_nothing(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    _schema(conn, rows=10)
    conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, account smallint REFERENCES accounts)")
    plan = write_plan(tmp_path, SHORTHAND)
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert f"plan.yaml:{_line_of(SHORTHAND, 'with_references: true')}:" in line, line
    assert "public.notes.account (smallint) references public.accounts.id (integer)" in line
    assert set(_types(conn).values()) == {"integer"}
    assert conn.execute(
        "SELECT count(*) FROM pg_attribute WHERE attname LIKE '%pgshift%' AND attrelid IN"
        " ('accounts'::regclass, 'transfers'::regclass, 'history'::regclass, 'notes'::regclass)"
    ).fetchone() == (0,)
    assert conn.execute("SELECT to_regnamespace('pgshift_widen_keys')").fetchone() == (None,)


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            LISTED.replace("table: history", "table: public.accounts"),
            "plan.yaml:10:",
            "public.accounts has two entries in `tables` (1 and 3)",
        ),
        (
            LISTED.replace("table: history", "table: accounts"),
            "plan.yaml:10:",
            "table accounts has two entries (1 and 3)",
        ),
        (
            LISTED.replace("account_id: {type: bigint}", "account_id: {type: bigint, up: 'nope('}"),
            "plan.yaml:9:",
            "not a SQL expression",
        ),
        (
            LISTED.replace("name: widen_keys\n", "name: widen_keys\ntable: accounts\n"),
            "plan.yaml:3:",
            "move `table` into an entry of `tables`",
        ),
        (
            LISTED.replace("settings:", "application: {mode: versions}\nsettings:"),
            ":",
            "with several tables use mode rename",
        ),
        (
            COPIED.replace("aid bigint, note text", "aid bigint REFERENCES accounts, note text"),
            # at the history entry's `create`
            f"plan.yaml:{_line_of(COPIED, 'CREATE TABLE public.history_v2') - 1}:",
            "declares foreign key history_v2_aid_fkey to accounts, a table of this plan",
        ),
    ],
    ids=[
        "same-table-twice",
        "same-name-twice",
        "bad-up",
        "top-level-table",
        "versions",
        "key-in-create",
    ],
)
def test_bad_input_is_one_located_error_and_nothing_changes(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, text: str, where: str, message: str
) -> None:
    _schema(conn, rows=10)
    plan = write_plan(tmp_path, text)
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert where in line and message in line, line
    assert set(_types(conn).values()) == {"integer"}
    assert conn.execute("SELECT to_regnamespace('pgshift_widen_keys')").fetchone() == (None,)


def test_the_runbook_and_a_changed_table_list(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The runbook shows the whole set; once started, a plan listing other tables is refused
    even with --force (what was applied must keep its meaning), and nothing changes."""
    _schema(conn, rows=50)
    plan = write_plan(tmp_path, LISTED)
    book = cli(dsn, "runbook", plan)
    assert book.exit_code == 0, book.output
    assert "- **Tables** (3, one cutover for all):" in book.stdout
    assert "  - `public.transfers`: account_id bigint (key: `id`)" in book.stdout
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    fewer = write_plan(
        tmp_path,
        LISTED.replace("  - table: history\n    columns:\n      aid: {type: bigint}\n", ""),
        "fewer.yaml",
    )
    refused = cli(dsn, "apply", fewer, "--force")
    assert refused.exit_code == 2, refused.output
    assert "lists other tables than when it started (accounts, public.transfers, history)" in (
        error_line(refused)
    )
    assert cli(dsn, "rollback", plan).exit_code == 0
    assert set(_types(conn).values()) == {"integer"}
    assert conn.execute(
        "SELECT count(*) FROM pg_attribute WHERE attname LIKE '%pgshift%' AND attrelid IN"
        " ('accounts'::regclass, 'transfers'::regclass, 'history'::regclass)"
    ).fetchone() == (0,)


SELF = """version: 1
name: self_keys
{target}
phases: [expand, dual_write, backfill, verify, cutover, contract]
"""


@pytest.mark.parametrize(
    "target",
    [
        "table: accounts\ncolumns: {id: {type: bigint}, parent_id: {type: bigint}}",
        "tables:\n  - table: accounts\n    columns: {id: {type: bigint}}\n"
        "    with_references: true",
    ],
    ids=["both-columns-listed", "with_references"],
)
def test_a_self_referencing_key_moves_once(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, target: str
) -> None:
    """accounts.parent_id references accounts.id: the foreign key is the table's own and
    references it, and moves once (it used to be added twice inside the swap)."""
    conn.execute(
        "CREATE TABLE accounts (id serial PRIMARY KEY, parent_id int REFERENCES accounts,"
        " balance int NOT NULL)"
    )
    conn.execute("INSERT INTO accounts (balance) SELECT g FROM generate_series(1, 300) g")
    conn.execute("UPDATE accounts SET parent_id = id - 1 WHERE id > 1")
    plan = write_plan(tmp_path, SELF.format(target=target))
    result = cli(dsn, "apply", plan, "--until", "cutover")
    assert result.exit_code == 0, result.output
    assert cli(dsn, "rollback", plan, "--to", "verify").exit_code == 0
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 0, result.output
    types = conn.execute(
        "SELECT string_agg(attname || ' ' || format_type(atttypid, NULL), ', ' ORDER BY attname)"
        " FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attname IN ('id', 'parent_id')"
    ).fetchone()
    assert types == ("id bigint, parent_id bigint",)
    assert _constraint(conn, "accounts_parent_id_fkey") == ("id", "bigint", True)
    assert conn.execute(
        "SELECT count(*) FROM accounts a WHERE parent_id IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM accounts p WHERE p.id = a.parent_id)"
    ).fetchone() == (0,)


def test_a_cycle_of_foreign_keys_widens_in_one_swap(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """teams.owner_id references people.id and people.team_id references teams.id: both keys
    widened with their references. One swap moves every foreign key at once, so the cycle needs
    no order between the tables."""
    conn.execute("CREATE TABLE people (id serial PRIMARY KEY, team_id int)")
    conn.execute("CREATE TABLE teams (id serial PRIMARY KEY, owner_id int REFERENCES people)")
    conn.execute("ALTER TABLE people ADD FOREIGN KEY (team_id) REFERENCES teams")
    conn.execute("INSERT INTO people (team_id) SELECT NULL FROM generate_series(1, 200)")
    conn.execute("INSERT INTO teams (owner_id) SELECT id FROM people WHERE id <= 50")
    conn.execute("UPDATE people SET team_id = 1 + id % 50")
    plan = write_plan(
        tmp_path,
        """version: 1
name: cycle_keys
tables:
  - table: people
    columns: {id: {type: bigint}}
    with_references: true
  - table: teams
    columns: {id: {type: bigint}}
    with_references: true
phases: [expand, dual_write, backfill, verify, cutover, contract]
""",
    )
    planned = cli(dsn, "plan", plan)
    assert planned.exit_code == 0, planned.output
    assert "public.people: id bigint, team_id bigint" in planned.stdout
    assert "public.teams: id bigint, owner_id bigint" in planned.stdout
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 0, result.output
    assert conn.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid IN ('people'::regclass,"
        " 'teams'::regclass) AND attnum > 0 AND NOT attisdropped"
        " AND format_type(atttypid, NULL) <> 'bigint'"
    ).fetchone() == (0,)
    assert conn.execute(
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated"
        " AND conrelid IN ('people'::regclass, 'teams'::regclass)"
    ).fetchone() == (2,)


def test_a_not_valid_foreign_key_stays_not_valid_when_re_pointed(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Another table's foreign key left NOT VALID by its owner is re-pointed to the new table
    at the swap and stays NOT VALID (it holds rows that break it); a valid one is validated."""
    _schema(conn, rows=50)
    conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, account int)")
    conn.execute("INSERT INTO notes (account) VALUES (1), (999999)")  # the second breaks it
    conn.execute(
        "ALTER TABLE notes ADD CONSTRAINT notes_account_fkey FOREIGN KEY (account)"
        " REFERENCES accounts NOT VALID"
    )
    plan = write_plan(tmp_path, COPIED)
    result = cli(dsn, "apply", plan, "--until", "cutover")
    assert result.exit_code == 0, result.output
    rows = conn.execute(
        "SELECT conname, confrelid::regclass::text, convalidated FROM pg_constraint"
        " WHERE conname IN ('notes_account_fkey', 'transfers_account_id_fkey') ORDER BY 1"
    ).fetchall()
    assert rows == [
        ("notes_account_fkey", "accounts", False),
        ("transfers_account_id_fkey", "accounts", True),
    ]
    assert conn.execute("SELECT to_regclass('accounts_pgshift_old') IS NOT NULL").fetchone() == (
        True,
    )
