"""Sessions that connected before the new version was ready: in versions mode they may still run
the old version's code (or hold statements prepared against the old shape), so contract waits
for them to be gone. The new version is ready when backfill has filled the new shape (or, with
no backfill, when expand has created its view): its view shows every row from then on, and
deploying it is the step that follows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from pgshift.engine.state import MigrationState


@dataclass(frozen=True)
class OldSession:
    pid: int
    application_name: str
    user: str
    client: str
    backend_start: datetime

    def describe(self) -> str:
        name = f" {self.application_name}" if self.application_name else ""
        client = f" from {self.client}" if self.client else ""
        return f"pid {self.pid} ({self.user}{name}{client})"


def new_version_ready(state: MigrationState) -> datetime | None:
    """When the new version could first be deployed: backfill's end, or expand's for a plan
    without backfill (an `operations` plan's view is complete once created); None before."""
    ready = next((p for p in state.phases if p.kind == "backfill"), None) or next(
        (p for p in state.phases if p.kind == "expand"), None
    )
    if ready is None or ready.status != "done":
        return None
    return ready.finished_at


def old_sessions(conn: psycopg.Connection[Any], since: datetime) -> list[OldSession]:
    """Client sessions of this database that connected before `since`, pgshift's own aside."""
    rows = conn.execute(
        "SELECT pid, coalesce(application_name, ''), coalesce(usename, ''),"
        " coalesce(host(client_addr), ''), backend_start FROM pg_stat_activity"
        " WHERE datid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        " AND backend_start < %s AND coalesce(application_name, '') NOT LIKE 'pgshift %%'"
        " ORDER BY backend_start, pid",
        (since,),
    ).fetchall()
    return [OldSession(*row) for row in rows]


def old_sessions_text(sessions: list[OldSession], limit: int = 3) -> str:
    shown = ", ".join(s.describe() for s in sessions[:limit])
    more = f" and {len(sessions) - limit} more" if len(sessions) > limit else ""
    return f"{len(sessions)} session(s) connected before the new version was ready: {shown}{more}"
