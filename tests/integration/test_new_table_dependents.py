"""What reads the live table follows its name through a `new_table` cutover and back: views
(and views over them) with their owner, grants and comments, the table's row security
policies, other tables' policies reading it. The same for views and policies on the columns a
`columns` cutover swaps. What cannot follow is refused at plan time."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgshift.demo.seed import create_accounts
from tests.integration.helpers import (
    PLANS,
    cli,
    create_customers,
    error_line,
    run_process,
    write_plan,
)

BIGINT_KEY = str(PLANS / "accounts_bigint_key.yaml")


@pytest.fixture
def role(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A role of this test's own (roles are shared by every database of the server)."""
    name = f"pgshift_role_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def reads(conn: psycopg.Connection[Any], view: str) -> str:
    """The table a view reads, by what its OID is called now."""
    row = conn.execute(
        "SELECT DISTINCT d.refobjid::regclass::text FROM pg_depend d"
        " JOIN pg_rewrite r ON r.oid = d.objid WHERE d.classid = 'pg_rewrite'::regclass"
        " AND r.ev_class = %s::regclass AND d.refobjid <> r.ev_class",
        (view,),
    ).fetchone()
    assert row is not None
    return str(row[0])


def column_type(conn: psycopg.Connection[Any], relation: str, column: str) -> str:
    row = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attname = %s",
        (relation, column),
    ).fetchone()
    assert row is not None
    return str(row[0])


def views_on_accounts(conn: psycopg.Connection[Any], role: str) -> None:
    create_accounts(conn, 500)
    conn.execute("CREATE SCHEMA reporting")
    conn.execute(
        "CREATE VIEW rich WITH (security_barrier) AS"
        " SELECT id, balance, email FROM accounts WHERE balance > 100"
    )
    conn.execute("CREATE VIEW reporting.richest AS SELECT id FROM rich WHERE balance > 5000")
    conn.execute("COMMENT ON VIEW rich IS 'accounts worth a call'")
    conn.execute("COMMENT ON COLUMN rich.email IS 'where to call'")
    conn.execute(sql.SQL("GRANT SELECT ON rich TO {}").format(sql.Identifier(role)))
    conn.execute(
        sql.SQL("GRANT SELECT (id) ON reporting.richest TO {}").format(sql.Identifier(role))
    )


def view_facts(conn: psycopg.Connection[Any], role: str) -> tuple[Any, ...]:
    return (
        conn.execute(
            "SELECT obj_description('rich'::regclass, 'pg_class'),"
            " col_description('rich'::regclass, 3),"
            " (SELECT reloptions FROM pg_class WHERE oid = 'rich'::regclass),"
            " has_table_privilege(%s, 'rich', 'SELECT'),"
            " has_column_privilege(%s, 'reporting.richest', 'id', 'SELECT')",
            (role, role),
        ).fetchone(),
        conn.execute("SELECT count(*) FROM reporting.richest").fetchone(),
    )


def test_views_follow_cutover_rollback_and_contract(
    dsn: str, conn: psycopg.Connection[Any], role: str
) -> None:
    views_on_accounts(conn, role)
    facts = view_facts(conn, role)
    assert facts[0] == (
        "accounts worth a call",
        "where to call",
        ["security_barrier=true"],
        True,
        True,
    )

    plan = cli(dsn, "plan", BIGINT_KEY)
    assert plan.exit_code == 0, plan.output
    assert "view(s) public.rich, reporting.richest created again on it" in plan.output

    assert cli(dsn, "apply", BIGINT_KEY, "--until", "cutover").exit_code == 0
    assert reads(conn, "rich") == "accounts"  # the new table, under the live name
    assert reads(conn, "reporting.richest") == "rich"
    assert column_type(conn, "rich", "id") == "bigint"
    assert view_facts(conn, role) == facts
    conn.execute("INSERT INTO accounts (balance, email) VALUES (9999, 'late@cutover.dev')")
    late = conn.execute("SELECT id FROM rich WHERE email = 'late@cutover.dev'").fetchone()
    assert late is not None

    assert cli(dsn, "rollback", BIGINT_KEY).exit_code == 0
    assert reads(conn, "rich") == "accounts"  # the old table again
    assert column_type(conn, "rich", "id") == "integer"
    assert conn.execute("SELECT id FROM rich WHERE email = 'late@cutover.dev'").fetchone() == late
    assert view_facts(conn, role)[0] == facts[0]

    result = cli(dsn, "apply", BIGINT_KEY)  # through contract: the old table is dropped
    assert result.exit_code == 0, result.output
    assert conn.execute("SELECT to_regclass('accounts_pgshift_old')").fetchone() == (None,)
    assert column_type(conn, "rich", "id") == "bigint"
    assert view_facts(conn, role)[0] == facts[0]


def test_row_security_policies_are_carried_over_and_back(
    dsn: str, conn: psycopg.Connection[Any], role: str
) -> None:
    create_accounts(conn, 300)
    conn.execute("CREATE TABLE notes (account_id int, body text)")
    conn.execute("INSERT INTO notes SELECT id, 'n' FROM accounts WHERE id <= 10")
    conn.execute("ALTER TABLE accounts ENABLE ROW LEVEL SECURITY")
    conn.execute("ALTER TABLE accounts FORCE ROW LEVEL SECURITY")
    conn.execute(
        sql.SQL("CREATE POLICY positive ON accounts FOR SELECT TO {} USING (balance > 0)").format(
            sql.Identifier(role)
        )
    )
    conn.execute("CREATE POLICY everyone ON accounts USING (true)")
    conn.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
    conn.execute(
        "CREATE POLICY of_rich ON notes USING"
        " (EXISTS (SELECT 1 FROM accounts a WHERE a.id = account_id AND a.balance > 100))"
    )

    def policies(table: str) -> list[Any]:
        return conn.execute(
            "SELECT polname, polcmd, polroles::regrole[]::text[], pg_get_expr(polqual, polrelid)"
            " FROM pg_policy WHERE polrelid = %s::regclass ORDER BY 1",
            (table,),
        ).fetchall()

    def switches(table: str) -> Any:
        return conn.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s::regclass",
            (table,),
        ).fetchone()

    def notes_policy_reads() -> set[int]:
        """The OIDs of the tables policy of_rich on notes reads."""
        return {
            row[0]
            for row in conn.execute(
                "SELECT d.refobjid FROM pg_depend d JOIN pg_policy p ON p.oid = d.objid"
                " WHERE d.classid = 'pg_policy'::regclass AND p.polname = 'of_rich'"
                " AND d.refobjid <> p.polrelid"
            )
        }

    def accounts_oid() -> int:
        row = conn.execute("SELECT 'accounts'::regclass::oid").fetchone()
        assert row is not None
        return int(row[0])

    before = policies("accounts")
    assert len(before) == 2
    old_oid = accounts_oid()

    assert cli(dsn, "apply", BIGINT_KEY, "--until", "cutover").exit_code == 0
    assert accounts_oid() != old_oid
    assert policies("accounts") == before
    assert switches("accounts") == (True, True)
    assert policies("accounts_pgshift_old") == before  # kept for a rollback
    assert notes_policy_reads() == {accounts_oid()}

    assert cli(dsn, "rollback", BIGINT_KEY).exit_code == 0
    assert accounts_oid() == old_oid
    assert policies("accounts") == before
    assert notes_policy_reads() == {old_oid}

    # applied again: the copies the first cutover made on accounts_v2 are replaced, not doubled
    result = cli(dsn, "apply", BIGINT_KEY)
    assert result.exit_code == 0, result.output
    assert policies("accounts") == before
    assert switches("accounts") == (True, True)


def test_a_view_the_new_shape_cannot_hold_is_refused_at_plan_time(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    create_customers(conn, 100)
    conn.execute("CREATE VIEW names AS SELECT id, upper(full_name) AS shout FROM customers")
    conn.execute("CREATE VIEW loud AS SELECT shout FROM names")
    result = cli(dsn, "plan", str(PLANS / "split_full_name.yaml"))
    assert result.exit_code == 2
    line = error_line(result)
    assert "public.names would not work on public.customers_v2 after cutover" in line
    assert "full_name" in line
    # nothing was left behind by the try
    assert conn.execute("SELECT to_regclass('customers_v2')").fetchone() == (None,)


def test_a_nested_view_the_new_shape_cannot_hold_is_refused_too(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The inner view works on the new table, but changes a column type the outer one needs."""
    create_accounts(conn, 100)
    conn.execute("CREATE VIEW ids AS SELECT id FROM accounts")
    conn.execute("CREATE FUNCTION only_int(integer) RETURNS integer LANGUAGE sql AS 'SELECT $1'")
    conn.execute("CREATE VIEW small_ids AS SELECT only_int(id) AS id FROM ids")
    result = cli(dsn, "plan", BIGINT_KEY)
    assert result.exit_code == 2
    assert "public.small_ids would not work on public.accounts_v2" in error_line(result)


def test_what_cannot_follow_the_swap_is_refused(dsn: str, conn: psycopg.Connection[Any]) -> None:
    create_accounts(conn, 100)
    conn.execute("CREATE MATERIALIZED VIEW totals AS SELECT count(*) FROM accounts")
    result = cli(dsn, "plan", BIGINT_KEY)
    assert result.exit_code == 2
    assert "materialized view public.totals reads public.accounts" in error_line(result)

    conn.execute("DROP MATERIALIZED VIEW totals")
    conn.execute("CREATE PUBLICATION accounts_out FOR TABLE accounts")
    result = cli(dsn, "plan", BIGINT_KEY)
    assert result.exit_code == 2
    assert "REFRESH PUBLICATION" in error_line(result)


def test_a_view_made_after_plan_time_is_carried_too(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Definitions are read inside the swap, so a view created mid-migration follows as well."""
    create_accounts(conn, 200)
    assert cli(dsn, "apply", BIGINT_KEY, "--until", "backfill").exit_code == 0
    conn.execute("CREATE VIEW late AS SELECT id, email FROM accounts")
    assert cli(dsn, "apply", BIGINT_KEY, "--until", "cutover").exit_code == 0
    assert reads(conn, "late") == "accounts"
    assert column_type(conn, "late", "id") == "bigint"
    text = (PLANS / "accounts_bigint_key.yaml").read_text()
    assert write_plan(tmp_path, text)  # the plan itself did not change


def test_a_view_that_no_longer_fits_at_cutover_stops_it_cleanly(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A view created after plan time that the new shape cannot hold: the swap transaction
    fails as a whole, with a line naming the view; the live table and the view are untouched."""
    create_customers(conn, 200)
    text = (
        (PLANS / "split_full_name.yaml")
        .read_text()
        .replace("phases:\n", "settings:\n  on_failure: pause\nphases:\n")
    )
    plan = write_plan(tmp_path, text)
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    live = conn.execute("SELECT 'customers'::regclass::oid").fetchone()
    conn.execute("CREATE VIEW names AS SELECT id, full_name FROM customers")
    result = cli(dsn, "apply", plan, "--until", "cutover")
    assert result.exit_code == 1
    assert "public.names cannot be created again on the swapped table" in error_line(result)
    assert conn.execute("SELECT 'customers'::regclass::oid").fetchone() == live
    assert reads(conn, "names") == "customers"
    assert conn.execute("SELECT count(*) FROM names").fetchone() == (200,)
    assert conn.execute("SELECT to_regclass('customers_pgshift_old')").fetchone() == (None,)


WIDEN = str(PLANS / "widen_account_balance.yaml")


def attribute_read(conn: psycopg.Connection[Any], view: str) -> list[str]:
    """The accounts columns a view reads, by the names they have now."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT a.attname FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid"
            " JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
            " WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class = %s::regclass"
            " AND d.refobjid = 'accounts'::regclass ORDER BY 1",
            (view,),
        )
    ]


def test_columns_cutover_carries_views_and_policies_on_changed_columns(
    dsn: str, conn: psycopg.Connection[Any], role: str
) -> None:
    create_accounts(conn, 400)
    conn.execute("CREATE VIEW rich AS SELECT id, balance FROM accounts WHERE balance > 100")
    conn.execute("CREATE VIEW richest AS SELECT id, balance FROM rich WHERE balance > 5000")
    conn.execute("CREATE VIEW emails AS SELECT id, email FROM accounts")  # no changed column
    conn.execute(sql.SQL("GRANT SELECT ON rich TO {}").format(sql.Identifier(role)))
    conn.execute("ALTER TABLE accounts ENABLE ROW LEVEL SECURITY")
    conn.execute("CREATE POLICY positive ON accounts USING (balance >= 0)")
    emails_oid = conn.execute("SELECT 'emails'::regclass::oid").fetchone()
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM rich), (SELECT count(*) FROM richest)"
    ).fetchone()
    plan = cli(dsn, "plan", WIDEN)
    assert plan.exit_code == 0, plan.output
    assert "view(s) public.rich created again on them" in plan.output
    assert "row security policy(ies) positive created again" in plan.output

    assert cli(dsn, "apply", WIDEN, "--until", "cutover").exit_code == 0
    assert column_type(conn, "rich", "balance") == "bigint"
    assert column_type(conn, "richest", "balance") == "bigint"
    assert attribute_read(conn, "rich") == ["balance", "id"]  # the new column, by its live name
    assert conn.execute("SELECT 'emails'::regclass::oid").fetchone() == emails_oid  # untouched
    assert conn.execute("SELECT has_table_privilege(%s, 'rich', 'SELECT')", (role,)).fetchone() == (
        True,
    )
    assert conn.execute(
        "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polname = 'positive'"
    ).fetchone() == ("(balance >= 0)",)
    assert conn.execute(
        "SELECT count(*) FROM pg_depend d JOIN pg_policy p ON p.oid = d.objid"
        " JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
        " WHERE p.polname = 'positive' AND a.attname = 'balance'"
    ).fetchone() == (1,)
    assert (
        conn.execute(
            "SELECT (SELECT count(*) FROM rich), (SELECT count(*) FROM richest)"
        ).fetchone()
        == counts
    )

    assert cli(dsn, "rollback", WIDEN).exit_code == 0
    assert column_type(conn, "rich", "balance") == "integer"
    assert attribute_read(conn, "rich") == ["balance", "id"]

    result = cli(dsn, "apply", WIDEN)  # contract drops the old column: nothing may read it
    assert result.exit_code == 0, result.output
    assert column_type(conn, "richest", "balance") == "bigint"


def test_columns_plan_refuses_a_view_the_new_type_breaks(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 100)
    conn.execute("CREATE VIEW doubled AS SELECT id, balance * 2 AS twice FROM accounts")
    text = (
        (PLANS / "widen_account_balance.yaml")
        .read_text()
        .replace("type: bigint", "type: text")
        .replace("up: balance::bigint", "up: balance::text")
    )
    result = cli(dsn, "plan", write_plan(tmp_path, text))
    assert result.exit_code == 2
    line = error_line(result)
    assert "public.doubled would not work on the new columns of public.accounts" in line


def test_a_kill_inside_the_swap_leaves_the_views_as_they_were(
    dsn: str, conn: psycopg.Connection[Any], role: str
) -> None:
    views_on_accounts(conn, role)
    facts = view_facts(conn, role)
    live = conn.execute("SELECT 'accounts'::regclass::oid").fetchone()
    assert cli(dsn, "apply", BIGINT_KEY, "--until", "backfill").exit_code == 0
    # cutover's steps: ANALYZE, then the swap (1); killed after its statements, before commit
    crashed = run_process(
        dsn,
        "apply",
        BIGINT_KEY,
        "--until",
        "cutover",
        env={"PGSHIFT_FAILPOINT": "cutover:1:in-transaction"},
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert conn.execute("SELECT 'accounts'::regclass::oid").fetchone() == live
    assert reads(conn, "rich") == "accounts"
    assert column_type(conn, "rich", "id") == "integer"
    assert view_facts(conn, role) == facts

    assert cli(dsn, "apply", BIGINT_KEY, "--until", "cutover").exit_code == 0
    assert column_type(conn, "rich", "id") == "bigint"
    assert view_facts(conn, role) == facts


def test_the_tables_own_triggers_move_with_its_name_and_never_fire_twice(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    create_accounts(conn, 200)
    conn.execute("CREATE TABLE audit (account_id bigint, op text)")
    conn.execute(
        "CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN INSERT INTO audit VALUES (NEW.id, TG_OP); RETURN NULL; END$$"
    )
    conn.execute(
        "CREATE TRIGGER audit_insert AFTER INSERT ON accounts FOR EACH ROW"
        " EXECUTE FUNCTION audit_row()"
    )
    conn.execute(
        "CREATE TRIGGER dormant AFTER UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION audit_row()"
    )
    conn.execute("ALTER TABLE accounts DISABLE TRIGGER dormant")

    def states(table: str) -> dict[str, str]:
        return {
            name: state
            for name, state in conn.execute(
                "SELECT tgname, tgenabled::text FROM pg_trigger WHERE tgrelid = %s::regclass"
                " AND NOT tgisinternal AND tgname NOT LIKE 'zz%%'",
                (table,),
            )
        }

    def audited_after(insert: str) -> int:
        before = conn.execute("SELECT count(*) FROM audit").fetchone()
        conn.execute(insert)
        after = conn.execute("SELECT count(*) FROM audit").fetchone()
        assert before is not None and after is not None
        return int(after[0]) - int(before[0])

    original = states("accounts")
    assert original == {"audit_insert": "O", "dormant": "D"}
    plan = cli(dsn, "plan", BIGINT_KEY)
    assert "trigger(s) audit_insert, dormant moved to it" in plan.output

    assert cli(dsn, "apply", BIGINT_KEY, "--until", "backfill").exit_code == 0
    assert states("accounts_v2") == {}  # the copies must not fire anything
    assert audited_after("INSERT INTO accounts (balance, email) VALUES (1, 'a@t.dev')") == 1

    assert cli(dsn, "apply", BIGINT_KEY, "--until", "cutover").exit_code == 0
    assert states("accounts") == original
    assert states("accounts_pgshift_old") == {"audit_insert": "D", "dormant": "D"}
    assert audited_after("INSERT INTO accounts (balance, email) VALUES (2, 'b@t.dev')") == 1

    # cutover undone, the copy kept: the triggers come back, the copy has none of them again
    assert cli(dsn, "rollback", BIGINT_KEY, "--to", "verify").exit_code == 0
    assert states("accounts") == original
    assert states("accounts_v2") == {}
    assert audited_after("INSERT INTO accounts (balance, email) VALUES (3, 'c@t.dev')") == 1

    result = cli(dsn, "apply", BIGINT_KEY)
    assert result.exit_code == 0, result.output
    assert states("accounts") == original
    assert audited_after("INSERT INTO accounts (balance, email) VALUES (4, 'd@t.dev')") == 1


def test_column_privileges_are_carried_to_the_new_table(
    dsn: str, conn: psycopg.Connection[Any], role: str
) -> None:
    create_accounts(conn, 100)
    conn.execute(sql.SQL("GRANT SELECT (id, email) ON accounts TO {}").format(sql.Identifier(role)))
    assert cli(dsn, "apply", BIGINT_KEY, "--until", "cutover").exit_code == 0
    assert conn.execute(
        "SELECT has_column_privilege(%s, 'accounts', 'email', 'SELECT'),"
        " has_column_privilege(%s, 'accounts', 'balance', 'SELECT'),"
        " has_table_privilege(%s, 'accounts', 'SELECT')",
        (role, role, role),
    ).fetchone() == (True, False, False)


def test_column_privileges_on_a_column_the_new_table_drops_are_warned_about(
    dsn: str, conn: psycopg.Connection[Any], role: str
) -> None:
    create_customers(conn, 50)
    conn.execute(
        sql.SQL("GRANT SELECT (full_name) ON customers TO {}").format(sql.Identifier(role))
    )
    result = cli(dsn, "plan", str(PLANS / "split_full_name.yaml"))
    assert result.exit_code == 0, result.output
    assert "column privileges on public.customers (full_name) are not carried" in result.output


def test_a_view_pgshift_could_not_give_back_to_its_owner_is_refused_at_plan_time(
    dsn: str, conn: psycopg.Connection[Any], role: str
) -> None:
    """pgshift runs as the table's owner, but the view reading the table belongs to someone
    else: the swap could not drop it and give it back, so plan says whose rights it needs."""
    create_accounts(conn, 50)
    name = sql.Identifier(role)
    conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(name))
    conn.execute(sql.SQL("ALTER TABLE accounts OWNER TO {}").format(name))
    conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(name))
    conn.execute("CREATE VIEW rich AS SELECT id FROM accounts WHERE balance > 10")
    as_owner = make_conninfo(**{**conninfo_to_dict(dsn), "user": role})
    result = cli(as_owner, "plan", BIGINT_KEY)
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert "view public.rich belongs to" in line and "run pgshift as that role" in line

    conn.execute(sql.SQL("ALTER VIEW rich OWNER TO {}").format(name))
    result = cli(as_owner, "plan", BIGINT_KEY)
    assert result.exit_code == 0, result.output


def test_a_trigger_the_new_columns_cannot_hold_is_refused_at_plan_time(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    create_customers(conn, 50)
    conn.execute(
        "CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$"
    )
    conn.execute(
        "CREATE TRIGGER renamed BEFORE UPDATE OF full_name ON customers FOR EACH ROW"
        " EXECUTE FUNCTION keep()"
    )
    result = cli(dsn, "plan", str(PLANS / "split_full_name.yaml"))
    assert result.exit_code == 2
    line = error_line(result)
    assert "trigger renamed of customers would not work on public.customers_v2" in line
    assert "full_name" in line


def test_storage_options_comments_statistics_and_replica_identity_are_inherited(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 100)
    conn.execute(
        "ALTER TABLE accounts SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01)"
    )
    conn.execute("COMMENT ON TABLE accounts IS 'the money'")
    conn.execute("COMMENT ON COLUMN accounts.email IS 'where to write'")
    conn.execute("ALTER TABLE accounts ALTER COLUMN email SET STATISTICS 500")
    conn.execute("ALTER TABLE accounts REPLICA IDENTITY FULL")
    text = (
        (PLANS / "accounts_bigint_key.yaml")
        .read_text()
        .replace(
            "  updated_at timestamptz\n    );",
            "  updated_at timestamptz\n    ) WITH (fillfactor = 90);",
        )
    )
    assert "fillfactor = 90" in text
    assert cli(dsn, "apply", write_plan(tmp_path, text), "--until", "expand").exit_code == 0
    assert conn.execute(
        "SELECT reloptions, obj_description(oid, 'pg_class'), relreplident::text,"
        " col_description(oid, 3)"
        " FROM pg_class WHERE oid = 'accounts_v2'::regclass"
    ).fetchone() == (
        ["fillfactor=90", "autovacuum_vacuum_scale_factor=0.01"],  # create's own option wins
        "the money",
        "f",
        "where to write",
    )
    assert conn.execute(
        "SELECT attstattarget FROM pg_attribute"
        " WHERE attrelid = 'accounts_v2'::regclass AND attname = 'email'"
    ).fetchone() == (500,)
