"""dual_write's first step checks every existing row's `up` (or `new_table.columns` mapping),
read only, before any trigger is installed: a plan that fails on some rows stops there, naming
the first failing key and the error, instead of failing the application's writes of those rows.
`migrate plan --check-data` runs the same check on demand."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgshift.cli import main
from tests.integration.helpers import cli, definition, error_line, rows, run_process, write_plan

ROWS = 3_000

COLUMNS_PLAN = """
version: 1
name: data_check
table: public.items
columns:
{columns}
phases: [expand, dual_write, backfill, cutover, contract]
"""

COPY_PLAN = """
version: 1
name: data_check_copy
table: public.items
new_table:
  name: public.items_v2
  create: |
    CREATE TABLE public.items_v2 (id bigint PRIMARY KEY, v integer NOT NULL,
      s text NOT NULL, code integer);
  columns:
{columns}
  reverse:
    v: v
    s: s
phases: [expand, dual_write, backfill, cutover, contract]
"""


@pytest.fixture
def items(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """3,000 rows whose every `up` below holds: each test plants its own failing rows."""
    conn.execute(
        "CREATE TABLE items (id integer PRIMARY KEY, v integer NOT NULL, s text, code text)"
    )
    conn.execute(
        "INSERT INTO items SELECT g, g, 'ab', g::text FROM generate_series(1, %s) g", (ROWS,)
    )
    conn.execute("ANALYZE items")
    # every DDL command from here on, to prove no trigger was ever created
    conn.execute("CREATE TABLE ddl_log (id serial PRIMARY KEY, tag text, object text)")
    conn.execute(
        "CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN"
        " INSERT INTO public.ddl_log (tag, object) SELECT command_tag, object_identity"
        " FROM pg_event_trigger_ddl_commands(); END $$"
    )
    conn.execute("CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION log_ddl()")
    return conn


def columns_plan(tmp_path: Path, columns: str) -> str:
    return write_plan(tmp_path, COLUMNS_PLAN.format(columns=columns))


def copy_plan(tmp_path: Path, columns: str) -> str:
    return write_plan(tmp_path, COPY_PLAN.format(columns=columns))


def triggers(conn: psycopg.Connection[Any]) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'items'::regclass AND NOT tgisinternal"
        )
    ]


def phases(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int]]:
    return conn.execute(
        "SELECT kind, status, steps_done FROM pgshift.phases ORDER BY idx"
    ).fetchall()


def failed_check(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    row = conn.execute(
        "SELECT detail FROM pgshift.events WHERE event = 'data check failed'"
    ).fetchone()
    assert row is not None
    failures: list[dict[str, Any]] = row[0]["failures"]
    return failures


def ddl_log(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """Every DDL command run in the database since the fixture: (tag, object)."""
    return [(r[0], r[1]) for r in conn.execute("SELECT tag, object FROM ddl_log ORDER BY id")]


def items_triggers_created(conn: psycopg.Connection[Any]) -> list[str]:
    return [
        o for tag, o in ddl_log(conn) if tag == "CREATE TRIGGER" and o.endswith(" on public.items")
    ]


def assert_stopped_before_trigger(
    conn: psycopg.Connection[Any], before: tuple[Any, Any], message: str, expected: str
) -> None:
    """apply failed at dual_write's check, no trigger was ever created, and the automatic
    rollback left the table exactly as it was."""
    assert message == f"error: dual_write failed: {expected}; every applied phase was rolled back"
    assert any(tag == "CREATE VIEW" for tag, _ in ddl_log(conn))  # expand ran
    assert items_triggers_created(conn) == []
    assert triggers(conn) == []
    assert (definition(conn, "public.items"), rows(conn, "public.items")) == before
    assert [
        r[0]
        for r in conn.execute(
            "SELECT event FROM pgshift.events WHERE phase = 'dual_write' ORDER BY id"
        )
    ] == ["phase started", "data check failed", "phase failed", "phase rolled back"]


def test_failing_up_stops_apply_before_the_trigger(
    dsn: str, items: psycopg.Connection[Any], tmp_path: Path
) -> None:
    items.execute("UPDATE items SET v = 300000 WHERE id IN (42, 1500, 2999)")
    before = (definition(items, "public.items"), rows(items, "public.items"))
    plan = columns_plan(tmp_path, "  v: {type: integer, up: v * 10000}")

    result = cli(dsn, "apply", plan)

    assert result.exit_code == 1, result.output
    assert_stopped_before_trigger(
        items,
        before,
        error_line(result),
        "up of column v fails for 3 row(s), first (id)=(42): integer out of range (22003);"
        " fix those rows or the plan's up before dual_write installs the trigger",
    )
    assert failed_check(items) == [
        {"key": [key], "column": "v", "message": "integer out of range", "sqlstate": "22003"}
        for key in ("42", "1500", "2999")
    ]
    assert [p[:2] for p in phases(items)] == [
        ("expand", "rolled_back"),
        ("dual_write", "rolled_back"),
        ("backfill", "pending"),
        ("cutover", "pending"),
        ("contract", "pending"),
    ]
    # the application's own write of a failing row still succeeds: no trigger runs `up`
    items.execute("UPDATE items SET v = v + 1 WHERE id = 42")


def test_more_failures_than_reported_name_the_first_five_in_key_order(
    dsn: str, items: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Failures in several batches (the first batch holds 1,000 rows), across batch edges."""
    failing = [7, 999, 1000, 1001, 2500, 2998, 3000]
    items.execute("UPDATE items SET v = 300000 WHERE id = ANY(%s)", (failing,))
    before = (definition(items, "public.items"), rows(items, "public.items"))
    plan = columns_plan(tmp_path, "  v: {type: integer, up: v * 10000}")

    result = cli(dsn, "apply", plan)

    assert result.exit_code == 1, result.output
    assert_stopped_before_trigger(
        items,
        before,
        error_line(result),
        "up of column v fails for at least 5 rows, first (id)=(7): integer out of range"
        " (22003); fix those rows or the plan's up before dual_write installs the trigger",
    )
    assert [f["key"] for f in failed_check(items)] == [[str(k)] for k in failing[:5]]


def test_varchar_typmod_fails_as_an_assignment_does(
    dsn: str, items: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """`up` gives text; the trigger assigns it to varchar(3), which rejects a longer value
    (a cast would cut it) but takes one whose excess is only spaces."""
    items.execute("UPDATE items SET s = 'abcd' WHERE id = 2000")
    items.execute("UPDATE items SET s = 'abc   ' WHERE id = 10")
    before = (definition(items, "public.items"), rows(items, "public.items"))
    plan = columns_plan(tmp_path, "  v: {type: bigint}\n  s: {type: varchar(3), up: s}")

    result = cli(dsn, "apply", plan)

    assert result.exit_code == 1, result.output
    assert_stopped_before_trigger(
        items,
        before,
        error_line(result),
        "up of column s fails for 1 row(s), first (id)=(2000): value too long for type"
        " character varying(3) (22001); fix those rows or the plan's up before dual_write"
        " installs the trigger",
    )


def test_failing_new_table_mapping_stops_apply_before_the_copy_trigger(
    dsn: str, items: psycopg.Connection[Any], tmp_path: Path
) -> None:
    items.execute("UPDATE items SET code = 'x' || id WHERE id IN (5, 6)")
    before = (definition(items, "public.items"), rows(items, "public.items"))
    plan = copy_plan(tmp_path, "    code: code::integer")

    result = cli(dsn, "apply", plan)

    assert result.exit_code == 1, result.output
    assert_stopped_before_trigger(
        items,
        before,
        error_line(result),
        "new_table.columns of column code fails for 2 row(s), first (id)=(5): invalid input"
        ' syntax for type integer: "x5" (22P02); fix those rows or the plan\'s'
        " new_table.columns before dual_write installs the trigger",
    )
    assert items.execute("SELECT to_regclass('public.items_v2')").fetchone() == (None,)
    assert [f["key"] for f in failed_check(items)] == [["5"], ["6"]]


def test_null_into_a_not_null_column_of_the_new_table_fails(
    dsn: str, items: psycopg.Connection[Any], tmp_path: Path
) -> None:
    items.execute("UPDATE items SET s = NULL WHERE id = 1234")
    before = (definition(items, "public.items"), rows(items, "public.items"))
    plan = copy_plan(tmp_path, "    code: code::integer")

    result = cli(dsn, "apply", plan)

    assert result.exit_code == 1, result.output
    assert_stopped_before_trigger(
        items,
        before,
        error_line(result),
        "new_table.columns of column s fails for 1 row(s), first (id)=(1234): null value in"
        ' column "s" of relation "items_v2" violates not-null constraint (23502); fix those'
        " rows or the plan's new_table.columns before dual_write installs the trigger",
    )
    assert failed_check(items) == [
        {
            "key": ["1234"],
            "column": "s",
            "message": 'null value in column "s" of relation "items_v2" violates not-null'
            " constraint",
            "sqlstate": "23502",
        }
    ]


def test_plan_check_data_exit_1_on_failing_rows_and_0_on_good_data(
    dsn: str, items: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = columns_plan(tmp_path, "  v: {type: integer, up: v * 10000 % 7}")
    good = cli(dsn, "plan", plan, "--check-data")
    assert good.exit_code == 0, good.output
    assert good.stdout.splitlines()[-1] == f"data check: up holds for all {ROWS:,} rows"

    plan = columns_plan(tmp_path, "  v: {type: integer, up: v * 10000}")
    items.execute("UPDATE items SET v = 300000 WHERE id IN (3, 4)")
    before = (definition(items, "public.items"), rows(items, "public.items"))
    bad = cli(dsn, "plan", plan, "--check-data")
    assert bad.exit_code == 1, bad.output
    assert error_line(bad) == (
        "error: up of column v fails for 2 row(s), first (id)=(3): integer out of range (22003);"
        " fix those rows or the plan's up before dual_write installs the trigger"
    )
    assert bad.stdout.splitlines()[-3:] == [
        "data check: up fails for these rows:",
        "  column v: (id)=(3): integer out of range (22003)",
        "  column v: (id)=(4): integer out of range (22003)",
    ]
    as_json = cli(dsn, "plan", plan, "--check-data", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["data_check"] == {
        "rows": ROWS,
        "holds": False,
        "failures": [
            {"key": [k], "column": "v", "message": "integer out of range", "sqlstate": "22003"}
            for k in ("3", "4")
        ],
    }
    # read only: no state, no trigger, the table as it was
    assert items.execute("SELECT to_regnamespace('pgshift')").fetchone() == (None,)
    assert triggers(items) == []
    assert (definition(items, "public.items"), rows(items, "public.items")) == before


def test_plan_check_data_needs_a_database_and_a_migration_before_its_trigger(
    dsn: str, items: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = columns_plan(tmp_path, "  v: {type: bigint}")
    result = CliRunner().invoke(
        main,
        ["plan", plan, "--check-data"],
        env={"DATABASE_URL": None, "PGHOST": None, "PGDATABASE": None, "PGSERVICE": None},
    )
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        "error: --check-data reads the table: pass --dsn (or set $DATABASE_URL)"
    )
    assert cli(dsn, "apply", plan, "--until", "dual_write").exit_code == 0
    result = cli(dsn, "plan", plan, "--check-data")
    assert result.exit_code == 2
    assert error_line(result) == (
        "error: migration data_check is past dual_write here, its trigger installed:"
        " --check-data checks rows before that; roll it back to check again"
    )


def test_a_passing_check_then_the_migration_goes_on(
    dsn: str, items: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = columns_plan(tmp_path, "  v: {type: bigint, up: v::bigint * 10000}")
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 0, result.output
    assert items.execute(
        "SELECT count(*), min(v), max(v), pg_typeof(min(v))::text FROM items"
    ).fetchone() == (ROWS, 10_000, ROWS * 10_000, "bigint")
    assert items.execute(
        "SELECT rows_done, status, steps_done FROM pgshift.phases WHERE kind = 'dual_write'"
    ).fetchone() == (ROWS, "done", 2)
    assert items.execute(
        "SELECT detail FROM pgshift.events WHERE event = 'data checked'"
    ).fetchone() == ({"rows": ROWS},)
    # the DDL log sees what the failing tests do not
    assert items_triggers_created(items) == ["zz_pgshift_data_check on public.items"]


def test_a_new_table_check_passes_then_the_copy_goes_on(
    dsn: str, items: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = copy_plan(tmp_path, "    code: code::integer")
    result = cli(dsn, "apply", plan, "--until", "backfill")
    assert result.exit_code == 0, result.output
    assert items.execute(
        "SELECT count(*) FROM items_v2 JOIN items USING (id)"
        " WHERE items_v2.code = items.code::integer AND items_v2.s = items.s"
    ).fetchone() == (ROWS,)


def test_a_check_killed_between_batches_goes_on_from_its_checkpoint(
    dsn: str, items: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = columns_plan(tmp_path, "  v: {type: bigint}")
    crashed = run_process(dsn, "apply", plan, env={"PGSHIFT_FAILPOINT": "dual_write:0:batch:1"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert items.execute(
        "SELECT rows_done, batches, steps_done, checkpoint->'last' FROM pgshift.phases"
        " WHERE kind = 'dual_write'"
    ).fetchone() == (1_000, 1, 0, ["1000"])
    assert triggers(items) == []
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 0, result.output
    # the rows checked before the kill are not checked (nor counted) again
    assert items.execute(
        "SELECT rows_done, status FROM pgshift.phases WHERE kind = 'dual_write'"
    ).fetchone() == (ROWS, "done")
