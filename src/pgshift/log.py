"""structlog set-up: readable lines on a terminal, JSON lines otherwise; always on stderr, so
stdout stays for what a command prints (plan, JSON reports)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = {"password", "dsn", "conninfo"}


def _redact(logger: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    from pgshift.db import redact

    for key in list(event):
        if key in _SECRET_KEYS and isinstance(event[key], str):
            event[key] = redact(event[key]) if key != "password" else "***"
    return event


def configure(log_format: str | None = None, verbose: int = 0) -> None:
    fmt = log_format or ("console" if sys.stderr.isatty() else "json")
    level = (
        logging.DEBUG
        if verbose > 1
        else logging.INFO
        if verbose or fmt == "json"
        else logging.WARNING
    )
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
