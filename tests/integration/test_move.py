"""The `move` target end to end, between two real servers (the machine's PostgreSQL 15 and the
embedded 18: a major-version upgrade): under pgbench load, through contract, with a rollback
after cutover, kills at steps, a dropped connection mid-copy, DDL during the move, and the
pre-flight refusals. After any failure or rollback no replication slot is left on either
server."""

from __future__ import annotations

import json
import shlex
import signal
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import Result

from tests.integration.helpers import cli, error_line, run_process, stop_line, write_plan
from tests.integration.move_load import PGBENCH_SCRIPT, SwitchingLoad, create_transfers
from tests.integration.servers import (
    DatabasePair,
    move_databases,
    move_servers,
    pgbench_init,
    start_pgbench_load,
    wait_for,
)

__all__ = ["move_databases", "move_servers"]  # fixtures, used by name

TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "transfers")
PLAN = """
version: 1
name: move_bank
move:
  tables: [public.pgbench_accounts, public.pgbench_branches, public.pgbench_tellers,
           public.pgbench_history, public.transfers]
  hooks:
    after_fence: {hook}
phases: [expand, dual_write, backfill, verify, {{gate: {{name: before_cutover, approval: false}}}},
         cutover, contract]
"""


def migrate(db: DatabasePair, *args: str) -> Result:
    return cli(db.source_dsn, "--destination-dsn", db.destination_dsn, *args)


def bank(db: DatabasePair, scale: int = 1) -> None:
    """pgbench's tables with their foreign keys (built after the copy on the destination),
    pgbench_history keyed by REPLICA IDENTITY FULL, and `transfers` (a bigserial key)."""
    pgbench_init(db.servers.source_bindir, db.source_dsn, scale=scale, steps="dtgvpf")
    with psycopg.connect(db.source_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        create_transfers(conn)


def balances(dsn: str) -> tuple[int, int, int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts),"
            " (SELECT sum(tbalance) FROM pgbench_tellers),"
            " (SELECT sum(bbalance) FROM pgbench_branches),"
            " (SELECT coalesce(sum(delta), 0) FROM pgbench_history)"
        ).fetchone()
    assert row is not None
    return tuple(int(v) for v in row)  # type: ignore[return-value]


def digests(dsn: str, tables: tuple[str, ...] = TABLES) -> dict[str, tuple[int, str]]:
    """Each table's row count and a hash of its rows in a fixed order."""
    out = {}
    with psycopg.connect(dsn) as conn:
        for table in tables:
            row = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                f" FROM {table} t"
            ).fetchone()
            assert row is not None
            out[table] = (int(row[0]), str(row[1]))
    return out


def leftovers(db: DatabasePair) -> dict[str, list[Any]]:
    """Replication slots, subscriptions and publications of the test's databases."""
    found: dict[str, list[Any]] = {}
    for side, dsn in (("source", db.source_dsn), ("destination", db.destination_dsn)):
        with psycopg.connect(dsn) as conn:
            found[side] = [
                *conn.execute(
                    "SELECT 'slot ' || slot_name FROM pg_replication_slots"
                    " WHERE database = current_database()"
                ).fetchall(),
                *conn.execute(
                    "SELECT 'subscription ' || subname FROM pg_subscription s JOIN pg_database d"
                    " ON d.oid = s.subdbid WHERE d.datname = current_database()"
                ).fetchall(),
                *conn.execute("SELECT 'publication ' || pubname FROM pg_publication").fetchall(),
            ]
    return found


NOTHING_LEFT: dict[str, list[Any]] = {"source": [], "destination": []}


def status(db: DatabasePair, name: str = "move_bank") -> dict[str, Any]:
    result = migrate(db, "status", name, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def hook_writing(target: Path) -> str:
    """The after_fence hook: writes where the application's writes go now (the load reads it)."""
    return shlex.quote(f'printf %s "$PGSHIFT_WRITES_GO_TO" > {shlex.quote(str(target))}')


def test_move_under_load_through_contract_with_a_rollback_after_cutover(
    move_databases: DatabasePair, tmp_path: Path
) -> None:
    db = move_databases
    bank(db)
    target = tmp_path / "writes_go_to"
    target.write_text("source")
    plan = write_plan(tmp_path, PLAN.format(hook=hook_writing(target)))

    # plan: both servers, the pre-flight checks, the subscription's connection shown without
    # its password (trust ignores the one given here)
    secret = f"{db.source_dsn} password=s3cret-pass"
    shown = cli(secret, "--destination-dsn", db.destination_dsn, "plan", plan)
    assert shown.exit_code == 0, shown.output
    assert "s3cret-pass" not in shown.output and "password=***" in shown.stdout
    assert "[REFUSED]" not in shown.stdout and "[ok] schema on the destination" in shown.stdout

    # the copy, the indexes and foreign keys after it, streaming and verify, under pgbench
    with start_pgbench_load(
        db.servers.source_bindir, db.source_dsn, clients=4, seconds=6, script=PGBENCH_SCRIPT
    ) as pgbench:
        result = migrate(db, "apply", plan, "--until", "before_cutover")
        assert result.exit_code == 0, result.output
        mid = status(db)
        load = pgbench.result()
    assert load.transactions > 0 and load.failed == 0 and load.aborted_clients == 0, load.output
    assert mid["move"]["replicating"] == "source to destination"
    assert mid["move"]["copy"] == {"tables_ready": 5, "tables": 5}
    backfill = next(p for p in mid["phases"] if p["kind"] == "backfill")
    assert backfill["rows"] >= 100_000 and backfill["rows_total"] >= 100_000
    verified = mid["verify"]
    assert verified["differences"] == {"missing": 0, "extra": 0, "changed": 0}
    assert verified["not_compared"] == ["public.pgbench_history (no primary key)"]
    with psycopg.connect(db.destination_dsn) as conn:  # built after the copy
        assert conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        ).fetchone() == (6,)

    dsns = {"source": db.source_dsn, "destination": db.destination_dsn}
    with SwitchingLoad(dsns, target, clients=4) as app:
        app.wait_commits("source", 50)
        # cutover under load: the hook flips the application to the destination
        result = migrate(db, "apply", plan, "--until", "cutover")
        assert result.exit_code == 0, result.output
        assert target.read_text() == "destination"
        app.wait_commits("destination", 200)
        after = status(db)
        assert after["move"]["replicating"] == "destination to source"
        assert after["move"]["write_blocked_seconds"] is not None
        with (
            psycopg.connect(db.source_dsn) as conn,
            pytest.raises(
                psycopg.errors.ReadOnlySqlTransaction, match="pgshift migration move_bank"
            ),
        ):
            conn.execute("UPDATE pgbench_branches SET bbalance = bbalance + 1")

        # rollback of cutover under load: every write made on the destination comes back
        result = migrate(db, "rollback", plan, "--to", "before_cutover")
        assert result.exit_code == 0, result.output
        assert target.read_text() == "source"
        app.wait_commits("source", 200)
        assert status(db)["move"]["replicating"] == "source to destination"
        app.pause()  # both servers equal once the destination has caught up: the writes
        wait_for(  # made on the destination are on the source
            lambda: digests(db.source_dsn) == digests(db.destination_dsn), 30, what="catch-up"
        )
        app.resume()

        # and forward again, then contract
        result = migrate(db, "apply", plan)
        assert result.exit_code == 0, result.output
        assert target.read_text() == "destination"
        app.wait_commits("destination", 200)
    stats = app.stats
    assert stats.errors == [], stats.errors[:5]  # no duplicate key: sequences went past
    assert stats.fenced > 0  # the fences did refuse writes, which were retried

    totals = balances(db.destination_dsn)
    assert totals[0] == totals[1] == totals[2] == totals[3], totals
    assert leftovers(db) == NOTHING_LEFT
    final = status(db)
    assert final["status"] == "done" and final["move"]["replicating"] is None
    with psycopg.connect(db.destination_dsn, autocommit=True) as conn:
        # the destination is open, and its sequence continues past every key written
        row = conn.execute(
            "INSERT INTO transfers (aid, amount) VALUES (1, 0) RETURNING id,"
            " (SELECT max(id) FROM transfers)"
        ).fetchone()
        assert row is not None and row[0] > row[1]
    with (
        psycopg.connect(db.source_dsn) as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        conn.execute("DELETE FROM transfers")  # the source stays fenced after contract


SMALL_PLAN = """
version: 1
name: move_small
move:
  schemas: [shop]
phases: [expand, dual_write, backfill, verify, cutover, contract]
"""


def shop(dsn: str) -> None:
    """A small schema: a serial key, an identity column, a foreign key and an index."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS shop CASCADE")
        conn.execute("CREATE SCHEMA shop")
        conn.execute(
            "CREATE TABLE shop.customers (id serial PRIMARY KEY, name text NOT NULL UNIQUE)"
        )
        conn.execute(
            "CREATE TABLE shop.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " customer_id int NOT NULL REFERENCES shop.customers, total numeric(12,2),"
            " note text DEFAULT 'none')"
        )
        conn.execute("CREATE INDEX orders_customer_idx ON shop.orders (customer_id)")
        conn.execute(
            "INSERT INTO shop.customers (name) SELECT 'c' || g FROM generate_series(1, 500) g"
        )
        conn.execute(
            "INSERT INTO shop.orders (customer_id, total)"
            " SELECT 1 + g % 500, g / 7.0 FROM generate_series(1, 3000) g"
        )


def reset(db: DatabasePair) -> None:
    """Both databases as before any move: no replication, no state, the source's data anew."""
    from tests.integration.servers import drop_subscriptions

    for dsn in (db.destination_dsn, db.source_dsn):
        drop_subscriptions(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for (slot,) in conn.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
            ).fetchall():
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            for (pub,) in conn.execute("SELECT pubname FROM pg_publication").fetchall():
                conn.execute(f'DROP PUBLICATION "{pub}"')
            conn.execute("DROP SCHEMA IF EXISTS shop CASCADE")
            conn.execute("DROP SCHEMA IF EXISTS pgshift CASCADE")
    shop(db.source_dsn)


def labels(db: DatabasePair, plan: str) -> list[str]:
    """A failpoint label at every step (one of the builds after the copy): inside a source
    step's transaction, and between a destination (or two-server) step's work and its record on
    the source."""
    data = json.loads(migrate(db, "plan", plan, "--json").stdout)
    out = []
    for phase in data["phases"]:
        built = 0
        for number, step in enumerate(phase["steps"]):
            if phase["kind"] == "backfill" and step["step"] == "SqlStep":
                built += 1
                if built > 1:  # the builds after the copy are all alike: the first stands for all
                    continue
            transaction = step["server"] == "source" and step["step"] in ("SqlStep", "Fence")
            where = "in-transaction" if transaction else "before-record"
            out.append(f"{phase['name']}:{number}:{where}")
    return out


def test_killed_at_every_step_then_apply_finishes_and_rollback_leaves_no_slot(
    move_databases: DatabasePair, tmp_path: Path
) -> None:
    db = move_databases
    plan = write_plan(tmp_path, SMALL_PLAN)
    reset(db)
    expected = digests(db.source_dsn, ("shop.customers", "shop.orders"))
    every = labels(db, plan)
    assert "dual_write:1:before-record" in every and "cutover:4:before-record" in every
    for number, label in enumerate(every):
        reset(db)
        crashed = run_process(
            db.source_dsn,
            "--destination-dsn",
            db.destination_dsn,
            "apply",
            plan,
            env={"PGSHIFT_FAILPOINT": label},
        )
        assert crashed.returncode == -signal.SIGKILL, (label, crashed.stderr[-2000:])
        if number % 4 == 3:  # now and then a rollback instead: it ends with no slot either
            result = migrate(db, "rollback", plan)
            if label.startswith("contract"):
                assert result.exit_code == 1 and "point of no return" in error_line(result)
                result = migrate(db, "apply", plan)
            else:
                assert result.exit_code == 0, (label, result.output[-3000:])
                assert leftovers(db) == NOTHING_LEFT, label
                continue
        result = migrate(db, "apply", plan)
        assert result.exit_code == 0, (label, result.output[-3000:])
        assert digests(db.destination_dsn, ("shop.customers", "shop.orders")) == expected, label
        assert leftovers(db) == NOTHING_LEFT, label
        with psycopg.connect(db.destination_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO shop.customers (name) VALUES ('new')")  # the sequence
            conn.execute("INSERT INTO shop.orders (customer_id) VALUES (1)")  # went past


def test_dropped_connections_mid_copy_resume(move_databases: DatabasePair, tmp_path: Path) -> None:
    """The walsender copying a table is ended on the source, and the apply worker on the
    destination: the subscription's workers start again (wal_retrieve_retry_interval) and the
    copy of that table starts over; apply waits it out and every row arrives once."""
    import subprocess
    import sys

    db = move_databases
    pgbench_init(db.servers.source_bindir, db.source_dsn, scale=5, steps="dtgp")
    plan = write_plan(
        tmp_path,
        SMALL_PLAN.replace("schemas: [shop]", "tables: [pgbench_accounts, pgbench_branches]"),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgshift.cli",
            "--dsn",
            db.source_dsn,
            "--destination-dsn",
            db.destination_dsn,
            "--log-format",
            "json",
            "apply",
            plan,
            "--until",
            "backfill",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ended: list[str] = []
    try:
        with (
            psycopg.connect(db.source_dsn, autocommit=True) as src,
            psycopg.connect(db.destination_dsn, autocommit=True) as dst,
        ):

            def copying() -> bool:
                row = dst.execute(
                    "SELECT tuples_processed FROM pg_stat_progress_copy"
                    " WHERE relid = to_regclass('pgbench_accounts')"
                ).fetchone()
                return row is not None and row[0] > 0

            wait_for(copying, 60, interval=0.005, what="the copy of pgbench_accounts")
            for (pid,) in src.execute(
                "SELECT pid FROM pg_stat_replication WHERE application_name LIKE "
                "'pg\\_%\\_sync\\_%'"
            ).fetchall():
                src.execute("SELECT pg_terminate_backend(%s)", (pid,))
                ended.append("a walsender copying a table")
            for (pid,) in dst.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'logical replication%'"
                " AND backend_type <> 'logical replication launcher'"
                " AND datname = current_database()"
            ).fetchall():
                dst.execute("SELECT pg_terminate_backend(%s)", (pid,))
                ended.append("a logical replication worker")
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert "a walsender copying a table" in ended, ended
    assert process.returncode == 0, output[-3000:]
    tables = ("pgbench_accounts", "pgbench_branches")
    assert digests(db.source_dsn, tables) == digests(db.destination_dsn, tables)
    assert digests(db.destination_dsn, tables)["pgbench_accounts"][0] == 500_000
    result = migrate(db, "rollback", plan)
    assert result.exit_code == 0, result.output
    assert leftovers(db) == NOTHING_LEFT


def test_ddl_on_the_source_during_the_move_stops_it_and_leaves_no_slot(
    move_databases: DatabasePair, tmp_path: Path
) -> None:
    db = move_databases
    shop(db.source_dsn)
    plan = write_plan(tmp_path, SMALL_PLAN)
    assert migrate(db, "apply", plan, "--until", "dual_write").exit_code == 0
    with psycopg.connect(db.source_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE shop.orders ADD COLUMN coupon text")
    result = migrate(db, "apply", plan)
    assert result.exit_code == 1
    line = error_line(result)
    assert "DDL on the source during the move: shop.orders changed its columns" in line, line
    assert "every applied phase was rolled back" in line, line
    assert leftovers(db) == NOTHING_LEFT
    with psycopg.connect(db.destination_dsn) as conn:
        assert conn.execute("SELECT to_regclass('shop.orders')").fetchone() == (None,)


def test_preflight_names_every_table_that_cannot_move(
    move_databases: DatabasePair, tmp_path: Path
) -> None:
    db = move_databases
    shop(db.source_dsn)
    with psycopg.connect(db.source_dsn, autocommit=True) as conn:
        conn.execute("CREATE UNLOGGED TABLE shop.cache (k text PRIMARY KEY, v text)")
        conn.execute("CREATE TABLE shop.log (at timestamptz, line text)")
        conn.execute("CREATE ROLE move_reader")
        conn.execute("GRANT SELECT ON shop.customers TO move_reader")
    with psycopg.connect(db.destination_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA shop")
        conn.execute("CREATE TABLE shop.customers (id int)")
    plan = write_plan(tmp_path, SMALL_PLAN)
    shown = migrate(db, "plan", plan)
    assert shown.exit_code == 1
    text = shown.stdout
    assert "[REFUSED] table shop.cache: shop.cache is unlogged" in text
    assert "ALTER TABLE shop.log REPLICA IDENTITY FULL" in text
    assert "role(s) move_reader (owners or grantees of the moved tables)" in text
    assert "shop.customers already exist(s) on the destination" in text
    assert "pre-flight: " in error_line(shown)
    alone = cli(db.source_dsn, "plan", plan)  # without the destination: the source's checks
    assert alone.exit_code == 1 and "[REFUSED] table shop.cache" in alone.stdout
    assert "(not given: pass --destination-dsn)" in alone.stdout
    assert "role(s) move_reader" not in alone.stdout
    result = migrate(db, "apply", plan)
    assert result.exit_code == 1 and "pre-flight: " in error_line(result)
    assert leftovers(db) == NOTHING_LEFT
    with psycopg.connect(db.destination_dsn) as conn:
        assert conn.execute("SELECT to_regclass('shop.orders')").fetchone() == (None,)
    with psycopg.connect(db.source_dsn, autocommit=True) as conn:
        conn.execute("DROP OWNED BY move_reader")
        conn.execute("DROP ROLE move_reader")


def test_verify_names_differing_keys_and_the_phase_fails_with_no_slot_left(
    move_databases: DatabasePair, tmp_path: Path
) -> None:
    db = move_databases
    shop(db.source_dsn)
    plan = write_plan(tmp_path, SMALL_PLAN)
    assert migrate(db, "apply", plan, "--until", "backfill").exit_code == 0
    with psycopg.connect(db.destination_dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # past the fence, as a bug would
        conn.execute("UPDATE shop.orders SET total = -1 WHERE id = 7")
        conn.execute("DELETE FROM shop.customers WHERE id = 3")
    result = migrate(db, "verify", plan, "--json")
    assert result.exit_code == 4, result.output
    found = json.loads(result.stdout)
    assert found["differences"] == {"missing": 1, "extra": 0, "changed": 1}
    keys = sorted((e["key"], e["kind"]) for e in found["examples"])
    assert keys == [(["shop.customers", 3], "missing"), (["shop.orders", 7], "changed")]
    result = migrate(db, "apply", plan)
    assert result.exit_code == 4
    assert "verify found 2 difference(s)" in error_line(result)
    assert leftovers(db) == NOTHING_LEFT


def test_a_row_in_flight_is_compared_again_at_one_point(
    move_databases: DatabasePair, tmp_path: Path
) -> None:
    """The destination falls behind (its subscription stopped) after a row changed on the
    source: the comparison sees the row differ, then locks it on the source and waits for the
    destination to catch up past the lock, and finds it equal."""
    db = move_databases
    shop(db.source_dsn)
    plan = write_plan(tmp_path, SMALL_PLAN)
    assert migrate(db, "apply", plan, "--until", "backfill").exit_code == 0
    with (
        psycopg.connect(db.source_dsn, autocommit=True) as src,
        psycopg.connect(db.destination_dsn, autocommit=True) as dst,
    ):
        dst.execute("ALTER SUBSCRIPTION pgshift_move_small DISABLE")
        src.execute("UPDATE shop.orders SET total = 99 WHERE id = 7")
        outcome: list[Result] = []
        verify = threading.Thread(target=lambda: outcome.append(migrate(db, "verify", plan)))
        verify.start()

        def locked() -> bool:
            row = src.execute(
                "SELECT EXISTS (SELECT FROM pg_locks WHERE relation = 'shop.orders'::regclass"
                " AND mode = 'RowShareLock' AND granted)"
            ).fetchone()
            return bool(row and row[0])

        wait_for(locked, 60, interval=0.01, what="verify to lock the row on the source")
        dst.execute("ALTER SUBSCRIPTION pgshift_move_small ENABLE")
        verify.join(timeout=120)
        events = src.execute(
            "SELECT detail FROM pgshift.events WHERE event = 'verified' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert outcome and outcome[0].exit_code == 0, outcome[0].output if outcome else "no result"
    assert events is not None
    assert events[0]["tables"]["shop.orders"] == {
        "rows_compared": 3000,
        "differences": 0,
        "rechecked_equal": 1,
    }


def test_bundled_plan_with_its_gates_runbook_and_a_full_rollback(
    move_databases: DatabasePair, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgshift.demo.seed import create_accounts
    from tests.integration.helpers import PLANS, create_orders

    db = move_databases
    with psycopg.connect(db.source_dsn, autocommit=True) as conn:
        create_accounts(conn, 2000)
        create_orders(conn)
    plan = str(PLANS / "move_accounts.yaml")

    book = migrate(db, "runbook", plan)
    assert book.exit_code == 0, book.output
    text = book.stdout
    for number, phase in enumerate(
        ["expand", "dual_write", "backfill", "verify", "before_cutover", "cutover",
         "before_contract", "contract"], start=1,
    ):  # fmt: skip
        assert f"## Phase {number} of 8: {phase}" in text
    assert "## Phase 8 of 8: contract — POINT OF NO RETURN" in text
    assert "- **Runs on:** the destination" in text and "| **REFUSED** |" not in text
    assert "CREATE SUBSCRIPTION" in text and "migrate rollback" in text

    # how the destination reaches the source, when not as pgshift does
    monkeypatch.setenv("PGSHIFT_MOVE_SOURCE_CONNINFO", f"{db.source_dsn} application_name=by_env")
    result = migrate(db, "apply", plan)
    assert result.exit_code == 3 and "gate before_cutover waits" in stop_line(result)
    with psycopg.connect(db.destination_dsn) as conn:
        row = conn.execute("SELECT subconninfo FROM pg_subscription").fetchone()
        assert row is not None and "application_name=by_env" in row[0]
    result = migrate(db, "apply", plan, "--approve", "before_cutover")
    assert result.exit_code == 3 and "gate before_contract waits" in stop_line(result)
    with psycopg.connect(db.destination_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (account_id, amount) VALUES (1, 42)")

    result = migrate(db, "rollback", plan)  # every phase, cutover first
    assert result.exit_code == 0, result.output
    assert leftovers(db) == NOTHING_LEFT
    with psycopg.connect(db.source_dsn) as conn:  # the write made on the destination came back
        assert conn.execute("SELECT count(*) FROM orders WHERE amount = 42").fetchone() == (1,)
    with psycopg.connect(db.destination_dsn) as conn:
        assert conn.execute("SELECT to_regclass('public.accounts')").fetchone() == (None,)

    result = migrate(
        db, "apply", plan, "--approve", "before_cutover", "--approve", "before_contract"
    )
    assert result.exit_code == 0, result.output
    assert leftovers(db) == NOTHING_LEFT
    tables = ("accounts", "orders")
    assert digests(db.source_dsn, tables) == digests(db.destination_dsn, tables)


def test_rollback_when_the_destination_cannot_reach_the_source_still_drops_the_slot(
    move_databases: DatabasePair, tmp_path: Path
) -> None:
    """DROP SUBSCRIPTION cannot drop the slot on a source it cannot reach: the subscription is
    detached from its slot and dropped, and pgshift drops the slot on the source itself."""
    db = move_databases
    shop(db.source_dsn)
    plan = write_plan(tmp_path, SMALL_PLAN)
    assert migrate(db, "apply", plan, "--until", "backfill").exit_code == 0
    with psycopg.connect(db.destination_dsn, autocommit=True) as conn:
        conn.execute(
            "ALTER SUBSCRIPTION pgshift_move_small CONNECTION"
            " 'host=127.0.0.1 port=1 dbname=nowhere user=postgres connect_timeout=2'"
        )
    result = migrate(db, "rollback", plan)
    assert result.exit_code == 0, result.output
    assert "detaching the subscription from its slot" in result.stderr
    assert leftovers(db) == NOTHING_LEFT


def test_database_true_names_every_table_but_pgshifts_own(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """`database: true` moves every table of every schema; pgshift's state and version schemas
    stay behind. Only `plan`'s list is looked at: any server will do."""
    conn.execute("CREATE SCHEMA sales")
    conn.execute("CREATE TABLE sales.orders (id int PRIMARY KEY)")
    conn.execute("CREATE TABLE public.notes (id int PRIMARY KEY)")
    conn.execute("CREATE SCHEMA pgshift")
    conn.execute("CREATE TABLE pgshift.migrations_like (id int PRIMARY KEY)")
    conn.execute("CREATE SCHEMA pgshift_app_v2")
    conn.execute("CREATE TABLE pgshift_app_v2.kept (id int PRIMARY KEY)")
    plan = write_plan(
        tmp_path,
        "version: 1\nname: move_all\nmove: {database: true}\n"
        "phases: [expand, dual_write, backfill, cutover, contract]\n",
    )
    listed = [
        line.strip()[2:].split(" ")[0]
        for line in cli(dsn, "plan", plan).stdout.splitlines()
        if line.startswith("  - ")
    ]
    assert listed == ["public.notes", "sales.orders"]
