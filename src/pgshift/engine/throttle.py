"""Before each batch of backfill (and verify): wait while the migration is paused, while a
replica lags more than max_replication_lag, while more than max_active_sessions of the
database's sessions are active (like gh-ost's --max-load), or while the plan's throttle_query
says so. The reason is logged once when waiting starts (and again when its cause changes) and
shown by `migrate status`. After each batch, `nice` sleeps nice_ratio times the batch's own
time (like gh-ost's --nice-ratio), but only while the application is busy: while at least
nice_min_active_sessions other sessions of the database are running a statement, or were at a
sample of the last BUSY_HOLD_SECONDS (pg_stat_activity sampled after a batch, at most every
BUSY_SAMPLE_SECONDS). On an idle server the backfill does not sleep at all.

Replica lag is measured here, not just read from pg_stat_replication. `replay_lag` comes from
timing samples the walsender keeps; after a quiet spell it has none to measure a stalled replay
against and keeps an old value (or NULL), and `reply_time` refreshes with every status reply
whether replay moves or not. The replay position always holds: the throttle remembers when the
primary was at which WAL position and turns a replica's replay position into seconds, taking
`replay_lag` too when that says more.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg import sql

from pgshift.engine.live_settings import apply_overrides, describe
from pgshift.engine.state import StateStore
from pgshift.plan.model import Settings

log = structlog.get_logger("pgshift.throttle")

# Standbys in these states replay what the primary sends; `startup` and `backup` (a
# pg_basebackup) do not replay, so their positions say nothing about lag.
LIVE_STATES = ("streaming", "catchup")

# While waiting, the stored reason (with its numbers) is refreshed this often, so `migrate
# status` shows a current lag without one write per poll.
STATUS_REFRESH_SECONDS = 5.0

# The primary's flushed position, not pg_current_wal_lsn() (the written one): walsenders only
# send flushed WAL, so a replica that replayed everything it can get counts as caught up.
# The LEFT JOIN keeps one row when there is no replica, so the position is always sampled.
# Standbys all call themselves "walreceiver" unless cluster_name is set: the address tells
# them apart (a standby connected through a Unix socket has none).
# Without pg_monitor (or pg_read_all_stats) a walsender row shows only its pid: state and
# positions are NULL.
_REPLICAS_QUERY = """
WITH primary_wal AS (SELECT pg_current_wal_flush_lsn() AS lsn)
SELECT pg_wal_lsn_diff(w.lsn, '0/0')::numeric AS flushed,
       r.pid,
       coalesce(nullif(r.application_name, '') || coalesce(' at ' || host(r.client_addr), ''),
                host(r.client_addr), 'pid ' || r.pid) AS replica,
       r.state,
       pg_wal_lsn_diff(r.replay_lsn, '0/0')::numeric AS replayed,
       extract(epoch FROM r.replay_lag)::float8 AS replay_lag
  FROM primary_wal w LEFT JOIN pg_stat_replication r ON true
"""


# The database's sessions running a statement now, other than pgshift's own (their
# application_name starts with "pgshift ", see db.application_name) and this one. Without
# pg_read_all_stats (or pg_monitor) other roles' sessions show no state and are not counted.
_ACTIVE_SESSIONS_QUERY = """
SELECT count(*) FROM pg_stat_activity
 WHERE datname = current_database() AND state = 'active' AND backend_type = 'client backend'
   AND pid <> pg_backend_pid() AND application_name NOT LIKE 'pgshift %'
"""

# The sleep of `nice` (a test counts the calls through it).
_sleep = time.sleep

# A busy sample keeps nice sleeping this long: a single sample misses an application that is
# busy most of the time (pgbench -c 6 on 2 cores shows no active session in about 1 sample of
# 7), and a few batches' samples a second do not.
BUSY_HOLD_SECONDS = 1.0
# At most one sample this often: one takes 0.04 ms on an idle server and 0.5 to 1 ms on a
# loaded one, too much after every batch of a small fixed batch_size. Auto batches (200 ms)
# take one each.
BUSY_SAMPLE_SECONDS = 0.1


class LagSampler:
    """The primary's WAL position over time: each sample says "at time t the primary had WAL
    up to lsn". A replica that has replayed up to a sample's lsn is at most `now - t` behind;
    one behind every sample is at least `now - (oldest t)` behind.

    Memory stays small: a run of equal positions keeps just its first and last sample (losing
    nothing), and a sample closer than `spacing` to the one before the newest replaces the
    newest (the estimate then errs upwards, by less than `spacing`); past `size` samples the
    oldest go. Times come from the caller's clock (the throttle's: time.monotonic()).
    """

    def __init__(self, spacing: float = 0.0, size: int = 2048) -> None:
        self.spacing = spacing
        self._samples: deque[tuple[int, float]] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def current(self) -> int | None:
        return self._samples[-1][0] if self._samples else None

    def add(self, lsn: int, at: float) -> None:
        samples = self._samples
        if samples and lsn < samples[-1][0]:
            samples.clear()  # the position went back (a restore, a new primary): start again
        if len(samples) >= 2 and (samples[-2][0] == lsn or at - samples[-2][1] < self.spacing):
            samples[-1] = (lsn, at)
        else:
            samples.append((lsn, at))

    def lag(self, replay_lsn: int, now: float) -> float:
        """Seconds a replica that has replayed up to `replay_lsn` is behind the primary."""
        if not self._samples or replay_lsn >= self._samples[-1][0]:
            return 0.0
        for lsn, at in reversed(self._samples):
            if lsn <= replay_lsn:
                return max(now - at, 0.0)
        return max(now - self._samples[0][1], 0.0)


@dataclass(frozen=True)
class ReplicaLag:
    name: str
    seconds: float
    behind_bytes: int


class Throttle:
    def __init__(
        self,
        conn: psycopg.Connection[Any],
        store: StateStore,
        name: str,
        settings: Settings,
        poll_seconds: float = 1.0,
        on_wait: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conn = conn
        self.store = store
        self.name = name
        self.settings = settings
        self.planned = settings  # before `migrate set` changes (see refresh)
        self.overrides: dict[str, Any] = {}
        self.poll_seconds = poll_seconds
        self.on_wait = on_wait
        self.clock = clock
        self.waited_seconds = 0.0
        # nice_ratio: the sleeps after batches, their count and total, and the batches after
        # which none was taken because the application was idle
        self.nice_sleeps = 0
        self.niced_seconds = 0.0
        self.nice_skipped = 0
        # (when, active sessions) of the samples of the last BUSY_HOLD_SECONDS, for busy()
        self._samples: deque[tuple[float, int]] = deque()
        self._busy: bool | None = None  # the last answer of busy(), to log its changes
        self.limit = settings.max_replication_lag.total_seconds()
        # a resolution well under the limit, and a window (~1024 spacings) 32 times as long
        self.sampler = LagSampler(spacing=self.limit / 32)
        self._unreadable_logged = False

    def replica_lags(self) -> list[ReplicaLag]:
        """Sample the primary's WAL position and return each live replica's lag."""
        rows = self.conn.execute(_REPLICAS_QUERY).fetchall()
        now = self.clock()
        if not rows or rows[0][0] is None:
            return []
        flushed = int(rows[0][0])
        self.sampler.add(flushed, now)
        lags = []
        for _flushed, pid, replica, state, replayed, replay_lag in rows:
            if pid is None:
                continue  # no replica at all: the one row of the LEFT JOIN
            if replayed is None:
                # no state either: hidden from this role; a state but no position yet: the
                # standby has not sent its first reply, a moment after it connects
                if state is None:
                    self._log_unreadable(replica)
                continue
            if state not in LIVE_STATES:
                continue
            replay = int(replayed)
            seconds = self.sampler.lag(replay, now)
            if replay < flushed and replay_lag is not None:
                # replay_lag knows about WAL written before this throttle's first sample; a
                # replica that has caught up may still show a stale one, so only when behind
                seconds = max(seconds, float(replay_lag))
            lags.append(ReplicaLag(str(replica), seconds, max(flushed - replay, 0)))
        return lags

    def _log_unreadable(self, replica: str) -> None:
        if not self._unreadable_logged:
            log.warning(
                "replica lag unreadable",
                migration=self.name,
                replica=replica,
                reason="pg_stat_replication shows no replay position to this role (grant it"
                " pg_monitor); max_replication_lag is not enforced",
            )
            self._unreadable_logged = True

    def refresh(self) -> bool:
        """Read pause and the live settings (`migrate set`) in one query; whether paused."""
        paused, overrides = self.store.live(self.conn, self.name)
        if overrides != self.overrides:
            self.settings = apply_overrides(self.planned, overrides)
            self.limit = self.settings.max_replication_lag.total_seconds()
            log.info("settings changed", migration=self.name, now=describe(overrides))
            self.overrides = overrides
        return paused

    def _cause(self) -> tuple[str, str] | None:
        """(cause, reason): the cause stays the same while one condition holds, the reason
        carries its current numbers."""
        if self.refresh():
            return "paused", f"paused (migrate resume {self.name} continues)"
        if self.limit > 0:
            lagging = [r for r in self.replica_lags() if r.seconds > self.limit]
            if lagging:
                worst = max(lagging, key=lambda r: r.seconds)
                return f"replica {worst.name}", (
                    f"replica {worst.name} lags {worst.seconds:.1f}s"
                    f" ({worst.behind_bytes:,} bytes of WAL behind),"
                    f" more than max_replication_lag {self.limit:g}s"
                )
        most = self.settings.max_active_sessions
        if most > 0:
            row = self.conn.execute(_ACTIVE_SESSIONS_QUERY).fetchone()
            active = int(row[0]) if row else 0
            if active > most:
                return "max_active_sessions", (
                    f"{active} active sessions in the database, more than max_active_sessions"
                    f" {most}"
                )
        if self.settings.throttle_query:
            row = self.conn.execute(sql.SQL(self.settings.throttle_query)).fetchone()
            if row and row[0]:
                return "throttle_query", "throttle_query returned true"
        return None

    def busy(self) -> bool:
        """Whether the application is busy: at least nice_min_active_sessions of the
        database's other sessions (pgshift's own apart) are running a statement now, or were at
        a sample of the last BUSY_HOLD_SECONDS. With nice_min_active_sessions 0, always."""
        least = self.settings.nice_min_active_sessions
        if least <= 0:
            return True
        samples = self._samples
        now = self.clock()
        if not samples or now - samples[-1][0] >= BUSY_SAMPLE_SECONDS:
            row = self.conn.execute(_ACTIVE_SESSIONS_QUERY).fetchone()
            samples.append((now, int(row[0]) if row else 0))
        while now - samples[0][0] > BUSY_HOLD_SECONDS:
            samples.popleft()  # the newest stays: it is at most BUSY_SAMPLE_SECONDS old
        # the samples are kept, not the verdict, so a new nice_min_active_sessions counts at once
        busy = any(active >= least for _, active in samples)
        if busy != self._busy:
            log.debug(
                "application busy" if busy else "application idle",
                migration=self.name,
                active_sessions=samples[-1][1],
                nice_ratio=self.settings.nice_ratio,
            )
            self._busy = busy
        return busy

    def nice(self, batch_seconds: float) -> None:
        """After a batch that took `batch_seconds`: sleep nice_ratio times as long, while the
        application is busy (see busy)."""
        pause = self.settings.nice_ratio * batch_seconds
        if pause <= 0:
            return
        if not self.busy():
            self.nice_skipped += 1
            return
        self.nice_sleeps += 1
        self.niced_seconds += pause
        _sleep(pause)

    def reason(self) -> str | None:
        """Why the next batch must wait, or None."""
        found = self._cause()
        return found[1] if found else None

    def wait(self) -> None:
        """Return when the next batch may run."""
        shown: str | None = None
        stored_at = 0.0
        started = self.clock()
        while (found := self._cause()) is not None:
            cause, why = found
            now = self.clock()
            if cause != shown:
                log.info("waiting", migration=self.name, reason=why)
                self.store.set_throttle(self.conn, self.name, why)
                stored_at = now
                if self.on_wait:
                    self.on_wait(why)
                shown = cause
            elif now - stored_at >= STATUS_REFRESH_SECONDS:
                self.store.set_throttle(self.conn, self.name, why)
                stored_at = now
            time.sleep(self.poll_seconds)
        if shown is not None:
            self.store.set_throttle(self.conn, self.name, None)
            waited = self.clock() - started
            self.waited_seconds += waited
            log.info("resuming", migration=self.name, waited_s=round(waited, 1))
