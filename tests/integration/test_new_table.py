"""The `new_table` target end to end: every bundled table-copy plan applies, rolls back (before
and after cutover) to exactly the table as it was, keeps every write made after cutover, and
applies again; under heavy deletes and key changes the copy equals the mapping of the live
table row for row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgshift.demo.seed import create_accounts
from pgshift.demo.traffic import Traffic
from tests.integration.helpers import (
    PLANS,
    cli,
    create_customers,
    create_orders,
    definition,
    error_line,
    rows,
    write_plan,
)


def accounts_with_orders(conn: psycopg.Connection[Any]) -> None:
    create_accounts(conn, 2_000)
    create_orders(conn)


SETUP: dict[str, tuple[Callable[[psycopg.Connection[Any]], None], str, str]] = {
    # plan -> (set-up, live table, an insert a writer makes after cutover)
    "accounts_bigint_key.yaml": (
        accounts_with_orders,
        "public.accounts",
        "INSERT INTO accounts (balance, email) VALUES (7, 'after@cutover.dev')",
    ),
    "partition_accounts.yaml": (
        accounts_with_orders,
        "public.accounts",
        "INSERT INTO accounts (id, balance, email) VALUES (500000, 7, 'after@cutover.dev')",
    ),
    "split_full_name.yaml": (
        lambda conn: create_customers(conn, 1_500),
        "public.customers",
        "INSERT INTO customers (id, first_name, last_name, email)"
        " VALUES (900000, 'Katherine', 'Johnson', 'after@cutover.dev')",
    ),
}


@pytest.mark.parametrize("plan_name", sorted(SETUP))
def test_apply_rollback_apply_and_rollback_after_cutover(
    dsn: str, conn: psycopg.Connection[Any], plan_name: str
) -> None:
    setup, table, late_write = SETUP[plan_name]
    setup(conn)
    plan = str(PLANS / plan_name)
    before, before_rows = definition(conn, table), rows(conn, table)
    orders = rows(conn, "public.orders") if "accounts" in table else None

    for until in ("expand", "dual_write", "backfill", "verify"):
        assert cli(dsn, "apply", plan, "--until", until).exit_code == 0, until
        assert cli(dsn, "rollback", plan).exit_code == 0, until
        assert definition(conn, table) == before, until
        assert rows(conn, table) == before_rows, until

    result = cli(dsn, "apply", plan, "--until", "cutover")
    assert result.exit_code == 0, result.output
    conn.execute(late_write)  # a writer after cutover, on the new shape
    assert cli(dsn, "verify", plan).exit_code == 0  # the old table followed it
    assert cli(dsn, "rollback", plan).exit_code == 0
    assert definition(conn, table) == before
    after_rows = rows(conn, table)
    assert len(after_rows) == len(before_rows) + 1  # the late write is in the old table too
    assert set(before_rows) < set(after_rows)
    if orders is not None:
        assert rows(conn, "public.orders") == orders
        assert conn.execute(
            "SELECT confrelid::regclass::text, convalidated FROM pg_constraint"
            " WHERE conrelid = 'orders'::regclass AND contype = 'f'"
        ).fetchone() == ("accounts", True)

    result = cli(dsn, "apply", plan)
    assert result.exit_code == 0, result.output
    assert conn.execute(
        "SELECT count(*) FROM pg_class WHERE relname LIKE '%pgshift_old'"
    ).fetchone() == (0,)
    assert len(rows(conn, table)) == len(after_rows)


def test_bigint_key_keeps_the_sequence_continuous(dsn: str, conn: psycopg.Connection[Any]) -> None:
    accounts_with_orders(conn)
    plan = str(PLANS / "accounts_bigint_key.yaml")
    assert cli(dsn, "apply", plan).exit_code == 0
    assert conn.execute(
        "SELECT format_type(atttypid, NULL), pg_get_expr(adbin, adrelid) FROM pg_attribute"
        " JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum"
        " WHERE attrelid = 'accounts'::regclass AND attname = 'id'"
    ).fetchone() == ("bigint", "nextval('accounts_id_seq'::regclass)")
    assert conn.execute(
        "SELECT format_type(seqtypid, NULL) FROM pg_sequence WHERE seqrelid = 'accounts_id_seq'::regclass"
    ).fetchone() == ("bigint",)
    top = conn.execute("SELECT max(id) FROM accounts").fetchone()[0]  # type: ignore[index]
    new_id = conn.execute(
        "INSERT INTO accounts (balance, email) VALUES (1, 'n@example.dev') RETURNING id"
    ).fetchone()[0]  # type: ignore[index]
    assert new_id > top  # no key reused
    conn.execute("INSERT INTO orders (account_id, amount) VALUES (%s, 1)", (new_id,))
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("INSERT INTO orders (account_id, amount) VALUES (-1, 1)")


MIX = {"insert": 3, "update": 3, "delete": 4, "key_update": 3}


def _small_batches(conn: psycopg.Connection[Any], tmp_path: Path, plan_name: str) -> str:
    """accounts and orders, and the bundled plan with batches of 100 rows 5 ms apart."""
    accounts_with_orders(conn)
    text = (
        (PLANS / plan_name)
        .read_text()
        .replace("  - backfill\n", "  - {backfill: {batch_size: 100, batch_pause: 5ms}}\n")
    )
    return write_plan(tmp_path, text)


@pytest.mark.parametrize("plan_name", ["accounts_bigint_key.yaml", "partition_accounts.yaml"])
def test_heavy_deletes_and_key_changes_leave_no_ghost(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, plan_name: str
) -> None:
    plan = _small_batches(conn, tmp_path, plan_name)
    traffic = Traffic(dsn, connections=4, rate=60, mix=MIX, seed=11)
    with traffic:
        result = cli(dsn, "apply", plan, "--until", "verify")  # verify fails on any ghost
        assert result.exit_code == 0, result.output
        new = "accounts_v2" if "bigint" in plan_name else "accounts_part"
        # row for row, in one snapshot: no ghost, missing or stale row
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            live = conn.execute(
                "SELECT id, balance, email, status, updated_at FROM accounts ORDER BY id"
            ).fetchall()
            copy = conn.execute(
                f"SELECT id, balance, email, status, updated_at FROM {new} ORDER BY id"
            ).fetchall()
        assert live == copy
        result = cli(dsn, "apply", plan)
        assert result.exit_code == 0, result.output
    stats = traffic.stop()
    assert stats.failed == 0, stats.errors
    assert stats.deletes > 0 and stats.key_updates > 0


def test_writers_see_no_error_through_the_whole_copy(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    accounts_with_orders(conn)
    text = (
        (PLANS / "accounts_bigint_key.yaml")
        .read_text()
        .replace("  - backfill\n", "  - {backfill: {batch_size: 200}}\n")
    )
    plan = write_plan(tmp_path, text)
    traffic = Traffic(dsn, connections=3, rate=60, mix=MIX, seed=5)
    with traffic:
        assert cli(dsn, "apply", plan).exit_code == 0
    stats = traffic.stop()
    assert stats.failed == 0, stats.errors
    assert stats.deletes > 0 and stats.key_updates > 0


def test_create_may_only_create_the_new_table(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 100)
    text = (
        (PLANS / "accounts_bigint_key.yaml")
        .read_text()
        .replace(
            "    CREATE INDEX accounts_v2_email_idx",
            "    COMMENT ON TABLE accounts IS 'x';\n    CREATE INDEX accounts_v2_email_idx",
        )
    )
    result = cli(dsn, "plan", write_plan(tmp_path, text))
    assert result.exit_code == 2
    assert "only CREATE TABLE and CREATE INDEX" in error_line(result)


IDENTITY_PLAN = """version: 1
name: identity_copy
table: public.events
new_table:
  name: public.events_v2
  create: |
    CREATE TABLE public.events_v2 (
      id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
      payload text
    );
phases: [expand, dual_write, backfill, cutover, contract]
"""


def test_identity_keys_continue_across_cutover_and_rollback(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    conn.execute(
        "CREATE TABLE events (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, payload text)"
    )
    conn.execute("INSERT INTO events (payload) SELECT 'e' || g FROM generate_series(1, 300) g")
    reader = f"pgshift_reader_{uuid.uuid4().hex[:8]}"  # roles are cluster-wide: unique per run
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(reader)))
    try:
        conn.execute(sql.SQL("GRANT SELECT ON events TO {}").format(sql.Identifier(reader)))
        plan = write_plan(tmp_path, IDENTITY_PLAN)
        assert cli(dsn, "apply", plan, "--until", "cutover").exit_code == 0
        after_cutover = conn.execute(
            "INSERT INTO events (payload) VALUES ('new') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        assert after_cutover > 300  # the new table's identity went past the old sequence
        assert conn.execute(
            "SELECT has_table_privilege(%s, 'events', 'SELECT')", (reader,)
        ).fetchone() == (True,)  # the grant came along

        assert cli(dsn, "rollback", plan).exit_code == 0
        back = conn.execute("INSERT INTO events (payload) VALUES ('back') RETURNING id").fetchone()[
            0
        ]  # type: ignore[index]
        assert back > after_cutover  # and the old identity went past the new one on the way back
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (302,)

        assert cli(dsn, "apply", plan).exit_code == 0
        again = conn.execute(
            "INSERT INTO events (payload) VALUES ('again') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        assert again > back
        assert conn.execute(
            "SELECT format_type(atttypid, NULL), attidentity FROM pg_attribute"
            " WHERE attrelid = 'events'::regclass AND attname = 'id'"
        ).fetchone() == ("bigint", "d")
    finally:
        conn.execute("DROP TABLE IF EXISTS events, events_v2, events_pgshift_old CASCADE")
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(reader)))


@pytest.mark.parametrize(
    ("mapping", "fragment"),
    [
        ("columns:\n    email: upper(nosuchcol)", "new_table.columns does not work"),
        ("columns:\n    email: email; DROP TABLE accounts", "not a SQL expression"),
        ("columns:\n    balance: email", "new_table.columns does not work"),
        ("reverse:\n    balance: now()", "new_table.reverse does not work"),
    ],
)
def test_mappings_are_checked_before_anything_runs(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, mapping: str, fragment: str
) -> None:
    create_accounts(conn, 100)
    text = (
        (PLANS / "accounts_bigint_key.yaml")
        .read_text()
        .replace("\nphases:", f"\n  {mapping.replace(chr(10), chr(10) + '  ')}\n\nphases:")
    )
    result = cli(dsn, "apply", write_plan(tmp_path, text))
    assert result.exit_code == 2, result.output
    assert fragment in error_line(result)
    assert conn.execute("SELECT to_regclass('accounts_v2')").fetchone() == (None,)


def test_self_referencing_foreign_key_is_refused(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 100)
    conn.execute("ALTER TABLE accounts ADD COLUMN parent int REFERENCES accounts (id)")
    result = cli(dsn, "plan", str(PLANS / "accounts_bigint_key.yaml"))
    assert result.exit_code == 2
    assert "references itself through foreign key accounts_parent_fkey" in error_line(result)


def test_sequence_the_key_does_not_own_is_refused(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 100)
    conn.execute("CREATE SEQUENCE shared_ids")
    conn.execute("ALTER TABLE accounts ALTER COLUMN id SET DEFAULT nextval('shared_ids')")
    result = cli(dsn, "plan", str(PLANS / "accounts_bigint_key.yaml"))
    assert result.exit_code == 2
    assert "from a sequence it does not own" in error_line(result)


def test_demo_table_seeds_past_integer_overflow_of_its_generators(
    conn: psycopg.Connection[Any],
) -> None:
    create_accounts(conn, 300_000)  # i * 7919 passes 2^31 at ~271,000 rows
    assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (300_000,)


def test_partitions_get_the_owner_and_grants_too(dsn: str, conn: psycopg.Connection[Any]) -> None:
    create_accounts(conn, 100)
    reader = f"pgshift_reader_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(reader)))
    try:
        conn.execute(sql.SQL("GRANT SELECT ON accounts TO {}").format(sql.Identifier(reader)))
        assert (
            cli(dsn, "apply", str(PLANS / "partition_accounts.yaml"), "--until", "expand").exit_code
            == 0
        )
        for table in ("accounts_part", "accounts_part_p0", "accounts_part_rest"):
            assert conn.execute(
                "SELECT has_table_privilege(%s, %s, 'SELECT')", (reader, table)
            ).fetchone() == (True,), table
        assert cli(dsn, "rollback", str(PLANS / "partition_accounts.yaml")).exit_code == 0
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(reader)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(reader)))


def test_a_row_the_new_unique_index_rejects_fails_the_copy_instead_of_vanishing(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Only a conflict on the new table's key means "the trigger copied it already": a row that
    breaks another unique index of the new table must stop the backfill, not be skipped (no
    verify phase here to notice a missing row before cutover)."""
    create_accounts(conn, 300)
    conn.execute(
        "UPDATE accounts SET email = (SELECT email FROM accounts WHERE id = 1) WHERE id = 2"
    )
    text = (
        (PLANS / "accounts_bigint_key.yaml")
        .read_text()
        .replace(
            "    CREATE INDEX accounts_v2_email_idx ON public.accounts_v2 (email);",
            "    CREATE UNIQUE INDEX accounts_v2_email_key ON public.accounts_v2 (email);",
        )
        .replace("  - verify\n", "")
    )
    plan = write_plan(
        tmp_path, text.replace("phases:\n", "settings:\n  on_failure: pause\nphases:\n")
    )
    result = cli(dsn, "apply", plan, "--until", "backfill")
    assert result.exit_code == 1
    assert "accounts_v2_email_key" in error_line(result)


def test_truncate_is_carried_to_the_other_table_both_ways(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    create_accounts(conn, 300)
    plan = str(PLANS / "accounts_bigint_key.yaml")
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    assert conn.execute("SELECT count(*) FROM accounts_v2").fetchone() == (300,)
    conn.execute("TRUNCATE accounts")
    assert conn.execute("SELECT count(*) FROM accounts_v2").fetchone() == (0,)
    conn.execute("INSERT INTO accounts (balance, email) VALUES (5, 'after@truncate.dev')")
    assert cli(dsn, "apply", plan, "--until", "cutover").exit_code == 0
    assert cli(dsn, "verify", plan).exit_code == 0

    conn.execute("TRUNCATE accounts")  # the new table now: the old one follows it
    assert conn.execute("SELECT count(*) FROM accounts_pgshift_old").fetchone() == (0,)
    conn.execute("INSERT INTO accounts (balance, email) VALUES (6, 'late@truncate.dev')")
    assert cli(dsn, "rollback", plan).exit_code == 0
    assert conn.execute("SELECT email FROM accounts").fetchall() == [("late@truncate.dev",)]
    assert conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'zz_pgshift%'"
    ).fetchone() == (0,)


def test_after_contract_the_new_table_takes_the_old_index_names(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    accounts_with_orders(conn)

    def names() -> tuple[list[Any], list[Any]]:
        return (
            conn.execute(
                "SELECT indexrelid::regclass::text FROM pg_index"
                " WHERE indrelid = 'accounts'::regclass ORDER BY 1"
            ).fetchall(),
            conn.execute(
                "SELECT conname, contype FROM pg_constraint WHERE conrelid = 'accounts'::regclass"
                " ORDER BY 1"
            ).fetchall(),
        )

    before = names()
    assert ("accounts_pkey", "p") in before[1]
    result = cli(dsn, "apply", str(PLANS / "accounts_bigint_key.yaml"))
    assert result.exit_code == 0, result.output
    assert names() == before
    assert conn.execute(
        "SELECT format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = 'accounts'::regclass AND attname = 'id'"
    ).fetchone() == ("bigint",)


def test_the_copy_shows_the_lock_it_takes_on_the_live_table(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """The copy reads the live table without locking its rows (the delete fence closes the
    delete race): ACCESS SHARE there, not ROW EXCLUSIVE, and deletes go on."""
    accounts_with_orders(conn)
    data = json.loads(cli(dsn, "plan", str(PLANS / "accounts_bigint_key.yaml"), "--json").stdout)
    copy = next(p for p in data["phases"] if p["kind"] == "backfill")["steps"][0]
    assert (copy["lock"], copy["blocks_writes"]) == ("ACCESS SHARE", False)
    assert "updatable and deletable" in copy["lock_held"]
    assert "FOR KEY SHARE" not in "".join(copy["sql"])


def test_while_deletes_keep_the_fence_sweeping_the_batches_lock_their_rows(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every sweep counts as costly here, so the copy alternates: two fenced batches, then two
    with row locks, then fenced again; under deletes and key changes the copy still ends equal
    to the live table."""
    from pgshift.engine import backfill_runner

    monkeypatch.setattr(backfill_runner, "SWEEP_SHARE", -1.0)
    monkeypatch.setattr(backfill_runner, "LOCKED_BATCHES", 2)
    plan = _small_batches(conn, tmp_path, "accounts_bigint_key.yaml")
    traffic = Traffic(dsn, connections=3, rate=60, mix=MIX, seed=17)
    with traffic:
        result = cli(dsn, "apply", plan, "--until", "verify")  # verify fails on any ghost
        assert result.exit_code == 0, result.output
    stats = traffic.stop()
    assert stats.failed == 0, stats.errors
    assert stats.deletes > 0
    switches = result.stderr.count("the next batches lock their rows")
    assert switches >= 3, result.stderr[-3000:]
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        live = conn.execute("SELECT id, balance, email FROM accounts ORDER BY id").fetchall()
        copy = conn.execute("SELECT id, balance, email FROM accounts_v2 ORDER BY id").fetchall()
    assert live == copy
