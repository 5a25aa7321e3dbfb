"""Auto batch sizing: the next batch is sized from the slowest of the recent batches."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from pgshift.engine.backfill_runner import AUTO_MAX, RECENT_BATCHES, BatchPolicy
from pgshift.plan.model import Settings


def auto(batch_time_ms: int = 200) -> BatchPolicy:
    return BatchPolicy(
        size=None, batch_time=timedelta(milliseconds=batch_time_ms), pause=timedelta(0)
    )


def test_one_slow_batch_among_fast_ones_sizes_the_next() -> None:
    policy = auto()
    # 10,000 rows/s before, then one batch at 2,500 rows/s: the next batch is sized for the slow
    # rate (500 rows in 200 ms), not for the fast one, halving at most
    earlier = [(2_000, 0.2), (2_000, 0.2), (2_000, 0.2)]
    assert policy.next_size(2_000, 2_000, 0.8, earlier) == 1_000
    # after it, fast batches again: the slow one still in the window keeps the size down
    earlier = [(2_000, 0.2), (2_000, 0.2), (2_000, 0.8)]
    assert policy.next_size(1_000, 1_000, 0.1, earlier) == 500


def test_the_window_holds_the_last_few_batches() -> None:
    """The runner keeps RECENT_BATCHES - 1 earlier batches: once the slow one has left, the size
    grows back (doubling at most)."""
    policy = auto()
    fast = [(1_000, 0.1)] * (RECENT_BATCHES - 1)
    assert policy.next_size(1_000, 1_000, 0.1, fast) == 2_000
    assert policy.next_size(1_000, 1_000, 0.1) == 2_000  # no earlier batches: the last one alone


def test_the_slowest_rate_never_overshoots_batch_time() -> None:
    """Whatever the mix, the next batch at the slowest recent rate fits in batch_time."""
    policy = auto(500)
    history = [(30_000, 0.5), (30_000, 0.45), (30_000, 0.9), (30_000, 0.5)]
    size = policy.next_size(30_000, 30_000, 0.5, history)
    slowest = min(rows / seconds for rows, seconds in [*history, (30_000, 0.5)])
    assert size / slowest <= 0.5
    assert size == 16_666


def test_fixed_size_and_bounds() -> None:
    fixed = BatchPolicy(size=750, batch_time=timedelta(milliseconds=200), pause=timedelta(0))
    assert fixed.next_size(750, 750, 5.0, [(750, 0.01)]) == 750
    policy = auto()
    assert policy.next_size(AUTO_MAX, AUTO_MAX, 0.001, [(AUTO_MAX, 0.001)]) == AUTO_MAX
    assert policy.next_size(100, 100, 0.0, []) == 200  # too fast to time: double
    assert policy.next_size(100, 100, 0.0, [(100, 0.4)]) == 50  # the earlier batch's rate counts


def test_nice_ratio_and_max_active_sessions_settings() -> None:
    settings = Settings()
    # nice_ratio sleeps only while at least one other session is active
    assert (
        settings.nice_ratio,
        settings.nice_min_active_sessions,
        settings.max_active_sessions,
    ) == (0.25, 1, 0)
    assert Settings(nice_ratio=0.5, max_active_sessions=8).nice_ratio == 0.5
    for bad in (
        {"nice_ratio": -1},
        {"nice_ratio": 101},
        {"max_active_sessions": -1},
        {"nice_min_active_sessions": -1},
    ):
        with pytest.raises(ValidationError):
            Settings(**bad)  # type: ignore[arg-type]
