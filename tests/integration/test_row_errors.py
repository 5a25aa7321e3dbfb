"""A write the plan cannot map never fails the application's statement: the trigger records the
row (key, SQLSTATE, message), the write commits, the migration fails at its next step naming
the row, and on_failure applies; after cutover the same for `down` / `reverse`, and a rollback
that would lose such rows refuses unless forced. The triggers' guarded blocks only compute, so
no write of the application is given a subtransaction ID."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.integration.helpers import cli, definition, error_line, rows, write_plan

# up overflows integer arithmetic for v > 214748; down overflows for v >= 2^31 * 10000
COLUMNS_PLAN = """
version: 1
name: scale_v
table: public.t
columns:
  v:
    type: bigint
    up: {up}
    down: (v / 10000)::integer
settings: {{on_failure: {on_failure}, lock_timeout: 500ms, lock_retries: 60}}
phases: [expand, dual_write, {{backfill: {{batch_size: 100}}}}, cutover, contract]
"""

# the new table's note holds 5 characters: assignment to varchar(5) fails for longer ones;
# its id is bigint, and `reverse` puts it back into the old integer id
TABLE_PLAN = """
version: 1
name: copy_t
table: public.t
new_table:
  name: public.t_v2
  create: |
    CREATE TABLE public.t_v2 (id bigint PRIMARY KEY, v integer, note varchar(5));
  columns:
    note: upper(note)
settings: {{on_failure: {on_failure}, lock_timeout: 500ms, lock_retries: 60}}
phases: [expand, dual_write, {{backfill: {{batch_size: 100}}}}, cutover, contract]
"""

FAILS = 300_000  # a v whose `up` overflows integer


def create_t(conn: psycopg.Connection[Any], rows: int = 1_000) -> None:
    conn.execute("CREATE TABLE t (id serial PRIMARY KEY, v integer, note text)")
    conn.execute(
        "INSERT INTO t (v, note) SELECT g, 'n' || (g %% 100) FROM generate_series(1, %s) g",
        (rows,),
    )
    conn.execute("ANALYZE t")


def one(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def recorded(conn: psycopg.Connection[Any], migration: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT direction, key, sqlstate, message FROM pgshift.row_errors"
        " WHERE migration = %s ORDER BY at, key",
        (migration,),
    ).fetchall()


@pytest.fixture
def app_role(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A role that may write the table and nothing else: no rights on pgshift's schema."""
    name = f"app_{uuid.uuid4().hex[:10]}"
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def grant_writes(conn: psycopg.Connection[Any], role: str, *tables: str) -> None:
    for table in tables:
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                sql.Identifier(table), sql.Identifier(role)
            )
        )
    conn.execute(sql.SQL("GRANT USAGE ON SEQUENCE t_id_seq TO {}").format(sql.Identifier(role)))


class Writer:
    """The application: on its own connection (as `role`), inserts and updates in a loop,
    every `every`-th value one the plan cannot map; counts what it wrote and what failed."""

    def __init__(self, dsn: str, role: str | None, bad: str, good: str, every: int = 3) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.prepare_threshold = None
        if role is not None:
            self.conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        self.bad, self.good, self.every = bad, good, every
        self.inserted: list[int] = []
        self.failed: list[str] = []
        self.writes = 0
        self.unmappable = 0  # writes of a value the plan cannot map (inserts and updates)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.conn.close()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            value = self.bad if n % self.every == 0 else self.good
            try:
                if n % 2:
                    row = self.conn.execute(
                        sql.SQL("INSERT INTO t (v, note) VALUES ({}) RETURNING id").format(
                            sql.SQL(value)
                        ),
                        {"n": n},
                    ).fetchone()
                    assert row is not None
                    self.inserted.append(row[0])
                else:
                    self.conn.execute(
                        sql.SQL("UPDATE t SET (v, note) = ROW({}) WHERE id = %(id)s").format(
                            sql.SQL(value)
                        ),
                        {"n": n, "id": 501 + n % 500},  # rows the tests do not look at
                    )
                self.writes += 1
                self.unmappable += value == self.bad
            except psycopg.Error as error:
                self.failed.append(f"{type(error).__name__}: {error}")
            self._stop.wait(0.002)


# ------------------------------------------------------------------------ columns, before cutover


def test_columns_failing_up_is_recorded_and_on_failure_rollback_restores_the_table(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, app_role: str
) -> None:
    create_t(conn)
    grant_writes(conn, app_role, "t")
    plan = write_plan(tmp_path, COLUMNS_PLAN.format(up="v * 10000", on_failure="rollback"))
    before = definition(conn, "public.t")
    assert cli(dsn, "apply", plan, "--until", "dual_write").exit_code == 0

    # the application, as a role with no rights on pgshift's schema, writes rows `up` fails on
    app = psycopg.connect(dsn, autocommit=True)
    app.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(app_role)))
    bad_id = one(app, "INSERT INTO t (v) VALUES (%s) RETURNING id", FAILS)
    app.execute("UPDATE t SET v = %s WHERE id = 7", (FAILS + 1,))  # a backfilled row, too
    app.close()
    assert conn.execute(
        "SELECT v, _pgshift_v FROM t WHERE id = ANY(%s) ORDER BY id", ([7, bad_id],)
    ).fetchall() == [(FAILS + 1, None), (FAILS, None)]
    assert recorded(conn, "scale_v") == [
        ("up", f"(id)=({bad_id})", "22003", "integer out of range"),
        ("up", "(id)=(7)", "22003", "integer out of range"),
    ]
    assert cli(dsn, "status", "scale_v", "--json").output.count('"row_errors": 2') == 1

    # the migration fails at its next step, naming them, while the application keeps writing
    with Writer(dsn, app_role, bad=f"{FAILS} + %(n)s, 'w'", good="mod(%(n)s, 1000), 'w'") as writer:
        result = cli(dsn, "apply", plan)
    assert writer.failed == [] and writer.unmappable > 0
    assert result.exit_code == 1
    line = error_line(result)
    # the writer's rows may come first: every row that still fails is named in the same way
    assert re.fullmatch(
        r"error: backfill failed: \d+ row\(s\) written since dual_write could not be mapped"
        r" through up, first \(id\)=\(\d+\): integer out of range \(22003\); fix the plan's"
        r" up \(apply --force\) or those rows; every applied phase was rolled back",
        line,
    ), line

    # on_failure: rollback: the table as it was, every row the application wrote still there
    assert definition(conn, "public.t") == before
    assert conn.execute(
        "SELECT v FROM t WHERE id = ANY(%s) ORDER BY id", ([7, bad_id],)
    ).fetchall() == [
        (FAILS + 1,),
        (FAILS,),
    ]
    count = conn.execute("SELECT count(*) FROM t WHERE id = ANY(%s)", (writer.inserted,)).fetchone()
    assert count == (len(writer.inserted),)
    assert recorded(conn, "scale_v") == []  # cleared with the shape they described
    assert json.loads(cli(dsn, "status", "scale_v", "--json").output)["row_errors"] == 0


def test_columns_on_failure_pause_keeps_state_then_fixed_rows_and_plan_finish(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_t(conn)
    plan = write_plan(tmp_path, COLUMNS_PLAN.format(up="v * 10000", on_failure="pause"))
    assert cli(dsn, "apply", plan, "--until", "dual_write").exit_code == 0
    conn.execute("UPDATE t SET v = %s WHERE id IN (3, 4)", (FAILS,))
    result = cli(dsn, "apply", plan, "--report", str(tmp_path / "report.json"))
    assert result.exit_code == 1
    line = error_line(result)
    assert "backfill failed: 2 row(s) written since dual_write" in line
    assert "(id)=(3): integer out of range (22003)" in line
    assert "state kept (on_failure: pause)" in line
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["row_errors"] == 2 and report["status"] == "failed"
    status = cli(dsn, "status", "scale_v")
    assert "rows the triggers could not map: 2" in status.output
    assert cli(dsn, "apply", plan).exit_code == 1  # still failing rows: still failing

    # the application fixes one row; the plan is fixed for the other (apply --force: the
    # trigger takes the changed `up` too): the next apply maps both again and goes on
    conn.execute("UPDATE t SET v = 3 WHERE id = 3")
    fixed = write_plan(
        tmp_path, COLUMNS_PLAN.format(up="v::bigint * 10000", on_failure="pause"), "fixed.yaml"
    )
    result = cli(dsn, "apply", fixed, "--force", "--until", "backfill")
    assert result.exit_code == 0, result.output
    assert recorded(conn, "scale_v") == []
    conn.execute("INSERT INTO t (id, v) VALUES (5000, %s)", (FAILS,))  # maps now
    assert conn.execute(
        "SELECT count(*) FROM t WHERE _pgshift_v IS DISTINCT FROM v::bigint * 10000"
    ).fetchone() == (0,)
    assert cli(dsn, "apply", fixed).exit_code == 0
    assert conn.execute("SELECT v FROM t WHERE id IN (3, 4, 5000) ORDER BY id").fetchall() == [
        (30_000,),
        (FAILS * 10_000,),
        (FAILS * 10_000,),
    ]


# ------------------------------------------------------------------------ columns, after cutover


def test_columns_failing_down_after_cutover_refuses_rollback_unless_forced(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_t(conn)
    plan = write_plan(tmp_path, COLUMNS_PLAN.format(up="v * 10000", on_failure="pause"))
    before = definition(conn, "public.t")
    assert cli(dsn, "apply", plan, "--until", "cutover").exit_code == 0
    big = 2**31 * 10_000  # `down` overflows integer
    conn.execute("UPDATE t SET v = %s WHERE id = 5", (big,))
    new_id = one(conn, "INSERT INTO t (v) VALUES (%s) RETURNING id", big + 1)
    # the old column keeps its value on UPDATE, is NULL on INSERT
    assert conn.execute(
        "SELECT id, v, v_pgshift_old FROM t WHERE id IN (5, %s) ORDER BY id", (new_id,)
    ).fetchall() == [(5, big, 5), (new_id, big + 1, None)]
    assert [r[:3] for r in recorded(conn, "scale_v")] == [
        ("down", "(id)=(5)", "22003"),
        ("down", f"(id)=({new_id})", "22003"),
    ]

    # the next step fails, naming them (on_failure: pause)
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 1
    assert error_line(result) == (
        "error: contract (the point of no return) not started: 2 row(s) written since cutover"
        " could not be mapped through down, first (id)=(5): integer out of range (22003); fix"
        " the plan's down (apply --force) or those rows"
    )
    assert conn.execute(
        "SELECT status FROM pgshift.phases WHERE migration = 'scale_v' AND kind = 'contract'"
    ).fetchone() == ("pending",)

    result = cli(dsn, "rollback", plan)
    assert result.exit_code == 1
    assert error_line(result) == (
        "error: rollback would lose 2 row(s) written since cutover that could not be mapped"
        " through down, first (id)=(5): integer out of range (22003); fix those rows (a write"
        " that maps them puts them back), or pass --force to roll back without them"
    )
    assert conn.execute("SELECT count(*) FROM t WHERE v_pgshift_old IS NULL").fetchone() == (1,)

    # one row fixed by the application: rollback maps it again, still refuses for the other
    conn.execute("UPDATE t SET v = 50000 WHERE id = 5")
    result = cli(dsn, "rollback", plan)
    assert result.exit_code == 1
    assert (
        f"lose 1 row(s) written since cutover that could not be mapped through down, first (id)=({new_id})"
        in error_line(result)
    )

    result = cli(dsn, "rollback", plan, "--force")
    assert result.exit_code == 0, result.output
    assert definition(conn, "public.t") == before
    assert conn.execute(
        "SELECT v FROM t WHERE id IN (5, %s) ORDER BY id", (new_id,)
    ).fetchall() == [
        (5,),
        (None,),  # what the forced rollback lost
    ]
    assert recorded(conn, "scale_v") == []


# ------------------------------------------------------------------------ new_table


def test_new_table_failing_mapping_writes_nothing_and_rolls_back(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, app_role: str
) -> None:
    create_t(conn)
    grant_writes(conn, app_role, "t")
    plan = write_plan(tmp_path, TABLE_PLAN.format(on_failure="rollback"))
    before, before_rows = definition(conn, "public.t"), rows(conn, "public.t")
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0

    app = psycopg.connect(dsn, autocommit=True)
    app.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(app_role)))
    bad_id = one(app, "INSERT INTO t (v, note) VALUES (1, 'far too long') RETURNING id")
    app.execute("UPDATE t SET v = 77, note = 'too long' WHERE id = 10")  # copy keeps old values
    app.execute("UPDATE t SET note = 'fine' WHERE id = 11")
    app.execute("UPDATE t SET id = 5000 WHERE id = 12")  # a key change that maps
    app.execute("DELETE FROM t WHERE id = 13")  # its copy goes
    app.close()
    assert conn.execute("SELECT count(*) FROM t_v2 WHERE id = %s", (bad_id,)).fetchone() == (0,)
    assert conn.execute(
        "SELECT id, v, note FROM t_v2 WHERE id IN (10, 11, 12, 13, 5000) ORDER BY id"
    ).fetchall() == [
        (10, 10, "N10"),
        (11, 11, "FINE"),
        (5000, 12, "N12"),
    ]
    assert recorded(conn, "copy_t") == [
        ("up", f"(id)=({bad_id})", "22001", "value too long for type character varying(5)"),
        ("up", "(id)=(10)", "22001", "value too long for type character varying(5)"),
    ]

    with Writer(dsn, app_role, bad="%(n)s, 'much too long'", good="%(n)s, 'ok'") as writer:
        result = cli(dsn, "apply", plan)
    assert writer.failed == [] and writer.unmappable > 0
    assert result.exit_code == 1
    assert re.fullmatch(
        r"error: cutover failed: \d+ row\(s\) written since dual_write could not be mapped"
        r" through new_table.columns, first \(id\)=\(\d+\): value too long for type character"
        r" varying\(5\) \(22001\); fix the plan's new_table.columns \(apply --force\) or those"
        r" rows; every applied phase was rolled back",
        error_line(result),
    ), result.output
    assert definition(conn, "public.t") == before
    assert conn.execute("SELECT to_regclass('t_v2')").fetchone() == (None,)
    after = rows(conn, "public.t")
    assert len(after) == len(before_rows) + len(writer.inserted)  # bad_id in, 13 out
    assert conn.execute("SELECT v, note FROM t WHERE id = 10").fetchone() == (77, "too long")
    assert recorded(conn, "copy_t") == []


def test_new_table_failing_reverse_after_cutover_refuses_rollback_unless_forced(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_t(conn)
    plan = write_plan(tmp_path, TABLE_PLAN.format(on_failure="pause"))
    assert cli(dsn, "apply", plan, "--until", "cutover").exit_code == 0
    # the live table is t_v2 now: an id beyond integer cannot be copied back into the old table
    conn.execute("INSERT INTO t (id, v, note) VALUES (3000000000, 1, 'big')")
    conn.execute("UPDATE t SET id = 3000000001, v = 0 WHERE id = 20")  # nothing written back
    conn.execute("INSERT INTO t (id, v, note) VALUES (2001, 2, 'ok')")
    assert conn.execute(
        "SELECT id, v FROM t_pgshift_old WHERE id IN (20, 2001) ORDER BY id"
    ).fetchall() == [(20, 20), (2001, 2)]
    assert recorded(conn, "copy_t") == [
        ("down", "(id)=(3000000000)", "22003", "integer out of range"),
        ("down", "(id)=(3000000001)", "22003", "integer out of range"),
    ]
    result = cli(dsn, "rollback", plan)
    assert result.exit_code == 1
    assert error_line(result).startswith(
        "error: rollback would lose 2 row(s) written since cutover that could not be mapped"
        " through new_table.reverse, first (id)=(3000000000): integer out of range (22003)"
    )
    assert conn.execute("SELECT to_regclass('t_pgshift_old') IS NOT NULL").fetchone() == (True,)
    result = cli(dsn, "rollback", plan, "--force")
    assert result.exit_code == 0, result.output
    # what the forced rollback lost: both rows that could not be copied back
    assert conn.execute(
        "SELECT id, v FROM t WHERE id IN (20, 2001) OR id > 2000000000 ORDER BY id"
    ).fetchall() == [(20, 20), (2001, 2)]
    assert recorded(conn, "copy_t") == []


# ------------------------------------------------------------------------ no subtransaction IDs


def subtransaction_cache(conn: psycopg.Connection[Any]) -> Any:
    """(subxact_count, overflowed) of this backend on PostgreSQL 16+, else None."""
    if conn.info.server_version < 160000:
        return None
    return conn.execute(
        "SELECT s.subxact_count, s.subxact_overflowed FROM pg_stat_get_backend_idset() b(id),"
        " pg_stat_get_backend_subxact(b.id) s"
        " WHERE pg_stat_get_backend_pid(b.id) = pg_backend_pid()"
    ).fetchone()


@pytest.mark.parametrize("target", ["columns", "new_table"])
def test_guarded_trigger_gives_no_subtransaction_an_id(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, target: str
) -> None:
    create_t(conn, rows=10)
    if target == "columns":
        text, name = COLUMNS_PLAN.format(up="v * 10000", on_failure="pause"), "scale_v"
        bad, good = "(%s + 300000, 'x')", "(%s, 'x')"
        copies = "pgshift.row_errors"
    else:
        text, name = TABLE_PLAN.format(on_failure="pause"), "copy_t"
        bad, good = "(%s, 'too long')", "(%s, 'x')"
        copies = "pgshift.row_errors UNION SELECT xmin::text FROM t_v2"
    assert cli(dsn, "apply", write_plan(tmp_path, text), "--until", "dual_write").exit_code == 0
    with psycopg.connect(dsn) as app:  # one transaction
        top = one(app, "SELECT mod(txid_current(), 4294967296)::text")
        for n in range(100):
            app.execute(f"INSERT INTO t (v, note) VALUES {bad}", (n,))
            app.execute(f"INSERT INTO t (v, note) VALUES {good}", (n,))
            app.execute("UPDATE t SET v = v WHERE id = %s", (1 + n % 10,))
        # every row the trigger wrote (the copies, the records) and every row of the
        # application carries the top transaction's ID: nothing was written in a block, so
        # no block was given an ID of its own (PostgreSQL assigns one at a first write only)
        written = f"SELECT xmin::text FROM t UNION SELECT xmin::text FROM {copies}"
        assert app.execute(written).fetchall() == [(top,)]
        assert subtransaction_cache(app) in (None, (0, False))
        app.commit()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (210,)
    assert conn.execute(
        "SELECT count(*) FROM pgshift.row_errors WHERE migration = %s", (name,)
    ).fetchone() == (100,)
    if target == "new_table":
        assert conn.execute("SELECT count(*) FROM t_v2").fetchone() == (110,)


def test_backfill_stops_between_batches(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A write `up` fails on, made while the backfill runs (here by the throttle query, between
    the third batch and the fourth, as a writer would), stops it before the next batch."""
    create_t(conn)
    text = COLUMNS_PLAN.format(up="v * 10000", on_failure="pause").replace(
        "settings: {",
        'settings: {throttle_query: "WITH w AS (UPDATE t SET v = 300000 WHERE id = 950 AND'
        " (SELECT batches >= 3 FROM pgshift.phases WHERE migration = 'scale_v'"
        " AND kind = 'backfill') RETURNING 1) SELECT false\", ",
    )
    plan = write_plan(tmp_path, text)
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 1
    assert (
        "backfill failed: 1 row(s) written since dual_write could not be mapped through up,"
        " first (id)=(950): integer out of range (22003)" in error_line(result)
    )
    assert conn.execute(
        "SELECT status, batches, rows_done FROM pgshift.phases"
        " WHERE migration = 'scale_v' AND kind = 'backfill'"
    ).fetchone() == ("failed", 3, 300)
