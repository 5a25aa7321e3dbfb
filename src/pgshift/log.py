"""structlog set-up: readable lines on a terminal, JSON lines otherwise; always on stderr, so
stdout stays for what a command prints (plan, JSON reports)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = {"password", "dsn", "conninfo"}

# On a terminal without -v an operator sees what a run is doing at the level of phases: each
# phase starting and ending, waits and resumes, rollbacks, warnings. These details need -v; the
# periodic `... progress` lines too when the progress bar shows the same on a terminal.
DETAIL_EVENTS = frozenset(
    {"step", "step already done", "lock_timeout capped below the server's deadlock_timeout"}
)


def _redact(logger: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    from pgshift.db import redact

    for key in list(event):
        if key in _SECRET_KEYS and isinstance(event[key], str):
            event[key] = redact(event[key]) if key != "password" else "***"
    return event


def _operator_events(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    name = event.get("event")
    progress = isinstance(name, str) and name.endswith(" progress") and sys.stderr.isatty()
    if name in DETAIL_EVENTS or progress:
        raise structlog.DropEvent
    return event


def configure(log_format: str | None = None, verbose: int = 0, events: bool = True) -> None:
    """Logging on stderr. JSON: every info event. Console: with -v every info event (-vv
    debug); without, the operator's events (`events`, see DETAIL_EVENTS) or warnings only."""
    fmt = log_format or ("console" if sys.stderr.isatty() else "json")
    level = (
        logging.DEBUG
        if verbose > 1
        else logging.INFO
        if verbose or fmt == "json" or events
        else logging.WARNING
    )
    terse = [_operator_events] if fmt == "console" and not verbose else []
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *terse,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
