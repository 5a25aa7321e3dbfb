"""The table copy's delete fence (phases/delete_fence.py), at the exact moments of the race.

A test-only trigger on the new table holds the one batch in the middle of its INSERT (its
snapshot taken, half its rows copied, uncommitted) while other sessions delete rows, change
keys and insert; then the batch goes on. The copy's batches lock no live row, so none of
these writes waits for the batch, and none may leave a row the live table no longer has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from pgshift.engine.state import COPY_FENCE_CLASS
from tests.integration.helpers import cli, write_plan

ROWS = 3_000
HELD_AT = 1_500  # the batch's INSERT waits at this key
GATE = 774_411  # the advisory lock the test holds to keep the batch waiting

PLAN = """\
version: 1
name: fence
table: public.t
new_table:
  name: public.t2
  create: |
    CREATE TABLE public.t2 (id bigint PRIMARY KEY, v bigint);
settings:
  lock_timeout: {lock_timeout}
phases: [expand, dual_write, {{backfill: {{batch_size: 10000}}}}, verify]
"""


def _plan(tmp_path: Path, lock_timeout: str = "5s") -> str:
    return write_plan(tmp_path, PLAN.format(lock_timeout=lock_timeout))


def _table(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, v int)")
    conn.execute(f"INSERT INTO t SELECT g, g FROM generate_series(1, {ROWS}) g")


def _hold_the_batch_at_one_key(conn: psycopg.Connection[Any]) -> None:
    """The new table's insert of HELD_AT waits for GATE (held by the test)."""
    conn.execute(
        f"""
        CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_advisory_lock({GATE});
          PERFORM pg_advisory_unlock({GATE});
          RETURN NEW;
        END $$;
        CREATE TRIGGER gate BEFORE INSERT ON t2 FOR EACH ROW
          WHEN (NEW.id = {HELD_AT}) EXECUTE FUNCTION gate();
        """
    )


def _held_copy(dsn: str, conn: psycopg.Connection[Any], tmp_path: Path) -> str:
    """The table, its migration up to dual_write, and the gate that holds the backfill's
    batch at HELD_AT (taken by `conn`); the plan's path."""
    _table(conn)
    plan = _plan(tmp_path)
    assert cli(dsn, "apply", plan, "--until", "dual_write").exit_code == 0
    _hold_the_batch_at_one_key(conn)
    conn.execute("SELECT pg_advisory_lock(%s)", (GATE,))
    return plan


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _waiting_advisory(conn: psycopg.Connection[Any], objid: int) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s",
        (objid,),
    ).fetchone()
    return bool(row and row[0])


@contextmanager
def _apply_in_background(
    dsn: str, plan: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "pgshift.cli", "--dsn", dsn, "--log-format", "json"),
            *("apply", plan, "--until", "backfill"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _writer(dsn: str) -> psycopg.Connection[Any]:
    """An application session that would fail rather than wait for the batch."""
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET statement_timeout = '5s'")
    return conn


def _same_rows(conn: psycopg.Connection[Any]) -> None:
    live = conn.execute("SELECT id, v FROM t ORDER BY id").fetchall()
    copy = conn.execute("SELECT id, v FROM t2 ORDER BY id").fetchall()
    assert len(copy) == len(live)
    assert copy == live


def _fence_waiting(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = %s",
        (COPY_FENCE_CLASS,),
    ).fetchone()
    return bool(row and row[0])


def _swept(err: str) -> list[int]:
    """The rows each delete fence of a run swept (the runs that swept any)."""
    lines = [json.loads(line) for line in err.splitlines() if "swept deleted rows" in line]
    return [line["rows"] for line in lines]


def test_rows_deleted_while_a_batch_copies_them_leave_no_ghost(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = _held_copy(dsn, conn, tmp_path)
    with _apply_in_background(dsn, plan) as process, _writer(dsn) as app, _writer(dsn) as late:
        _wait_for(lambda: _waiting_advisory(conn, GATE))
        # committed while the batch holds its copies uncommitted: one it has copied, one it
        # is about to copy, a key change, and a new row; none waits for the batch
        app.execute("DELETE FROM t WHERE id = 100")
        app.execute(f"DELETE FROM t WHERE id = {HELD_AT + 1_000}")
        app.execute(f"UPDATE t SET id = {ROWS + 500} WHERE id = {HELD_AT + 1_100}")
        app.execute(f"INSERT INTO t VALUES ({ROWS + 600}, 7)")
        # and one still running when the batch commits
        late.execute("BEGIN")
        late.execute(f"DELETE FROM t WHERE id = {HELD_AT + 1_200}")
        conn.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
        # the batch commits, every row of its snapshot copied; its fence waits for the delete
        _wait_for(lambda: _fence_waiting(conn))
        assert conn.execute("SELECT count(*) FROM t2").fetchone() == (ROWS + 2,)
        assert process.poll() is None
        late.execute("COMMIT")
        _out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    # the fence swept the four rows the batch's snapshot held and the live table no longer has
    assert _swept(err) == [4]
    _same_rows(conn)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (ROWS - 2,)


def test_a_writer_waiting_on_the_batch_while_it_deletes_is_not_deadlocked(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A transaction deletes a row (taking the fence's shared lock), then inserts a key the
    held batch has copied but not committed, so it waits for the batch. The batch commits
    without waiting for the fence; the writer goes on, and the fence waits for it."""
    plan = _held_copy(dsn, conn, tmp_path)
    errors: list[BaseException] = []
    with _apply_in_background(dsn, plan) as process, _writer(dsn) as app, _writer(dsn) as tx:
        _wait_for(lambda: _waiting_advisory(conn, GATE))
        app.execute("DELETE FROM t WHERE id = 100")  # its copy is the batch's, uncommitted
        tx.execute("BEGIN")
        tx.execute("DELETE FROM t WHERE id = 2900")

        def insert_the_deleted_key() -> None:
            try:
                tx.execute("INSERT INTO t VALUES (100, -1)")  # waits for the batch's copy
                tx.execute("COMMIT")
            except BaseException as error:
                errors.append(error)

        writer = threading.Thread(target=insert_the_deleted_key)
        writer.start()
        _wait_for(
            lambda: bool(
                conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'INSERT INTO t VALUES (100%%'"
                ).fetchone()
                == (1,)
            )
        )
        conn.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
        writer.join(timeout=60)
        assert not writer.is_alive()
        _out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    assert errors == []
    assert _swept(err) == [1]  # 2900; 100 is the writer's row again
    assert "lock not granted" not in err
    _same_rows(conn)
    assert conn.execute("SELECT v FROM t2 WHERE id = 100").fetchone() == (-1,)


def test_a_key_inserted_again_while_the_sweep_runs_keeps_its_copy(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A row deleted during the batch is inserted again by a transaction still open when the
    sweep comes: the sweep waits for that writer's copy and, once it has committed, sees the
    live row again and keeps the copy."""
    plan = _held_copy(dsn, conn, tmp_path)
    with (
        _apply_in_background(dsn, plan) as process,
        _writer(dsn) as app,
        _writer(dsn) as late,
        _writer(dsn) as again,
    ):
        _wait_for(lambda: _waiting_advisory(conn, GATE))
        app.execute("DELETE FROM t WHERE id = 100")
        late.execute("BEGIN")
        late.execute("DELETE FROM t WHERE id = 2700")
        conn.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
        _wait_for(lambda: _fence_waiting(conn))  # the batch committed its copy of 100
        again.execute("BEGIN")
        again.execute("INSERT INTO t VALUES (100, -5)")  # its trigger updates that copy
        late.execute("COMMIT")
        # the sweep finds 100 without a live row (the insert is not committed) and waits
        _wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'SELECT \"pgshift_copy\".tableoid%%'"
                ).fetchone()
                == (1,)
            )
        )
        again.execute("COMMIT")
        _out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    assert _swept(err) == [1]  # 2700 only
    _same_rows(conn)
    assert conn.execute("SELECT v FROM t2 WHERE id = 100").fetchone() == (-5,)


def test_a_crash_between_a_batch_and_its_fence_is_swept_on_resume(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = _held_copy(dsn, conn, tmp_path)
    env = {"PGSHIFT_FAILPOINT": "backfill:batch:1"}  # killed once its first batch committed
    with _apply_in_background(dsn, plan, env) as process, _writer(dsn) as app:
        _wait_for(lambda: _waiting_advisory(conn, GATE))
        app.execute("DELETE FROM t WHERE id = 100")
        app.execute(f"DELETE FROM t WHERE id = {HELD_AT + 1_000}")
        conn.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
        process.communicate(timeout=60)
        assert process.returncode == -9
    # the batch committed its copies of both deleted rows, and no fence ran
    assert conn.execute("SELECT count(*) FROM t2 WHERE id IN (100, 2500)").fetchone() == (2,)
    with _apply_in_background(dsn, plan) as again:
        _out, err = again.communicate(timeout=60)
        assert again.returncode == 0, err
    assert _swept(err) == [2]
    _same_rows(conn)


def test_a_copy_trigger_without_the_fence_makes_the_batches_lock_their_rows(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A migration begun by a pgshift without the fence keeps its copy trigger: the backfill
    then reads the rows it copies FOR KEY SHARE, so a delete of a row it holds waits for it."""
    _table(conn)
    plan = _plan(tmp_path)
    assert cli(dsn, "apply", plan, "--until", "dual_write").exit_code == 0
    # the copy trigger as that pgshift installed it: no call to the fence
    function = conn.execute(
        "SELECT p.oid::regprocedure::text, p.prosrc FROM pg_proc p"
        " WHERE p.proname = 'copy_fence' AND p.prorettype = 'trigger'::regtype"
    ).fetchone()
    assert function is not None and "copy_delete_fence" in function[1]
    older = "\n".join(line for line in function[1].splitlines() if "copy_delete_fence" not in line)
    conn.execute(
        psycopg.sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}"
        ).format(psycopg.sql.SQL(function[0].removesuffix("()")), psycopg.sql.Literal(older))
    )
    _hold_the_batch_at_one_key(conn)
    conn.execute("SELECT pg_advisory_lock(%s)", (GATE,))
    with _apply_in_background(dsn, plan) as process, _writer(dsn) as app:
        _wait_for(lambda: _waiting_advisory(conn, GATE))
        app.execute("SET statement_timeout = '300ms'")
        # the batch holds row 100 FOR KEY SHARE: its delete waits, here until the timeout
        try:
            app.execute("DELETE FROM t WHERE id = 100")
            raise AssertionError("the delete did not wait for the batch")
        except psycopg.errors.QueryCanceled:
            pass
        conn.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
        _out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert "predates the delete fence" in err
    _same_rows(conn)


def _copy_step(dsn: str, plan: str) -> dict[str, Any]:
    result = cli(dsn, "plan", plan, "--json")
    assert result.exit_code == 0, result.output
    phases = json.loads(result.stdout)["phases"]
    step: dict[str, Any] = next(p for p in phases if p["kind"] == "backfill")["steps"][0]
    return step


def test_copies_the_fence_cannot_serve_lock_their_rows(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The fenced copy reads without row locks; a computed new key (the sweep could not find
    the live row) and versions mode (the new version deletes through the copy-back trigger)
    read FOR KEY SHARE, and their copy trigger does not call the fence."""
    _table(conn)
    fenced = _copy_step(dsn, _plan(tmp_path))
    assert fenced["lock"] == "ACCESS SHARE"
    assert "FOR KEY SHARE" not in fenced["sql"][2] and "copy_batch_fence" in fenced["sql"][4]
    computed = PLAN.format(lock_timeout="1s").replace(
        "    CREATE TABLE public.t2 (id bigint PRIMARY KEY, v bigint);\n",
        "    CREATE TABLE public.t2 (id bigint PRIMARY KEY, v bigint);\n  columns:\n"
        "    id: id + 1000000\n  reverse:\n    id: id - 1000000\n",
    )
    versions = PLAN.format(lock_timeout="1s").replace(
        "table: public.t\n", "table: public.t\napplication: {mode: versions}\n"
    )
    for text in (computed, versions):
        plan = write_plan(tmp_path, text, "other.yaml")
        step = _copy_step(dsn, plan)
        assert step["lock"] == "ROW SHARE"
        assert "FOR KEY SHARE" in step["sql"][2] and len(step["sql"]) == 3
        assert cli(dsn, "apply", plan, "--until", "dual_write").exit_code == 0
        body = conn.execute(
            "SELECT prosrc FROM pg_proc WHERE proname = 'copy_fence'"
            " AND prorettype = 'trigger'::regtype"
        ).fetchone()
        assert body is not None and "copy_delete_fence" not in body[0]
        assert cli(dsn, "rollback", plan).exit_code == 0
