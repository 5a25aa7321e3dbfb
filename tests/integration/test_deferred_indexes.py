"""`new_table`: the plain indexes `create` names on the new table are built CONCURRENTLY at the
end of backfill, not in expand; unique ones, and every index of a partitioned new table, stay in
expand. A build killed half-way leaves an INVALID index that `apply` drops and builds again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from pgshift.demo.seed import create_accounts
from tests.integration.helpers import PLANS, cli, write_plan

BIGINT_KEY = str(PLANS / "accounts_bigint_key.yaml")
DEFERRED = ("accounts_v2_balance_idx", "accounts_v2_email_idx")


def indexes(conn: psycopg.Connection[Any], table: str) -> dict[str, bool]:
    """Index name -> valid, for every index on `table`."""
    return dict(
        conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = %s::regclass ORDER BY 1",
            (table,),
        ).fetchall()
    )


def test_plain_indexes_of_create_are_built_after_the_copy(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    create_accounts(conn, 3_000)
    assert cli(dsn, "apply", BIGINT_KEY, "--until", "expand").exit_code == 0
    assert indexes(conn, "accounts_v2") == {"accounts_v2_pkey": True}  # the key only

    # the snapshot the migration compiles against still knows all of create's indexes
    snapshot = conn.execute("SELECT snapshot FROM pgshift.migrations").fetchone()[0]  # type: ignore[index]
    assert sorted(i["name"] for i in snapshot["new_table"]["indexes"]) == sorted(
        ["accounts_v2_pkey", *DEFERRED]
    )

    result = cli(dsn, "apply", BIGINT_KEY, "--until", "backfill")
    assert result.exit_code == 0, result.output
    assert indexes(conn, "accounts_v2") == {
        "accounts_v2_pkey": True,
        "accounts_v2_balance_idx": True,
        "accounts_v2_email_idx": True,
    }
    assert conn.execute("SELECT pg_get_indexdef('accounts_v2_email_idx'::regclass)").fetchone() == (
        "CREATE INDEX accounts_v2_email_idx ON public.accounts_v2 USING btree (email)",
    )

    # verify and cutover find them in place; after cutover they are the live table's
    result = cli(dsn, "apply", BIGINT_KEY, "--until", "cutover")
    assert result.exit_code == 0, result.output
    assert set(indexes(conn, "accounts")) == {"accounts_v2_pkey", *DEFERRED}
    assert cli(dsn, "rollback", BIGINT_KEY).exit_code == 0
    assert conn.execute("SELECT to_regclass('accounts_v2')").fetchone() == (None,)


def test_plan_and_runbook_show_the_builds_under_backfill(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    create_accounts(conn, 100)
    result = cli(dsn, "plan", BIGINT_KEY, "--json")
    assert result.exit_code == 0, result.output
    phases = {p["kind"]: p for p in json.loads(result.stdout)["phases"]}
    expand_sql = "\n".join(s for step in phases["expand"]["steps"] for s in step["sql"])
    assert "PRIMARY KEY" in expand_sql and "CREATE INDEX" not in expand_sql
    copy, *builds = phases["backfill"]["steps"]
    assert "INSERT INTO" in copy["sql"][2] and "copy_batch_fence" in copy["sql"][4]
    assert [b["sql"] for b in builds] == [
        [f"CREATE INDEX CONCURRENTLY {name} ON public.accounts_v2 ({column});"]
        for name, column in (
            ("accounts_v2_email_idx", "email"),
            ("accounts_v2_balance_idx", "balance"),
        )
    ]
    for build in builds:
        assert build["lock"] == "SHARE UPDATE EXCLUSIVE"
        assert not build["blocks_writes"] and not build["in_transaction"]

    text = cli(dsn, "plan", BIGINT_KEY, "--sql").stdout
    backfill_text = text[text.index("3. backfill") : text.index("4. verify")]
    assert "CREATE INDEX CONCURRENTLY accounts_v2_email_idx" in backfill_text

    runbook = cli(dsn, "runbook", BIGINT_KEY).stdout
    backfill_section = runbook[runbook.index("backfill") :]
    # progress and INVALID-index checks look at the table the indexes are built on
    assert 'WHERE relid = \'"public"."accounts_v2"\'::regclass' in backfill_section
    assert 'WHERE indrelid = \'"public"."accounts_v2"\'::regclass' in backfill_section


def test_a_partitioned_new_table_builds_its_indexes_in_expand(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    create_accounts(conn, 500)
    plan = str(PLANS / "partition_accounts.yaml")

    def backfill_steps(plan: str) -> int:
        data = json.loads(cli(dsn, "plan", plan, "--json").stdout)
        return len(next(p for p in data["phases"] if p["kind"] == "backfill")["steps"])

    assert backfill_steps(plan) == 1  # the copy alone
    assert backfill_steps(BIGINT_KEY) == 3  # where the same kind of index waits for the copy
    assert cli(dsn, "apply", plan, "--until", "expand").exit_code == 0
    assert indexes(conn, "accounts_part") == {
        "accounts_part_email_idx": True,
        "accounts_part_pkey": True,
    }
    assert cli(dsn, "rollback", plan).exit_code == 0


def test_an_unnamed_index_is_built_in_expand_under_postgresqls_name(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_accounts(conn, 500)
    text = (
        Path(BIGINT_KEY)
        .read_text()
        .replace(
            "CREATE INDEX accounts_v2_balance_idx",
            "CREATE INDEX ON public.accounts_v2 (status);\n    CREATE INDEX accounts_v2_balance_idx",
        )
    )
    plan = write_plan(tmp_path, text)
    assert cli(dsn, "apply", plan, "--until", "expand").exit_code == 0
    # the unnamed index runs where create has it, and so do the named ones before it;
    # the named one after it waits for the copy
    assert indexes(conn, "accounts_v2") == {
        "accounts_v2_pkey": True,
        "accounts_v2_email_idx": True,
        "accounts_v2_status_idx": True,
    }
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    assert indexes(conn, "accounts_v2") == {
        "accounts_v2_pkey": True,
        "accounts_v2_email_idx": True,
        "accounts_v2_status_idx": True,
        "accounts_v2_balance_idx": True,
    }


def test_a_build_killed_half_way_is_dropped_and_built_again(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    create_accounts(conn, 3_000)
    assert cli(dsn, "apply", BIGINT_KEY, "--until", "dual_write").exit_code == 0
    with psycopg.connect(dsn) as blocker:
        # a writer's open transaction on the new table: CREATE INDEX CONCURRENTLY registers
        # the index (INVALID), then waits for it to end
        blocker.execute("LOCK TABLE accounts_v2 IN ROW EXCLUSIVE MODE")
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "pgshift.cli", "--dsn", dsn, "--log-format", "json"),
                *("apply", BIGINT_KEY, "--until", "backfill"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            building = None
            deadline = time.monotonic() + 60
            while building is None and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
                building = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND query LIKE 'CREATE INDEX CONCURRENTLY accounts_v2_email_idx%'"
                    " AND wait_event_type = 'Lock'"
                ).fetchone()
            assert building is not None, "the index build never started waiting"
            # the crash: pgshift killed, the server's build ended with it
            process.send_signal(signal.SIGKILL)
            process.wait()
            conn.execute("SELECT pg_terminate_backend(%s)", building)
            while conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s", building
            ).fetchone():
                time.sleep(0.05)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        blocker.rollback()
    assert indexes(conn, "accounts_v2") == {
        "accounts_v2_pkey": True,
        "accounts_v2_email_idx": False,  # the interrupted build's leftover
    }

    result = cli(dsn, "apply", BIGINT_KEY)
    assert result.exit_code == 0, result.output
    # through contract: valid, and under the old table's names (phases/index_names.py)
    assert indexes(conn, "accounts") == {
        "accounts_pkey": True,
        "accounts_balance_idx": True,
        "accounts_email_idx": True,
    }
    assert conn.execute(
        "SELECT rows_done, status FROM pgshift.phases WHERE kind = 'backfill'"
    ).fetchone() == (3_000, "done")
