"""An application for the move's tests and bench: clients running pgbench's TPC-B-like
transaction (plus an insert that takes a sequence value) against whichever server a file names,
the way an application's DSN is flipped by a hook at cutover. A write refused by pgshift's fence
(SQLSTATE 25006) is retried after reading the file again, so no transaction is lost; any other
error is counted as a failure."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

TRANSACTION = (
    ("UPDATE pgbench_accounts SET abalance = abalance + %(delta)s WHERE aid = %(aid)s"),
    ("UPDATE pgbench_tellers SET tbalance = tbalance + %(delta)s WHERE tid = %(tid)s"),
    ("UPDATE pgbench_branches SET bbalance = bbalance + %(delta)s WHERE bid = %(bid)s"),
    (
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)"
        " VALUES (%(tid)s, %(bid)s, %(aid)s, %(delta)s, CURRENT_TIMESTAMP)"
    ),
    ("INSERT INTO transfers (aid, amount) VALUES (%(aid)s, %(delta)s)"),
)

# pgbench's own script, with the sequence-taking insert: for `pgbench -f -`
PGBENCH_SCRIPT = """\
\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
INSERT INTO transfers (aid, amount) VALUES (:aid, :delta);
END;
"""


def create_transfers(conn: psycopg.Connection[Any]) -> None:
    """A table with a bigserial key and a foreign key to pgbench_accounts: its sequence must
    continue on the destination, its key is built after the copy."""
    conn.execute(
        "CREATE TABLE transfers (id bigserial PRIMARY KEY,"
        " aid int NOT NULL REFERENCES pgbench_accounts (aid), amount int NOT NULL,"
        " at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute("CREATE INDEX transfers_aid_idx ON transfers (aid)")
    conn.execute("INSERT INTO transfers (aid, amount) SELECT g, 0 FROM generate_series(1, 1000) g")


@dataclass
class LoadStats:
    commits: dict[str, int] = field(default_factory=lambda: {"source": 0, "destination": 0})
    fenced: int = 0  # writes refused by a fence, then retried
    errors: list[str] = field(default_factory=list)
    # per client: from its first refused write to its next commit (the blocked time it saw)
    blocked: list[float] = field(default_factory=list)
    times: dict[str, list[float]] = field(
        default_factory=lambda: {"source": [], "destination": []}
    )  # every commit's time (monotonic), per side

    def gap(self, before: str = "source", after: str = "destination") -> float | None:
        """Seconds from the last commit on `before` to the first on `after` that followed it:
        how long no client could write anywhere at the switch."""
        if not self.times[before]:
            return None
        last = max(self.times[before])
        later = [t for t in self.times[after] if t > last]
        return min(later) - last if later else None


class SwitchingLoad:
    def __init__(self, dsns: dict[str, str], target: Path, clients: int = 4, scale: int = 1):
        self.dsns = dsns
        self.target = target
        self.clients = clients
        self.scale = scale
        self.stats = LoadStats()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.running = threading.Event()  # cleared: clients hold between transactions
        self.running.set()
        self.idle = threading.Semaphore(0)
        self.threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)
        ]

    def __enter__(self) -> SwitchingLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadStats:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)
        return self.stats

    def pause(self) -> None:
        """Return once every client is between transactions, holding there."""
        self.running.clear()
        for _ in self.threads:
            if not self.idle.acquire(timeout=30):
                raise TimeoutError("a client did not pause")

    def resume(self) -> None:
        self.running.set()

    def wait_commits(self, side: str, more: int, timeout: float = 30) -> None:
        """Until `more` further transactions have committed on `side`."""
        deadline = time.monotonic() + timeout
        start = self.stats.commits[side]
        while self.stats.commits[side] < start + more:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {more} commits on the {side}: {self.stats}")
            time.sleep(0.01)

    def _side(self) -> str:
        try:
            text = self.target.read_text().strip()
        except OSError:
            text = ""
        return text if text in self.dsns else "source"

    def _client(self, number: int) -> None:
        rng = random.Random(number)
        conns: dict[str, psycopg.Connection[Any]] = {}
        blocked_since: float | None = None
        try:
            while not self.stopping.is_set():
                if not self.running.is_set():
                    self.idle.release()
                    while not self.running.wait(0.05):
                        if self.stopping.is_set():
                            return
                side = self._side()
                conn = conns.get(side)
                if conn is None or conn.closed or conn.broken:
                    conn = conns[side] = psycopg.connect(self.dsns[side], autocommit=True)
                values = {
                    "aid": rng.randint(1, 100_000 * self.scale),
                    "bid": rng.randint(1, self.scale),
                    "tid": rng.randint(1, 10 * self.scale),
                    "delta": rng.randint(-5000, 5000),
                }
                try:
                    with conn.transaction():
                        for statement in TRANSACTION:
                            conn.execute(statement, values)
                except psycopg.errors.ReadOnlySqlTransaction:
                    with self.lock:
                        self.stats.fenced += 1
                    if blocked_since is None:
                        blocked_since = time.monotonic()
                    time.sleep(0.001)
                    continue
                except psycopg.Error as error:
                    with self.lock:
                        self.stats.errors.append(f"{side}: {error.sqlstate} {error}")
                    time.sleep(0.01)
                    continue
                now = time.monotonic()
                with self.lock:
                    self.stats.commits[side] += 1
                    self.stats.times[side].append(now)
                    if blocked_since is not None:
                        self.stats.blocked.append(now - blocked_since)
                blocked_since = None
        finally:
            for conn in conns.values():
                conn.close()
