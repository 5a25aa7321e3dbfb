"""What every benchmark shares: the server to measure on and a scratch database on it."""

from __future__ import annotations

import argparse
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo


def server_arguments(parser: argparse.ArgumentParser) -> None:
    """--dsn (default: $PGSHIFT_TEST_DSN, else the local server) and --embedded."""
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGSHIFT_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument(
        "--embedded", action="store_true", help="start an embedded PostgreSQL in a temp folder"
    )


@contextmanager
def server(args: argparse.Namespace) -> Iterator[str]:
    """The DSN to bench on: `--dsn`, or an embedded server in a temporary folder."""
    if not args.embedded:
        yield args.dsn
        return
    from pgshift.embedded import EmbeddedServer

    with tempfile.TemporaryDirectory(prefix="pgshift-bench-") as folder:
        # run as root, the server runs as `nobody`, which must be able to enter the folder
        os.chmod(folder, 0o755)
        embedded = EmbeddedServer(Path(folder) / "pgdata")
        embedded.start()
        try:
            yield embedded.dsn()
        finally:
            embedded.stop()


@contextmanager
def scratch_database(dsn: str, what: str) -> Iterator[str]:
    """A database of its own on the server, dropped afterwards: its DSN."""
    name = f"pgshift_bench_{what}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(dsn, dbname=name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def worker_counts(text: str) -> list[int]:
    """`--workers 1,2`: the worker counts, one pgshift arm each."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not counts or any(not 1 <= n <= 32 for n in counts) or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"distinct worker counts from 1 to 32: {text!r}")
    return counts


def narrow_table(conn: psycopg.Connection[Any], rows: int, *schemas: str) -> None:
    """A fresh, vacuumed, checkpointed `t (id bigint primary key, v int, pad text)` of `rows`
    rows, the state schema and `schemas` dropped (a previous arm's migration)."""
    for schema in ("pgshift", *schemas):
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.execute("DROP TABLE IF EXISTS t")
    conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, v int, pad text)")
    conn.execute(
        "INSERT INTO t SELECT i, i %% 1000, md5(i::text) FROM generate_series(1, %s) i", (rows,)
    )
    conn.execute("VACUUM ANALYZE t")
    conn.execute("CHECKPOINT")
