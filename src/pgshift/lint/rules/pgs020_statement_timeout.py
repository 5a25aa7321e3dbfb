"""PGS020 statement-timeout: a blocking scan or rewrite with no statement_timeout set.

lock_timeout bounds the wait for a lock; once granted, a statement that scans or rewrites a
live table (the ones PGS001-PGS006, PGS009, PGS010 and PGS023 report) holds a lock that blocks
writes, or reads and writes, for as long as the scan takes. When such a statement is kept (its
finding allowed, or the rule turned off), bound it: SET statement_timeout to the longest block
you accept, before it. Unlike squawk's require-statement-timeout this rule does not ask for a
statement_timeout before every DDL statement: an instant catalog change is already bounded by
lock_timeout, and a statement_timeout over CREATE INDEX CONCURRENTLY or VALIDATE CONSTRAINT,
which block nothing, would only cancel them half way (leaving an INVALID index behind). In a
plan's sql phases pgshift sets the timeouts itself. The rule is off unless the config file
turns it on (severity "warning" or "error"): most of its statements already fail another rule.
"""

from __future__ import annotations

from collections.abc import Iterator

from pgshift.lint.model import Rule
from pgshift.lint.state import State

RULE = Rule(
    "PGS020",
    "statement-timeout",
    "blocking scan or rewrite with no statement_timeout set",
    # opt in (severity PGS020 = "warning" in the config file): every statement it reports is
    # already reported by the rule whose blocking lock it is about
    "off",
)

# The rules whose statements hold a blocking lock while they read or rewrite every row.
BLOCKING_SCANS = frozenset(
    {"PGS001", "PGS002", "PGS003", "PGS004", "PGS005", "PGS006", "PGS009", "PGS010", "PGS023"}
)


def follow_up(fired: set[str], state: State) -> Iterator[str]:
    """Checked once a statement's other findings are known (`fired`: their rule ids)."""
    if not state.require_lock_timeout or state.timeout_set("statement_timeout"):
        return
    scans = sorted(fired & BLOCKING_SCANS)
    if scans:
        yield (
            f"this statement ({', '.join(scans)}) holds a blocking lock while it reads or "
            "rewrites the table, and no statement_timeout bounds how long; instead run SET "
            "statement_timeout before it, to the longest block you accept"
        )
