"""The `operations` target under concurrent writes: every operation applied up to contract,
rolled back (the table exactly as before), then applied to the end, while writers insert,
update and delete; no writer sees an error. Renames and drops run in application mode
versions: the old version writes through the table, the new one through its view."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from pgshift.demo.traffic import Columns, Traffic, random_balance, random_status
from pgshift.plan.load import load_plan
from tests.integration.helpers import (
    PLANS,
    cli,
    definition,
    error_line,
    plan_target,
    rows,
    write_plan,
)

ROWS = 2_000
MIX = {"insert": 3, "update": 4, "delete": 1}
PROGRESS_TIMEOUT = 60.0  # seconds; only a stuck writer takes that long
SETTINGS = "settings: {lock_timeout: 500ms, lock_retries: 60}"


def unique_email(_rng: Any) -> str:
    return f"{uuid.uuid4().hex}@example.dev"


# the application's writes, keeping every constraint the plans add
WRITES = Columns(
    insert={"balance": random_balance, "email": unique_email, "status": random_status},
    update={"balance": random_balance, "status": random_status},
)


def progress(traffic: Traffic, **more: int) -> None:
    """Wait until the writers have done `more` of each kind (inserts=3, reads=2) beyond what
    they had done: the table is written at this stage, not just before or after it."""
    start = traffic.snapshot()
    deadline = time.monotonic() + PROGRESS_TIMEOUT
    while True:
        now = traffic.snapshot()
        if all(getattr(now, k) - getattr(start, k) >= n for k, n in more.items()):
            return
        assert now.failed == 0, now.errors
        assert time.monotonic() < deadline, f"the writers made no progress: {now}"
        time.sleep(0.05)


def prepare(conn: psycopg.Connection[Any]) -> None:
    """accounts (demo rows) with an owner column the owners table can be referenced by, a note
    column always filled by its default, and a ledger table without a key (nullable id)."""
    create_accounts(conn, ROWS)
    conn.execute("CREATE TABLE owners (id int PRIMARY KEY)")
    conn.execute("INSERT INTO owners SELECT g FROM generate_series(1, 10) g")
    conn.execute("ALTER TABLE accounts ADD COLUMN owner_id int DEFAULT 1")
    conn.execute("ALTER TABLE accounts ADD COLUMN note text DEFAULT 'n'")
    conn.execute("UPDATE accounts SET owner_id = 1 + id % 10, note = 'n' || id")
    conn.execute("COMMENT ON COLUMN accounts.email IS 'where we write'")
    conn.execute("CREATE SEQUENCE ledger_id_seq")
    conn.execute(
        "CREATE TABLE ledger (id int DEFAULT nextval('ledger_id_seq'), amount int, ref text)"
    )
    conn.execute(
        "INSERT INTO ledger (amount, ref) SELECT g, 'r' || g FROM generate_series(1, %s) g",
        (ROWS,),
    )
    conn.execute("ANALYZE accounts")
    conn.execute("ANALYZE ledger")


FAMILIES: dict[str, str] = {
    "constraints": """
operations:
  - add_check: {name: balance_not_negative, check: "balance >= 0"}
  - add_foreign_key:
      name: accounts_owner_fk
      columns: [owner_id]
      references: {table: public.owners, columns: [id]}
  - set_not_null: {column: note}
  - add_check: {name: email_has_at, check: "position('@' in email) > 1", at: expand}
phases: [expand, verify, contract]
""",
    "unique": """
operations:
  - add_unique: {name: accounts_email_key, columns: [email]}
  - create_index: {name: accounts_owner_idx, columns: [owner_id], where: "owner_id IS NOT NULL"}
  - drop_index: {name: accounts_balance_idx}
phases: [expand, verify, contract]
""",
    "defaults": """
operations:
  - set_default: {column: status, default: "'new'", at: expand}
  - drop_default: {column: owner_id}
  - drop_not_null: {column: balance, at: expand}
  - set_comment: {column: email, comment: "the login", at: expand}
  - set_comment: {comment: "one row per account"}
phases: [expand, verify, contract]
""",
}


def _plan(name: str, body: str, table: str = "public.accounts", extra: str = "") -> str:
    return f"version: 1\nname: {name}\ntable: {table}\n{extra}{SETTINGS}\n{body}"


def _catalog(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The definition, with comments (which `definition` leaves out)."""
    return {
        **definition(conn),
        "comments": conn.execute(
            "SELECT objsubid, description FROM pg_description"
            " WHERE objoid = 'public.accounts'::regclass ORDER BY 1"
        ).fetchall(),
    }


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_apply_rollback_apply_under_writes(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, family: str
) -> None:
    prepare(conn)
    plan = write_plan(tmp_path, _plan(f"ops_{family}", FAMILIES[family]))
    before = _catalog(conn)
    with Traffic(dsn, connections=3, rate=40, mix=MIX, seed=3, columns=WRITES) as traffic:
        progress(traffic, inserts=3, updates=3)
        result = cli(dsn, "apply", plan, "--until", "verify")
        assert result.exit_code == 0, result.output
        progress(traffic, inserts=3, updates=3)
        result = cli(dsn, "rollback", plan)
        assert result.exit_code == 0, result.output
        assert _catalog(conn) == before
        result = cli(dsn, "apply", plan)
        assert result.exit_code == 0, result.output
        progress(traffic, inserts=3, updates=3, deletes=1)
    stats = traffic.stop()
    assert stats.failed == 0, stats.errors
    assert stats.inserts > 0 and stats.updates > 0 and stats.deletes > 0
    after = _catalog(conn)
    constraints = {name: (text, valid) for name, text, valid in after["constraints"]}
    indexes = {text: valid for text, valid, _ in after["indexes"]}
    assert all(valid for valid in indexes.values())
    if family == "constraints":
        assert constraints["balance_not_negative"] == ("CHECK ((balance >= 0))", True)
        assert constraints["email_has_at"][1] is True
        assert constraints["accounts_owner_fk"] == (
            "FOREIGN KEY (owner_id) REFERENCES owners(id)",
            True,
        )
        assert ("note", "text", True, "'n'::text") in after["columns"]
        assert not any("pgshift" in name for name in constraints)
    elif family == "unique":
        assert constraints["accounts_email_key"] == ("UNIQUE (email)", True)
        assert any("accounts_owner_idx" in text and "WHERE" in text for text in indexes)
        assert not any("accounts_balance_idx" in text for text in indexes)
    else:
        columns = {c[0]: c for c in after["columns"]}
        assert columns["status"][3] == "'new'::text"
        assert columns["owner_id"][3] is None
        assert columns["balance"][2] is False
        assert after["comments"] == [(0, "one row per account"), (3, "the login")]


def test_primary_key_through_validated_not_null_under_writes(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A table without a key gets one: the unique index built CONCURRENTLY in expand, NOT NULL
    through a validated check, then the index attached as the primary key in contract."""
    prepare(conn)
    body = """
operations:
  - add_primary_key: {columns: [id]}
  - add_unique: {name: ledger_ref_key, columns: [ref]}
phases: [expand, verify, contract]
"""
    plan = write_plan(tmp_path, _plan("ledger_key", body, table="public.ledger"))
    before = definition(conn, "public.ledger")
    writes = Columns(
        insert={"amount": random_balance, "ref": unique_email}, update={"amount": random_balance}
    )
    with Traffic(
        dsn, table="public.ledger", connections=3, rate=40, mix=MIX, seed=5, columns=writes
    ) as traffic:
        progress(traffic, inserts=3)
        assert cli(dsn, "apply", plan, "--until", "verify").exit_code == 0
        progress(traffic, inserts=3)
        assert cli(dsn, "rollback", plan).exit_code == 0
        assert definition(conn, "public.ledger") == before
        result = cli(dsn, "apply", plan)
        assert result.exit_code == 0, result.output
        progress(traffic, inserts=3, deletes=1)
    stats = traffic.stop()
    assert stats.failed == 0, stats.errors
    assert stats.inserts > 0 and stats.deletes > 0
    after = definition(conn, "public.ledger")
    assert ("ledger_pkey", "PRIMARY KEY (id)", True) in after["constraints"]
    assert ("ledger_ref_key", "UNIQUE (ref)", True) in after["constraints"]
    assert after["columns"][0][2] is True  # id NOT NULL, through the check
    # the helper check is gone (PostgreSQL 18 lists NOT NULL as a constraint of its own)
    kept = [c for c in after["constraints"] if not c[1].startswith("NOT NULL ")]
    assert len(kept) == 2, after["constraints"]


VERSIONS = """
application: {mode: versions, schema: app_v2}
operations:
  - rename_column: {column: status, to: state}
  - drop_column: {column: updated_at}
  - rename_table: {to: customers}
phases:
  - expand
  - verify
  - gate: {name: old_version_gone}
  - contract
"""
OLD_WRITES = Columns(
    insert={"balance": random_balance, "email": unique_email, "status": random_status},
    update={"balance": random_balance, "status": random_status, "updated_at": "now()"},
)
NEW_WRITES = Columns(
    insert={"balance": random_balance, "email": unique_email, "state": random_status},
    update={"balance": random_balance, "state": random_status},
    read=("balance", "state"),
)


def test_renames_and_drop_in_versions_mode_both_versions_write(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The old version writes through the table, the new one through app_v2.customers (the
    new names, no updated_at) from expand on; rollback before contract gives back the table as
    it was; contract renames and drops on the table, and the new version's view (and its
    prepared reads) keep working."""
    prepare(conn)
    plan = write_plan(tmp_path, _plan("ops_versions", VERSIONS))
    before, before_rows = definition(conn), rows(conn)
    conn.close()  # a session older than the migration is an old-version session
    old = Traffic(
        dsn, connections=2, rate=40, mix=MIX, seed=11, columns=OLD_WRITES, name="old"
    ).__enter__()
    try:
        progress(old, inserts=3)
        result = cli(dsn, "apply", plan, "--until", "verify")
        assert result.exit_code == 0, result.output
        progress(old, inserts=3, updates=3)
        with psycopg.connect(dsn, autocommit=True) as check:
            assert check.execute("SELECT count(*) FROM app_v2.customers").fetchone() is not None
            columns = [
                r[0]
                for r in check.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = 'app_v2.customers'::regclass"
                    " AND attnum > 0 ORDER BY attnum"
                )
            ]
            assert "state" in columns and "status" not in columns
            assert "updated_at" not in columns
        assert cli(dsn, "rollback", plan).exit_code == 0
        with psycopg.connect(dsn, autocommit=True) as check:
            assert definition(check) == before
            assert check.execute("SELECT to_regnamespace('app_v2')").fetchone() == (None,)
        result = cli(dsn, "apply", plan, "--until", "verify")
        assert result.exit_code == 0, result.output
        new = Traffic(
            dsn,
            table="app_v2.customers",
            search_path="app_v2, public",
            connections=2,
            rate=40,
            mix={**MIX, "read": 2},
            seed=13,
            columns=NEW_WRITES,
            name="new",
        ).__enter__()
        try:
            progress(new, inserts=3, reads=2)  # both versions write side by side
            progress(old, inserts=3)
            old_stats = old.stop()  # the old version is gone; then contract
            result = cli(dsn, "apply", plan, "--approve", "old_version_gone")
            assert result.exit_code == 0, result.output
            progress(new, inserts=3, updates=3, reads=2)  # through the view, after contract
        finally:
            new_stats = new.stop()
    finally:
        old.stop()
    assert old_stats.failed == 0, old_stats.errors
    assert new_stats.failed == 0, new_stats.errors
    assert old_stats.inserts > 0 and new_stats.inserts > 0 and new_stats.reads > 0
    with psycopg.connect(dsn, autocommit=True) as check:
        after = definition(check, "public.customers")
        names = [c[0] for c in after["columns"]]
        assert names == ["id", "balance", "email", "state", "created_at", "owner_id", "note"]
        assert check.execute("SELECT to_regclass('public.accounts')").fetchone() == (None,)
        # the view stays for the new version, now over the renamed table
        assert (
            check.execute("SELECT count(*) FROM app_v2.customers").fetchone()
            == check.execute("SELECT count(*) FROM public.customers").fetchone()
        )
    assert before_rows  # rows were there to move


BUNDLED = [p for p in sorted(PLANS.glob("*.yaml")) if plan_target(p) == "operations"]


@pytest.mark.parametrize("plan", BUNDLED, ids=lambda p: p.stem)
def test_bundled_plans_apply_roll_back_and_apply(
    dsn: str, conn: psycopg.Connection[Any], plan: Path
) -> None:
    """Every operations plan in plans/ on the demo table: up to contract, rolled back to the
    table as it was, then to the end (its gates approved)."""
    assert len(BUNDLED) >= 3
    create_accounts(conn, ROWS)
    before, before_rows = _catalog(conn), rows(conn)
    spec = load_plan(plan).plan
    until = [p.name for p in spec.phases if p.kind not in ("gate", "contract")][-1]
    result = cli(dsn, "apply", str(plan), "--until", until)
    assert result.exit_code == 0, result.output
    result = cli(dsn, "rollback", str(plan))
    assert result.exit_code == 0, result.output
    assert _catalog(conn) == before
    assert rows(conn) == before_rows
    gates = [f"--approve={p.name}" for p in spec.phases if p.kind == "gate"]
    result = cli(dsn, "apply", str(plan), *gates)
    assert result.exit_code == 0, result.output
    assert "done" in cli(dsn, "status", spec.name).stdout


CHECK_PLAN = """
operations:
  - add_check: {name: balance_not_negative, check: "balance >= 0"}
  - set_not_null: {column: status}
"""


def test_verify_counts_violations_and_the_migration_rolls_back(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Rows the new constraints would reject stop the migration at verify, before contract,
    named with their counts; on_failure rollback leaves the table as it was."""
    create_accounts(conn, 200)
    conn.execute("UPDATE accounts SET balance = -1 WHERE id <= 3")
    nulls = conn.execute("SELECT count(*) FROM accounts WHERE status IS NULL").fetchone()
    assert nulls is not None and nulls[0] > 0
    before = _catalog(conn)
    plan = write_plan(
        tmp_path, _plan("ops_verify", CHECK_PLAN + "phases: [expand, verify, contract]\n")
    )
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 1
    line = error_line(result)
    assert "3 rows breaking CHECK balance_not_negative" in line, line
    assert f"{nulls[0]:,} rows with status NULL" in line, line
    assert _catalog(conn) == before


def test_a_failed_validation_in_contract_takes_the_constraint_back(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Without a verify phase VALIDATE finds the bad row in contract: the NOT VALID check is
    dropped again (it would reject the application's writes), and once the row is fixed,
    apply finishes."""
    create_accounts(conn, 200)
    conn.execute("UPDATE accounts SET balance = -1 WHERE id = 7")
    plan = write_plan(
        tmp_path,
        _plan(
            "ops_validate",
            "operations:\n  - add_check: {name: balance_not_negative, check: 'balance >= 0'}\n"
            "phases: [expand, contract]\n",
        ),
    )
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 1
    assert "point of no return" in error_line(result)
    assert "balance_not_negative" not in str(definition(conn)["constraints"])
    conn.execute("INSERT INTO accounts (balance, email) VALUES (-5, 'still@writes.dev')")
    conn.execute("UPDATE accounts SET balance = 0 WHERE balance < 0")
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 0, result.output
    assert ("balance_not_negative", "CHECK ((balance >= 0))", True) in definition(conn)[
        "constraints"
    ]


def test_plan_shows_each_step_with_its_lock_and_who_sees_what(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    prepare(conn)
    plan = write_plan(tmp_path, _plan("ops_preview", FAMILIES["constraints"]))
    result = cli(dsn, "plan", plan)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert (
        "- validate balance_not_negative against the existing rows (reads and writes continue)"
        "  (lock SHARE UPDATE EXCLUSIVE;" in text
    )
    assert "- add FOREIGN KEY accounts_owner_fk NOT VALID" in text
    assert "(lock SHARE ROW EXCLUSIVE;" in text
    assert "SET NOT NULL on note (no scan: the validated check proves it)" in text
    assert "contract: writes that break CHECK balance_not_negative" in text
    assert "rollback: none — this is the point of no return" in text
    data = json.loads(cli(dsn, "plan", plan, "--json").stdout)
    expand = data["phases"][0]
    assert [s["lock"] for s in expand["steps"]] == ["ACCESS EXCLUSIVE", "SHARE UPDATE EXCLUSIVE"]
    assert expand["rollback"][0]["sql"] == [
        'ALTER TABLE "public"."accounts" DROP CONSTRAINT IF EXISTS "email_has_at";'
    ]
    verify = data["phases"][1]["steps"][0]
    assert verify["sql"][0].startswith('SELECT count(*) FROM "public"."accounts" WHERE NOT (')


LINT_PLAN = """
application: {mode: versions}
operations:
  - add_check: {name: balance_not_negative, check: "balance >= 0"}
  - add_foreign_key:
      name: accounts_owner_fk
      columns: [owner_id]
      references: {table: public.owners, columns: [id]}
  - set_not_null: {column: note}
  - add_check: {name: email_has_at, check: "position('@' in email) > 1", at: expand}
  - add_unique: {name: accounts_email_key, columns: [email]}
  - create_index: {name: accounts_owner_idx, columns: [owner_id]}
  - drop_index: {name: accounts_balance_idx}
  - drop_default: {column: owner_id, at: expand}
  - drop_not_null: {column: balance, at: expand}
  - set_comment: {comment: "one row per account", at: expand}
  - rename_column: {column: status, to: state}
  - drop_column: {column: updated_at}
  - rename_table: {to: customers}
phases: [expand, verify, {gate: {name: old_gone}}, contract]
"""


def test_every_step_is_lint_clean_but_the_renames_and_drops_it_manages(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Each step's SQL through pgshift's own DDL rules (the executor sets lock_timeout): no
    finding fails but the renames and the drop (PGS007, PGS011), which are the operations the
    plan asked for, served through the version view or announced to the clients."""
    from pgshift.engine.executor import prepare as compile_live
    from pgshift.engine.state import StateStore
    from pgshift.lint.engine import lint_sql
    from pgshift.report.preview import step_sql

    prepare(conn)
    text = _plan("ops_lint", LINT_PLAN)
    compiled, _ = compile_live(conn, load_plan(write_plan(tmp_path, text)), StateStore())
    failing: set[str] = set()
    statements = 0
    for phase in compiled.phases:
        # a phase's steps run in order: a check validated in one step proves the next's
        for steps in (phase.forward, phase.rollback):
            text = "\n".join(line for step in steps for line in step_sql(step))
            statements += text.count(";")
            findings = lint_sql(text, require_lock_timeout=False)
            failing |= {f.rule for f in findings if f.fails}
    assert statements >= 20
    assert failing == {"PGS007", "PGS011"}


def test_rename_mode_says_which_clients_break_at_contract(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 50)
    body = (
        "operations:\n  - rename_column: {column: status, to: state}\n"
        "  - drop_column: {column: updated_at}\n  - rename_table: {to: customers}\n"
        "phases: [expand, contract]\n"
    )
    result = cli(dsn, "plan", write_plan(tmp_path, _plan("ops_rename", body)))
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "application clients (mode rename):" in text
    assert "contract: every client naming column status fails with SQLSTATE 42703" in text
    assert "Deploy a version that no longer reads or writes updated_at before contract" in text
    assert "contract: every client naming table accounts fails with SQLSTATE 42P01" in text
    # contract runs the table's rename last, after the column changes naming it
    contract = text.split("2. contract")[1]
    assert contract.index("rename column status") < contract.index("rename table public.accounts")
