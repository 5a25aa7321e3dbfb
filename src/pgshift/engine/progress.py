"""How a run shows itself: structlog events always (one per phase, step and every few seconds of
backfill), and a rich progress bar for the backfill when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from types import TracebackType

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

log = structlog.get_logger("pgshift")


@dataclass
class BatchReport:
    rows_done: int
    rows_total: int | None
    batch_rows: int
    batch_seconds: float
    batch_size: int
    rows_per_second: float

    @property
    def eta_seconds(self) -> float | None:
        if not self.rows_total or self.rows_per_second <= 0:
            return None
        return max(self.rows_total - self.rows_done, 0) / self.rows_per_second


@dataclass
class Reporter:
    """Shared by executor and backfill runner; `bar` only on a terminal."""

    bar: bool = field(default_factory=lambda: sys.stderr.isatty())
    log_every_seconds: float = 5.0
    _progress: Progress | None = None
    _task: TaskID | None = None
    _last_log: float = 0.0

    def event(self, message: str, **fields: object) -> None:
        log.info(message, **fields)

    def warn(self, message: str, **fields: object) -> None:
        log.warning(message, **fields)

    def backfill_started(self, phase: str, rows_done: int, rows_total: int | None) -> None:
        self._last_log = 0.0  # each piece of work logs its first batch
        if self.bar:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                phase, total=max(rows_total or 0, rows_done) or None, completed=rows_done, rate=""
            )

    def batch(self, phase: str, report: BatchReport, work: str = "backfill") -> None:
        """A batch done; every few seconds a `<work> progress` event (`verify progress`...)."""
        if self._progress is not None and self._task is not None:
            total = report.rows_total
            if total is not None and report.rows_done > total:
                total = report.rows_done
            self._progress.update(
                self._task,
                completed=report.rows_done,
                total=total,
                rate=f"{report.rows_per_second:,.0f} rows/s",
            )
        now = time.monotonic()
        if now - self._last_log >= self.log_every_seconds:
            self._last_log = now
            log.info(
                f"{work} progress",
                phase=phase,
                rows=report.rows_done,
                rows_total=report.rows_total,
                rows_per_s=round(report.rows_per_second),
                batch_size=report.batch_size,
                eta_s=round(report.eta_seconds) if report.eta_seconds is not None else None,
            )

    def backfill_finished(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None

    def __enter__(self) -> Reporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.backfill_finished()
