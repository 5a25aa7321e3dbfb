"""Replica lag from sampled WAL positions, and the throttle's waiting, logging and status, with
synthetic positions and a fake clock: no database."""

from __future__ import annotations

import random
import re
from datetime import timedelta
from typing import Any

from structlog.testing import capture_logs

from pgshift.engine.throttle import STATUS_REFRESH_SECONDS, LagSampler, ReplicaLag, Throttle
from pgshift.plan.model import Settings


def sampler(*samples: tuple[int, float], spacing: float = 0.0, size: int = 2048) -> LagSampler:
    made = LagSampler(spacing=spacing, size=size)
    for lsn, at in samples:
        made.add(lsn, at)
    return made


def test_no_samples_or_caught_up_is_no_lag() -> None:
    assert LagSampler().lag(0, 10.0) == 0.0
    s = sampler((100, 0.0), (200, 1.0))
    assert s.lag(200, 50.0) == 0.0
    assert s.lag(250, 50.0) == 0.0


def test_lag_is_time_since_the_newest_sample_the_replica_has_reached() -> None:
    s = sampler((100, 0.0), (200, 1.0), (300, 2.0))
    assert s.lag(250, 3.0) == 2.0  # has 200 (the primary's position at t=1), not 300
    assert s.lag(200, 3.0) == 2.0
    assert s.lag(150, 3.0) == 3.0
    assert s.lag(299, 2.5) == 1.5


def test_behind_every_sample_is_at_least_the_whole_window() -> None:
    s = sampler((100, 5.0), (200, 6.0))
    assert s.lag(50, 9.0) == 4.0


def test_a_run_of_equal_positions_keeps_its_first_and_last_time() -> None:
    s = sampler((100, 0.0), (100, 1.0), (100, 2.0), (100, 3.0))
    assert len(s) == 2
    assert s.lag(50, 5.0) == 5.0  # behind since the position was first seen
    s.add(200, 4.0)
    assert s.lag(100, 5.0) == 2.0  # it had 100 while the primary still stood there at t=3


def test_a_position_going_back_starts_again() -> None:
    s = sampler((500, 0.0), (600, 1.0))
    s.add(100, 2.0)
    assert len(s) == 1 and s.current == 100
    assert s.lag(50, 3.0) == 1.0


def test_thinned_samples_only_overestimate_and_by_less_than_the_spacing() -> None:
    rng = random.Random(7)
    full = sampler()
    thin = LagSampler(spacing=1.0)
    lsn, at = 0, 0.0
    for _ in range(2000):
        lsn += rng.choice((0, 0, 8, 100, 5000))
        at += rng.uniform(0.001, 0.3)
        full.add(lsn, at)
        thin.add(lsn, at)
    assert len(thin) < len(full) / 4
    now = at + 0.5
    for replay in [rng.randrange(0, lsn + 1) for _ in range(500)]:
        exact, rough = full.lag(replay, now), thin.lag(replay, now)
        assert exact <= rough <= exact + 1.0 + 1e-9, (replay, exact, rough)


def test_the_window_is_bounded_and_the_oldest_kept_sample_still_bounds_lag() -> None:
    s = sampler(*((n * 10, float(n)) for n in range(100)), size=8)
    assert len(s) == 8
    assert s.lag(0, 100.0) == 100.0 - 92.0


# ------------------------------------------------------------------ the throttle, with fakes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class World:
    """The primary at `flushed`, its replicas as (name, state, replay_lsn, replay_lag seconds),
    and the migration's paused flag. Every question the throttle asks takes one second and
    first runs the next step of `script`: the world moving on while the throttle polls."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.flushed = 1000
        self.replicas: list[tuple[str, str | None, int | None, float | None]] = []
        self.paused = False
        self.overrides: dict[str, Any] = {}  # `migrate set`
        self.stored: list[str | None] = []
        self.script: list[Any] = []
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        assert self.ticks < 1000, "the throttle never stopped waiting"
        if self.script:
            self.script.pop(0)(self)
        self.clock.now += 1.0

    # the connection
    def execute(self, query: Any, params: Any = None) -> World:
        self.tick()
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [
            (self.flushed, 10 + i, name, state, replay, lag)
            for i, (name, state, replay, lag) in enumerate(self.replicas)
        ] or [(self.flushed, None, None, None, None, None)]

    # the state store
    def live(self, conn: Any, name: str) -> tuple[bool, dict[str, Any]]:
        self.tick()
        return self.paused, self.overrides

    def set_throttle(self, conn: Any, name: str, reason: str | None) -> None:
        self.stored.append(reason)


def make(limit: float) -> tuple[Throttle, World]:
    world = World()
    throttle = Throttle(
        world,  # type: ignore[arg-type]
        world,  # type: ignore[arg-type]
        "m",
        Settings(max_replication_lag=timedelta(seconds=limit)),
        poll_seconds=0,
        clock=world.clock,
    )
    return throttle, world


def write(world: World) -> None:
    world.flushed += 100  # the primary writes on; a paused standby's replay stands still


def catch_up(world: World) -> None:
    world.replicas = [(n, s, world.flushed, 4.0) for n, s, _r, _l in world.replicas]


def test_a_stalled_replica_is_waited_for_logged_once_and_cleared() -> None:
    throttle, world = make(limit=3.0)
    world.replicas = [("standby1", "streaming", 1000, None)]
    assert throttle.reason() is None  # caught up
    world.script = [write] * 30 + [catch_up]
    with capture_logs() as logs:
        batches(throttle, world)
    waiting = [e for e in logs if e["event"] == "waiting"]
    assert len(waiting) == 1, logs  # once, although the lag grew with every poll
    reason = waiting[0]["reason"]
    assert re.fullmatch(
        r"replica standby1 lags [3-5]\.\ds \([0-9,]+ bytes of WAL behind\),"
        r" more than max_replication_lag 3s",
        reason,
    ), reason
    assert [e["event"] for e in logs][-1] == "resuming"
    # stored when waiting began, refreshed with current numbers while it lasted, then cleared
    assert store_refreshes(world) >= 2
    assert world.stored[0] == reason and world.stored[-1] is None
    assert len(set(world.stored[:-1])) == len(world.stored) - 1
    assert throttle.waited_seconds > 2 * STATUS_REFRESH_SECONDS


def batches(throttle: Throttle, world: World) -> None:
    """Wait before each batch, as the backfill does, until the script has played out."""
    while world.script:
        throttle.wait()


def store_refreshes(world: World) -> int:
    return len(world.stored) - 2


def test_each_new_cause_is_logged_and_stored() -> None:
    throttle, world = make(limit=2.0)
    world.replicas = [("standby1", "streaming", 1000, None)]
    world.paused = True

    def unpause(w: World) -> None:
        w.paused = False

    world.script = [write] * 6 + [unpause] + [write] * 6 + [catch_up]
    with capture_logs() as logs:
        batches(throttle, world)
    reasons = [e["reason"] for e in logs if e["event"] == "waiting"]
    assert len(reasons) == 2, reasons
    assert reasons[0].startswith("paused") and reasons[1].startswith("replica standby1 lags")


def test_only_live_replicas_count_and_the_worst_is_named() -> None:
    throttle, world = make(limit=1.0)
    world.replicas = [
        ("copying", "backup", 0, None),
        ("catching", "catchup", 1000, None),
        ("slow", "streaming", 1000, 9.0),
    ]
    throttle.replica_lags()
    world.flushed = 5000
    lags = {r.name: r for r in throttle.replica_lags()}
    assert set(lags) == {"catching", "slow"}
    assert lags["catching"] == ReplicaLag("catching", 1.0, 4000)
    assert lags["slow"].seconds == 9.0  # PostgreSQL's own replay_lag, when it says more
    why = throttle.reason()
    assert why is not None and why.startswith("replica slow lags 9.0s")


def test_replay_lag_counts_from_the_first_sample_on() -> None:
    throttle, world = make(limit=1.0)
    world.replicas = [("standby1", "streaming", 900, 42.0)]  # behind before we ever looked
    assert throttle.replica_lags() == [ReplicaLag("standby1", 42.0, 100)]


def test_a_caught_up_replica_has_no_lag_whatever_replay_lag_still_shows() -> None:
    throttle, world = make(limit=1.0)
    world.replicas = [("standby1", "streaming", 1000, 30.0)]
    assert throttle.replica_lags() == [ReplicaLag("standby1", 0.0, 0)]


def test_an_unreadable_replica_is_logged_once_and_does_not_block() -> None:
    throttle, world = make(limit=1.0)
    world.replicas = [("pid 42", None, None, None)]
    with capture_logs() as logs:
        for _ in range(3):
            assert throttle.reason() is None
    unreadable = [e for e in logs if e["event"] == "replica lag unreadable"]
    assert len(unreadable) == 1 and "pg_monitor" in unreadable[0]["reason"]


def test_a_standby_that_has_not_replied_yet_is_not_unreadable() -> None:
    throttle, world = make(limit=1.0)
    world.replicas = [("standby1", "streaming", None, None)]
    with capture_logs() as logs:
        assert throttle.reason() is None
    assert logs == []


def test_no_limit_reads_no_replicas() -> None:
    throttle, world = make(limit=0.0)
    world.replicas = [("standby1", "streaming", 0, 99.0)]
    world.flushed = 10**9
    assert throttle.reason() is None
    assert world.ticks == 1  # only the paused flag was read


def test_settings_changed_while_running_take_effect_at_the_next_wait() -> None:
    throttle, world = make(limit=30)
    world.replicas = [("r1", "streaming", 1000, None)]
    throttle.wait()
    assert throttle.settings.max_replication_lag == timedelta(seconds=30)
    world.overrides = {"max_replication_lag": "5s", "nice_ratio": 2}
    throttle.wait()
    assert throttle.limit == 5 and throttle.settings.nice_ratio == 2
    world.overrides = {}  # `migrate set m max_replication_lag= nice_ratio=`: the plan's again
    throttle.wait()
    assert throttle.limit == 30 and throttle.settings.nice_ratio == 0.25  # the default
