"""Settings changed while a migration runs (`migrate set NAME key=value`), like gh-ost's
interactive commands: stored with the migration, read by the running process before its next
batch of backfill or verify, and recorded as an event. Only settings that a batch reads are
settable; the rest (lock_timeout, on_failure, ...) shape compiled steps and stay the plan's."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from pgshift.errors import UsageError
from pgshift.plan.model import Settings

SETTABLE: dict[str, str] = {
    "batch_size": "rows per batch, or auto",
    "batch_time": "the target time of one batch when batch_size is auto",
    "batch_pause": "a sleep between batches",
    "nice_ratio": "sleep this many times each batch's own time after it, while the app is busy",
    "nice_min_active_sessions": "nice_ratio sleeps while at least this many other sessions"
    " are active (0: always)",
    "max_active_sessions": "wait while more of the database's sessions are active (0: off)",
    "max_replication_lag": "wait while a replica lags more than this",
}


def _checked(key: str, value: Any) -> Any:
    """`value` as the plan would hold it for `key`; a UsageError says what is wrong."""
    try:
        return getattr(Settings.model_validate({key: value}), key)
    except ValidationError as error:
        message = str(error.errors()[0]["msg"]).removeprefix("Value error, ")
        raise UsageError(f"{key}={value}: {message}") from None


def parse_assignments(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`key=value` pairs as the values to store: the text as given (a YAML scalar, so 5000 is a
    number and 500ms a duration), None for `key=` (back to the plan's value)."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep:
            raise UsageError(f"{pair!r} is not key=value; for example batch_time=500ms")
        if key not in SETTABLE:
            known = ", ".join(SETTABLE)
            raise UsageError(
                f"{key!r} cannot be changed while a migration runs; these can: {known}"
            )
        if not text.strip():
            parsed[key] = None
            continue
        value = yaml.safe_load(text)
        _checked(key, value)
        parsed[key] = value
    return parsed


def apply_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """The plan's settings with the stored changes in force (an unreadable one is skipped:
    it was checked when set, so only a newer pgshift's key could be)."""
    update = {}
    for key, value in overrides.items():
        if key in SETTABLE:
            try:
                update[key] = _checked(key, value)
            except UsageError:
                continue
    return settings.model_copy(update=update) if update else settings


def describe(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "none"
