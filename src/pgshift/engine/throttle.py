"""Before each batch of backfill (and verify): wait while the migration is paused, while a
replica lags more than max_replication_lag, or while the plan's throttle_query says so. The
reason is logged once when waiting starts and shown by `migrate status`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import structlog
from psycopg import sql

from pgshift.engine.state import StateStore
from pgshift.plan.model import Settings

log = structlog.get_logger("pgshift.throttle")

# Lag as the primary sees it. Replay lag in seconds where the standby reports it; when replay
# stalls (paused, or a long query on the standby) replay_lag stops moving, so also count the
# time since the standby last replayed anything while WAL is waiting for it.
_LAG_QUERY = """
SELECT coalesce(application_name, client_addr::text, 'replica') AS replica,
       greatest(
         coalesce(extract(epoch FROM replay_lag), 0),
         CASE WHEN pg_wal_lsn_diff(sent_lsn, replay_lsn) > 0
              THEN extract(epoch FROM clock_timestamp() - reply_time) ELSE 0 END
       )::float8 AS lag_s,
       pg_wal_lsn_diff(sent_lsn, replay_lsn)::bigint AS behind_bytes
  FROM pg_stat_replication
 WHERE state = 'streaming'
 ORDER BY 2 DESC
"""


class Throttle:
    def __init__(
        self,
        conn: psycopg.Connection[Any],
        store: StateStore,
        name: str,
        settings: Settings,
        poll_seconds: float = 1.0,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.conn = conn
        self.store = store
        self.name = name
        self.settings = settings
        self.poll_seconds = poll_seconds
        self.on_wait = on_wait
        self.waited_seconds = 0.0

    def reason(self) -> str | None:
        """Why the next batch must wait, or None."""
        if self.store.is_paused(self.conn, self.name):
            return f"paused (migrate resume {self.name} continues)"
        limit = self.settings.max_replication_lag.total_seconds()
        if limit > 0:
            for replica, lag, behind in self.conn.execute(_LAG_QUERY).fetchall():
                if lag is not None and lag > limit:
                    return (
                        f"replica {replica} lags {lag:.1f}s ({behind} bytes behind),"
                        f" more than max_replication_lag {limit:g}s"
                    )
        if self.settings.throttle_query:
            row = self.conn.execute(sql.SQL(self.settings.throttle_query)).fetchone()
            if row and row[0]:
                return "throttle_query returned true"
        return None

    def wait(self) -> None:
        """Return when the next batch may run."""
        shown: str | None = None
        started = time.monotonic()
        while (why := self.reason()) is not None:
            if why != shown:
                log.info("waiting", migration=self.name, reason=why)
                self.store.set_throttle(self.conn, self.name, why)
                if self.on_wait:
                    self.on_wait(why)
                shown = why
            time.sleep(self.poll_seconds)
        if shown is not None:
            self.store.set_throttle(self.conn, self.name, None)
            self.waited_seconds += time.monotonic() - started
            log.info("resuming", migration=self.name, waited_s=round(time.monotonic() - started, 1))
