"""The source/destination pair the `move` target's tests run on: both up at the expected majors,
and native logical replication both ways between them, as a move does it (the forward
subscription with its initial copy, then after cutover the reverse one without)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.integration.servers import (
    CROSS_VERSION,
    DESTINATION,
    PAIR,
    SOURCE,
    SOURCE_MAJOR,
    DatabasePair,
    ServerPair,
    destination_binaries,
    move_databases,
    move_servers,
    pgbench_init,
    pgbench_load,
    postmasters_under,
    server_pair,
    source_binaries,
    wait_for,
    with_dbname,
)

__all__ = ["move_databases", "move_servers"]  # fixtures, used by name

TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")


def test_pair_is_up_at_the_expected_majors(move_servers: ServerPair) -> None:
    pair = move_servers
    assert pair.destination_major == DESTINATION.major >= 18
    assert pair.source_major == SOURCE.major
    # PostgreSQL 15 wherever the machine has it (CI's does): a real major-version pair
    if Path(f"/usr/lib/postgresql/{SOURCE_MAJOR}/bin/postgres").is_file():
        assert SOURCE.major == SOURCE_MAJOR and CROSS_VERSION, PAIR
    assert pair.source.port != pair.destination.port
    for server in (pair.source, pair.destination):
        with psycopg.connect(server.dsn) as conn:
            assert _show(conn, "wal_level") == "logical"
            assert int(_show(conn, "max_replication_slots")) >= 10
            assert int(_show(conn, "max_wal_senders")) >= 10
            assert conn.execute("SELECT current_setting('is_superuser')").fetchone() == ("on",)
        # a replication connection over TCP, through this side's own psql: trust works for
        # what a subscription opens, and the bindir's clients are of the server's major
        out = subprocess.run(
            [
                str(server.program("psql")),
                "-XAt",
                "-c",
                "IDENTIFY_SYSTEM",
                f"{server.dsn} replication=database",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert out.strip().endswith("|postgres"), out
        version = subprocess.run(
            [str(server.program("pg_dump")), "--version"], capture_output=True, text=True
        ).stdout
        assert f" {server.major}." in version, version


def test_no_postgresql_15_falls_back_to_the_embedded_pair(tmp_path: Path) -> None:
    binaries, note = source_binaries([tmp_path])
    assert binaries == destination_binaries()
    assert "source is the embedded" in note


def test_logical_replication_both_ways(move_databases: DatabasePair) -> None:
    pair, db = move_databases.servers, move_databases
    # slot names are per server, subscription names per database: tests sharing the pair
    # use their database's name for both
    forward, reverse = f"{db.name}_fwd", f"{db.name}_rev"
    pgbench_init(pair.source_bindir, db.source_dsn, scale=1)
    # the same tables, empty, with their keys: a subscription copies rows, never DDL. (Not
    # through the destination's pg_dump: this machine's PostgreSQL 15.20 gives every column an
    # attribute option pg_attver=<n>, which its own pg_dump leaves out but pg_dump 18 writes
    # as ALTER COLUMN ... SET (pg_attver=...), and PostgreSQL 18 rejects that.)
    pgbench_init(pair.destination_bindir, db.destination_dsn, scale=1, steps="dtp")

    with (
        psycopg.connect(db.source_dsn, autocommit=True) as src,
        psycopg.connect(db.destination_dsn, autocommit=True) as dst,
    ):
        # forward: every row copied, then every change streamed
        src.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(forward), sql.SQL(", ").join(map(sql.Identifier, TABLES))
            )
        )
        _subscribe(dst, forward, pair.source_dsn, db.name, copy_data=True)
        wait_for(lambda: _all_ready(dst, forward), 20, what="the initial copy")
        wait_for(lambda: _digests(src) == _digests(dst), 20, what="the copied rows")
        assert _digests(dst)["pgbench_accounts"][0] == 100_000

        load = pgbench_load(pair.source_bindir, db.source_dsn, clients=4, seconds=1)
        assert load.transactions > 0 and load.failed == 0 and load.aborted_clients == 0, load
        wait_for(lambda: _digests(src) == _digests(dst), 20, what="the source's writes")
        assert _digests(dst)["pgbench_history"][0] == load.transactions

        # cutover: the forward subscription goes (its slot on the source with it) before the
        # reverse one exists. Both at once would loop: a publisher sends the changes its apply
        # worker made like any others, and only a subscriber of 16+ can refuse them
        # (`origin = none`); the reverse subscriber here is the 15 source, which cannot, so
        # every change would come back and be applied again, over and over.
        dst.execute(sql.SQL("DROP SUBSCRIPTION {}").format(sql.Identifier(forward)))
        assert _slots(src) == []

        # reverse: no copy, the source has every row already; changes from now on
        dst.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(reverse), sql.SQL(", ").join(map(sql.Identifier, TABLES))
            )
        )
        _subscribe(src, reverse, pair.destination_dsn, db.name, copy_data=False)
        assert _all_ready(src, reverse)  # without a copy every table is ready at once
        load = pgbench_load(pair.destination_bindir, db.destination_dsn, clients=4, seconds=1)
        assert load.transactions > 0 and load.failed == 0 and load.aborted_clients == 0, load
        wait_for(lambda: _digests(src) == _digests(dst), 20, what="the destination's writes")

        src.execute(sql.SQL("DROP SUBSCRIPTION {}").format(sql.Identifier(reverse)))
        src.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(forward)))
        dst.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(reverse)))
        assert _slots(src) == [] and _slots(dst) == []


def test_pair_leaves_nothing_behind() -> None:
    """Stopped and removed even when the block fails. It is also a second pair beside the
    session's (its own folder and ports), as CI's two pytest runs start one each."""
    with pytest.raises(RuntimeError, match="boom"), server_pair() as pair:
        folder = pair.folder
        assert len(postmasters_under(folder)) == 2
        raise RuntimeError("boom")
    assert not folder.exists()
    assert wait_for(lambda: not postmasters_under(folder), 10, what="the postmasters to exit")


def _show(conn: psycopg.Connection[Any], setting: str) -> str:
    row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
    assert row is not None
    return str(row[0])


def _subscribe(
    conn: psycopg.Connection[Any], name: str, server_dsn: str, dbname: str, *, copy_data: bool
) -> None:
    """CREATE SUBSCRIPTION takes its connection string as a literal, not a parameter; the
    subscriber's server opens it, over TCP on 127.0.0.1, with trust."""
    publisher = with_dbname(server_dsn, dbname)
    conn.execute(
        sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (copy_data = {})").format(
            sql.Identifier(name),
            sql.Literal(publisher),
            sql.Identifier(name),
            sql.SQL("true" if copy_data else "false"),
        )
    )


def _all_ready(conn: psycopg.Connection[Any], subscription: str) -> bool:
    """Every table of the subscription in state 'r' (ready: copied, and streaming)."""
    states = conn.execute(
        "SELECT r.srsubstate FROM pg_subscription_rel r"
        " JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = %s",
        (subscription,),
    ).fetchall()
    return len(states) == len(TABLES) and all(state == "r" for (state,) in states)


def _digests(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, str]]:
    """Each table's row count and a hash of all its rows in a fixed order."""
    return {
        table: conn.execute(
            sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                " FROM {} t"
            ).format(sql.Identifier(table))
        ).fetchone()  # type: ignore[misc]
        for table in TABLES
    }


def _slots(conn: psycopg.Connection[Any]) -> list[Any]:
    """This database's replication slots (the pair is shared by the session's tests)."""
    return conn.execute(
        "SELECT slot_name, slot_type, active FROM pg_replication_slots"
        " WHERE database = current_database()"
    ).fetchall()
