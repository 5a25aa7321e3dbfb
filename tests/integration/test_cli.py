"""Exit codes, one-line errors with file:line for plans the database refuses, plan changes,
the migration lock, pause/resume from another shell, and on_failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import conninfo_to_dict

from pgshift.cli import main
from pgshift.demo.seed import create_accounts
from tests.integration.helpers import PLANS, cli, definition, error_line, rows, write_plan

BASE = """version: 1
name: cli_test
table: {table}
{key}columns:
  {column}:
{spec}
phases: [expand, dual_write, backfill, cutover, contract]
"""


def plan_text(
    *,
    table: str = "public.accounts",
    key: str = "",
    column: str = "balance",
    spec: str = "    type: bigint",
) -> str:
    return BASE.format(table=table, key=key, column=column, spec=spec)


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    create_accounts(conn, 500)
    return conn


BAD_AGAINST_DATABASE = [
    ("missing table", {"table": "public.nope"}, 3, "does not exist"),
    ("missing key column", {"key": "key: [nope]\n"}, 4, "not a column"),
    ("key not unique", {"key": "key: [email]\n"}, 4, "unique and NOT NULL"),
    ("bad up syntax", {"spec": "    type: bigint\n    up: balance +"}, 7, "not a SQL expression"),
    ("up names no column", {"spec": "    type: bigint\n    up: nope::bigint"}, 7, "does not work"),
    (
        "two statements in up",
        {"spec": "    type: bigint\n    up: 1; DROP TABLE accounts"},
        7,
        "expression",
    ),
    ("unknown type", {"spec": "    type: bigintt"}, 6, "type"),
    ("type with injection", {"spec": "    type: bigint; DROP TABLE accounts"}, 6, "not a type"),
    ("bad down", {"spec": "    type: bigint\n    down: nope"}, 7, "down"),
    ("new column without up", {"column": "score", "spec": "    type: int"}, 5, "give it `up`"),
    ("new column without type", {"column": "score", "spec": "    up: '1'"}, 5, "give it a `type`"),
]


@pytest.mark.parametrize(("case", "parts", "line", "fragment"), BAD_AGAINST_DATABASE)
def test_plans_the_database_refuses_exit_2_with_file_line(
    dsn: str,
    accounts: psycopg.Connection[Any],
    tmp_path: Path,
    case: str,
    parts: dict[str, str],
    line: int,
    fragment: str,
) -> None:
    path = write_plan(tmp_path, plan_text(**parts))
    for command in ("plan", "apply"):
        result = cli(dsn, command, path)
        assert result.exit_code == 2, (case, result.output)
        message = error_line(result)
        assert f"{path}:{line}:" in message, (case, message)
        assert fragment in message, (case, message)
        assert "Traceback" not in result.output


def test_materialized_view_on_changed_column_is_refused(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    accounts.execute("CREATE MATERIALIZED VIEW rich AS SELECT id, balance FROM accounts")
    result = cli(dsn, "plan", write_plan(tmp_path, plan_text()))
    assert result.exit_code == 2
    assert "materialized view public.rich reads column(s) balance" in result.stderr


def test_identity_column_is_refused(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    conn.execute("CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int)")
    result = cli(dsn, "plan", write_plan(tmp_path, plan_text(table="t", column="id")))
    assert result.exit_code == 2
    assert "identity column" in result.stderr


def test_plan_without_database_validates_only(tmp_path: Path) -> None:
    path = write_plan(tmp_path, plan_text())
    result = subprocess.run(
        [sys.executable, "-m", "pgshift.cli", "plan", path],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout


def test_plan_json_lists_every_phase_with_sql_and_locks(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    result = cli(dsn, "plan", write_plan(tmp_path, plan_text()), "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [p["kind"] for p in data["phases"]] == [
        "expand",
        "dual_write",
        "backfill",
        "cutover",
        "contract",
    ]
    swap = data["phases"][3]["steps"][-1]
    assert swap["lock"] == "ACCESS EXCLUSIVE" and swap["blocks_reads"]
    assert any("RENAME COLUMN" in s for s in swap["sql"])
    assert data["phases"][4]["reversible"] is False
    assert data["rows_estimate"] == 500


def test_plan_shows_steps_one_line_each_and_the_sql_with_sql_flag(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_plan(tmp_path, plan_text())
    short = cli(dsn, "plan", path)
    full = cli(dsn, "plan", path, "--sql")
    assert short.exit_code == 0 and full.exit_code == 0, short.output + full.output
    data = json.loads(cli(dsn, "plan", path, "--json").stdout)
    # the default: no SQL at all, the internal catalog queries included
    assert "CREATE OR REPLACE FUNCTION" not in short.stdout and "DO '" not in short.stdout
    assert "RENAME COLUMN" not in short.stdout and "add --sql" in short.stdout
    assert "CREATE OR REPLACE FUNCTION" in full.stdout and "RENAME COLUMN" in full.stdout
    for phase in data["phases"]:
        for step in phase["steps"] + phase["rollback"]:
            line = f"- {step['description']}  ("
            assert line in short.stdout and line in full.stdout, line
            for statement in step["sql"]:
                assert statement.splitlines()[0] in full.stdout, statement
    assert len(short.stdout.splitlines()) < len(full.stdout.splitlines()) // 5


def test_changed_plan_is_refused_unless_forced(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_plan(tmp_path, plan_text())
    assert cli(dsn, "apply", path, "--until", "dual_write").exit_code == 0
    write_plan(tmp_path, plan_text(spec="    type: bigint\n    up: balance::bigint + 0"))
    result = cli(dsn, "apply", path)
    assert result.exit_code == 2
    assert "changed since this migration started" in result.stderr
    assert cli(dsn, "apply", path, "--force").exit_code == 0


def test_on_failure_rollback_restores_the_table(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    before, before_rows = definition(accounts), rows(accounts)
    # every 50th row gets NULL, which the NOT NULL check of cutover refuses
    spec = "    type: bigint\n    up: nullif(balance::bigint * (id % 50), 0)\n    nullable: false"
    result = cli(dsn, "apply", write_plan(tmp_path, plan_text(spec=spec)))
    assert result.exit_code == 1
    message = error_line(result)
    assert "cutover failed" in message and "rolled back" in message
    assert definition(accounts) == before
    assert rows(accounts) == before_rows
    status = json.loads(cli(dsn, "status", "cli_test", "--json").stdout)
    assert status["status"] == "rolled_back" and "violated" in status["last_error"]


def test_on_failure_pause_keeps_state(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    before = definition(accounts)
    spec = "    type: bigint\n    up: nullif(balance::bigint * (id % 50), 0)\n    nullable: false"
    text = plan_text(spec=spec).replace("phases:", "settings: {on_failure: pause}\nphases:")
    path = write_plan(tmp_path, text)
    result = cli(dsn, "apply", path)
    assert result.exit_code == 1
    assert "state kept" in result.stderr
    status = json.loads(cli(dsn, "status", path, "--json").stdout)
    assert status["status"] == "failed"
    assert [p["status"] for p in status["phases"]] == ["done", "done", "done", "failed", "pending"]
    assert cli(dsn, "rollback", path).exit_code == 0
    assert definition(accounts) == before


def test_lock_pause_and_resume_from_another_shell(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    text = plan_text().replace("backfill,", "{backfill: {batch_size: 10, batch_pause: 50ms}},")
    path = write_plan(tmp_path, text)
    process = subprocess.Popen(
        [sys.executable, "-m", "pgshift.cli", "--dsn", dsn, "--log-format", "json", "apply", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: _backfill_rows(accounts) > 0)
        second = cli(dsn, "apply", path)
        assert second.exit_code == 1
        assert "is being run by pgshift apply cli_test" in second.stderr
        # another migration of the same table, under another name, waits its turn too
        other = write_plan(
            tmp_path,
            plan_text(column="status", spec="    type: varchar(40)").replace("cli_test", "other"),
            "o.yaml",
        )
        third = cli(dsn, "apply", other)
        assert third.exit_code == 1
        assert "table public.accounts is being migrated by pgshift apply cli_test" in third.stderr

        assert cli(dsn, "pause", "cli_test").exit_code == 0
        _wait_for(lambda: _status(dsn)["waiting_for"] is not None)
        status = _status(dsn)
        assert "paused" in status["waiting_for"]
        # a paused run has no ETA; its process is alive and named
        assert status["alive"] is True and status["runner"]["pid"] > 0
        assert all(p["eta_seconds"] is None for p in status["phases"])
        held = _backfill_rows(accounts)
        time.sleep(0.6)
        assert _backfill_rows(accounts) == held  # no batch runs while paused

        assert cli(dsn, "resume", "cli_test").exit_code == 0
        _out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-2000:]
    finally:
        process.kill()
    assert _status(dsn)["status"] == "done"
    events = [r[0] for r in accounts.execute("SELECT event FROM pgshift.events ORDER BY id")]
    assert "paused" in events and "resumed" in events


def test_a_second_migration_of_a_table_waits_for_the_first_to_finish(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    first = write_plan(tmp_path, plan_text())
    second = write_plan(
        tmp_path,
        plan_text(column="status", spec="    type: varchar(40)").replace("cli_test", "other"),
        "o.yaml",
    )
    assert cli(dsn, "apply", first, "--until", "dual_write").exit_code == 0
    result = cli(dsn, "apply", second)
    assert result.exit_code == 1
    assert (
        "migration cli_test of public.accounts is unfinished (paused): apply it to the end or"
        " roll it back before starting other"
    ) in error_line(result)
    assert accounts.execute(
        "SELECT count(*) FROM pgshift.phases WHERE migration = 'other' AND status <> 'pending'"
    ).fetchone() == (0,)
    assert cli(dsn, "rollback", first).exit_code == 0
    assert cli(dsn, "apply", second, "--until", "expand").exit_code == 0  # its turn now


def _status(dsn: str) -> dict[str, Any]:
    return json.loads(cli(dsn, "status", "cli_test", "--json").stdout)  # type: ignore[no-any-return]


def _backfill_rows(conn: psycopg.Connection[Any]) -> int:
    row = (
        conn.execute(
            "SELECT rows_done FROM pgshift.phases WHERE migration = 'cli_test' AND kind = 'backfill'"
        ).fetchone()
        if conn.execute("SELECT to_regclass('pgshift.phases')").fetchone() != (None,)
        else None
    )
    return int(row[0]) if row else 0


def _wait_for(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_status_without_migrations_and_unknown_name(
    dsn: str, accounts: psycopg.Connection[Any]
) -> None:
    result = cli(dsn, "status")
    assert result.exit_code == 0 and "no migrations" in result.stdout
    result = cli(dsn, "pause", "nothing_here")
    assert result.exit_code == 2 and "no migration named nothing_here" in result.stderr


def test_unreachable_database_is_one_line_without_password(tmp_path: Path) -> None:
    path = write_plan(tmp_path, plan_text())
    result = cli("postgresql://someone:s3cret@127.0.0.1:1/none?connect_timeout=2", "apply", path)
    assert result.exit_code == 1
    assert "cannot reach the database" in error_line(result)
    assert "s3cret" not in result.output


def test_plan_shows_preflight_with_long_transactions(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_plan(
        tmp_path, plan_text().replace("phases:", "settings: {lock_timeout: 100ms}\nphases:")
    )
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM accounts LIMIT 1")  # a transaction left open
        pid = holder.info.backend_pid
        time.sleep(0.3)
        result = cli(dsn, "plan", path)
        data = json.loads(cli(dsn, "plan", path, "--json").stdout)
    assert result.exit_code == 0
    assert (
        f"pid {pid} open for" in result.stdout and "would block the cutover lock" in result.stdout
    )
    assert [t["pid"] for t in data["preflight"]["long_transactions"]] == [pid]
    assert data["preflight"]["rows_estimate"] == 500


def test_throttle_query_holds_the_backfill(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """throttle_query returning true makes the backfill wait, and says why in status."""
    accounts.execute("CREATE TABLE brake (on_ boolean NOT NULL)")
    accounts.execute("INSERT INTO brake VALUES (false)")
    text = plan_text().replace(
        "phases:", "settings: {throttle_query: 'SELECT on_ FROM brake'}\nphases:"
    )
    path = write_plan(tmp_path, text)
    # dual_write's data check waits on the throttle too: the brake goes on after it
    assert cli(dsn, "apply", path, "--until", "dual_write").exit_code == 0
    accounts.execute("UPDATE brake SET on_ = true")
    process = subprocess.Popen(
        [sys.executable, "-m", "pgshift.cli", "--dsn", dsn, "--log-format", "json", "apply", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: _status(dsn)["waiting_for"] is not None)
        assert _status(dsn)["waiting_for"] == "throttle_query returned true"
        assert _backfill_rows(accounts) == 0
        accounts.execute("UPDATE brake SET on_ = false")
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err[-2000:]
    finally:
        process.kill()
    assert _status(dsn)["status"] == "done"


def test_failed_validate_takes_its_check_back_so_writes_go_on(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """on_failure: pause keeps the state, but not a NOT VALID check that rejects writes."""
    spec = "    type: bigint\n    up: nullif(balance::bigint * (id % 50), 0)\n    nullable: false"
    text = plan_text(spec=spec).replace("phases:", "settings: {on_failure: pause}\nphases:")
    path = write_plan(tmp_path, text)
    assert cli(dsn, "apply", path).exit_code == 1
    assert not [
        c for c in definition(accounts)["constraints"] if "pgshift_nn" in c[0]
    ]  # the check is gone
    # a write whose new value is NULL (id a multiple of 50) still goes through
    accounts.execute("INSERT INTO accounts (id, balance, email) VALUES (100050, 5, 'x@y.z')")
    status = json.loads(cli(dsn, "status", path, "--json").stdout)
    cutover = status["phases"][3]
    assert cutover["status"] == "failed"
    # fix the data, and apply starts cutover over: the check is added and validated again
    accounts.execute("UPDATE accounts SET balance = 1 WHERE id % 50 = 0")
    accounts.execute(
        "SET pgshift.backfill = 'on'; UPDATE accounts SET _pgshift_balance = balance"
        " WHERE _pgshift_balance IS NULL; RESET pgshift.backfill"
    )
    result = cli(dsn, "apply", path)
    assert result.exit_code == 0, result.output


def test_plan_warns_about_the_tables_own_triggers(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    accounts.execute(
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS"
        " 'BEGIN NEW.updated_at = now(); RETURN NEW; END'"
    )
    accounts.execute(
        "CREATE TRIGGER touch BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch()"
    )
    in_place = json.loads(cli(dsn, "plan", write_plan(tmp_path, plan_text()), "--json").stdout)
    assert any("backfill's UPDATEs fire them" in w for w in in_place["warnings"])
    copy = json.loads(cli(dsn, "plan", str(PLANS / "accounts_bigint_key.yaml"), "--json").stdout)
    assert any("cutover moves them to the new table" in w for w in copy["warnings"])


def test_pause_refuses_a_rolled_back_or_done_migration(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_plan(tmp_path, plan_text())
    assert cli(dsn, "apply", path, "--until", "expand").exit_code == 0
    assert cli(dsn, "rollback", path).exit_code == 0
    result = cli(dsn, "pause", "cli_test")
    assert result.exit_code == 2
    assert error_line(result) == (
        "error: migration cli_test was rolled back: nothing runs that a pause would stop"
    )
    assert json.loads(cli(dsn, "status", "cli_test", "--json").stdout)["paused"] is False

    assert cli(dsn, "apply", path).exit_code == 0
    result = cli(dsn, "pause", path)
    assert result.exit_code == 2 and "cli_test is done" in error_line(result)
    assert cli(dsn, "resume", "cli_test").exit_code == 0  # clearing the flag is harmless


@pytest.mark.parametrize(
    ("up", "line", "column"),
    [
        (
            "|\n        CREATE INDEX CONCURRENTLY accounts_x ON accounts (email);\n"
            "        ALTER TABLE accounts ADD COLUMN foo int DEFALT 1;\n",
            14,
            49,
        ),
        ("ALTER TABLE accounts ADD COLUMN foo int DEFALT 1", 12, 51),
        ('"ALTER TABLE accounts ADD COLUMN foo int DEFALT 1"', 12, 52),
    ],
)
def test_sql_phase_syntax_error_points_at_the_sql(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path, up: str, line: int, column: int
) -> None:
    text = plan_text().replace(
        "phases: [expand, dual_write, backfill, cutover, contract]",
        "phases:\n  - expand\n  - sql:\n      name: extra\n      irreversible: true\n"
        f"      up: {up}",
    )
    path = write_plan(tmp_path, text)
    assert text.splitlines()[line - 1][column - 1 :].startswith("DEFALT")
    result = cli(dsn, "apply", path)
    assert result.exit_code == 2
    assert error_line(result) == (
        f'error: {path}:{line}:{column}: SQL does not parse: syntax error at or near "DEFALT"'
    )


def test_without_dsn_a_missing_table_names_the_database(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    params = conninfo_to_dict(dsn)
    env = {
        "DATABASE_URL": None,
        "PGHOST": str(params.get("host", "")),
        "PGPORT": str(params.get("port", "5432")),
        "PGUSER": str(params.get("user", "")),
        "PGDATABASE": str(params["dbname"]),
    }
    path = write_plan(tmp_path, plan_text(table="public.nope"))
    result = CliRunner(env=env).invoke(main, ["--log-format", "json", "apply", path])
    assert result.exit_code == 2
    line = error_line(result)
    assert f"does not exist in database '{params['dbname']}' as '{params.get('user')}'" in line
    assert line.endswith("check `table`, and --dsn or $DATABASE_URL")


def test_a_lock_left_by_a_killed_run_of_this_machine_is_waited_for(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """After kill -9, the server session holding the migration's lock lives on until the
    server notices the closed connection: `apply` right away waits for it instead of saying
    the migration is being run. A holder whose process lives is refused at once."""
    import socket
    import threading

    from pgshift.engine.locks import advisory_key
    from pgshift.engine.state import LOCK_CLASS

    path = write_plan(tmp_path, plan_text())
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no process has now
    for pid, refused in ((gone.pid, False), (os.getpid(), True)):
        holder = psycopg.connect(
            dsn,
            autocommit=True,
            application_name=f"pgshift apply cli_test pid {pid}@{socket.gethostname()}"[:63],
        )
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, advisory_key("cli_test")))
        closer = threading.Timer(1.0, holder.close)
        closer.start()
        try:
            result = cli(dsn, "apply", path, "--until", "expand")
        finally:
            closer.join()
        if refused:
            assert result.exit_code == 1
            assert f"is being run by pgshift apply cli_test pid {pid}@" in error_line(result)
        else:
            assert result.exit_code == 0, result.output


def test_until_a_phase_the_plan_lacks_suggests_the_one_meant(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_plan(tmp_path, plan_text())
    result = cli(dsn, "apply", path, "--until", "backfil")
    assert result.exit_code == 2
    line = error_line(result)
    assert "no phase named 'backfil' in plan cli_test; did you mean 'backfill'?" in line
    assert accounts.execute("SELECT to_regclass('pgshift.migrations')").fetchone() == (None,)
    result = cli(dsn, "rollback", path, "--to", "expnd")
    assert result.exit_code == 2
    assert "did you mean 'expand'?" in error_line(result)
