"""What the log shows on a console: without -v the events an operator follows (phases,
waits, rollbacks, warnings), the per-step detail only with -v; JSON logs keep every event."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from pgshift.log import configure


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()  # other tests capture info events


def shown(capsys: pytest.CaptureFixture[str], fmt: str, verbose: int, events: bool = True) -> str:
    configure(fmt, verbose, events)
    log = structlog.get_logger("pgshift")
    log.info("phase started", phase="backfill")
    log.info("waiting", reason="paused by operator")
    log.info("rolling back", phase="expand")
    log.info("step", phase="expand", step="add the shadow columns")
    log.warning("lock timeout, retrying", attempt=2)
    return capsys.readouterr().err


def test_console_without_verbose_shows_the_operators_events(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = shown(capsys, "console", 0)
    for event in ("phase started", "waiting", "rolling back", "lock timeout, retrying"):
        assert event in text
    assert "add the shadow columns" not in text


def test_console_with_verbose_and_json_show_every_event(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "add the shadow columns" in shown(capsys, "console", 1)
    assert "add the shadow columns" in shown(capsys, "json", 0)


def test_the_demo_keeps_its_console_to_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    text = shown(capsys, "console", 0, events=False)
    assert "phase started" not in text and "lock timeout, retrying" in text
