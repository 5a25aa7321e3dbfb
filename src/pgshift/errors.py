"""Errors a user sees: one line that says what to do, and the exit status it maps to."""

from __future__ import annotations

import difflib
from enum import IntEnum


class ExitCode(IntEnum):
    DONE = 0
    FAILED = 1
    USAGE = 2
    WAITING = 3
    DIFFERENCES = 4


class PgshiftError(Exception):
    """Base of every error meant for the user; `str()` is the one line printed."""

    exit_code: ExitCode = ExitCode.FAILED


class PlanError(PgshiftError):
    """The plan is invalid. `where` is `file:line:column` when known; checks against the
    database give `path` instead (e.g. ("columns", "balance", "up")), which the command line
    turns into `where` through the plan's source map. `at` is (line, column), 1-based, inside
    the text at `path` (a SQL text's syntax error), for a `where` at that very place."""

    exit_code = ExitCode.USAGE

    def __init__(
        self,
        message: str,
        where: str | None = None,
        path: tuple[str | int, ...] | None = None,
        at: tuple[int, int] | None = None,
    ) -> None:
        self.message = message
        self.where = where
        self.path = path
        self.at = at
        super().__init__(f"{where}: {message}" if where else message)

    def located(self, where: str) -> PlanError:
        return PlanError(self.message, where=where, path=self.path)


class PlanErrors(PlanError):
    """Several errors of one plan, reported together (the command line prints one line each),
    so a user fixes them in one pass; `str()` is the first with a count of the rest."""

    def __init__(self, errors: list[PlanError]) -> None:
        first = errors[0]
        super().__init__(first.message, where=first.where, path=first.path, at=first.at)
        self.errors = errors
        self.args = (f"{first} (and {len(errors) - 1} more error(s) in the plan)",)


def no_phase_named(name: str, plan: str, names: list[str]) -> PlanError:
    """`--until`, `--to` or a gate naming no phase of the plan, with the likeliest meant."""
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return PlanError(f"no phase named {name!r} in plan {plan}{hint} (phases: {', '.join(names)})")


class UsageError(PgshiftError):
    exit_code = ExitCode.USAGE


class MigrationFailed(PgshiftError):
    exit_code = ExitCode.FAILED


class LockHeld(PgshiftError):
    exit_code = ExitCode.FAILED


class GateWaiting(PgshiftError):
    exit_code = ExitCode.WAITING


class DifferencesFound(PgshiftError):
    exit_code = ExitCode.DIFFERENCES
