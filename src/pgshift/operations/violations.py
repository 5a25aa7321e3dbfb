"""Run a verify phase's counts of the rows new constraints would reject."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

from pgshift.engine.locks import set_timeouts
from pgshift.errors import MigrationFailed
from pgshift.phases.base import ViolationCheck
from pgshift.plan.model import Settings


def run_violation_check(
    conn: psycopg.Connection[Any], step: ViolationCheck, settings: Settings
) -> list[tuple[str, int]]:
    """Each count in a read-only transaction of its own; raises naming every count above 0."""
    found: list[tuple[str, int]] = []
    for what, query in step.checks:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            # a count scans the whole table: no statement_timeout, whatever the server's
            set_timeouts(conn, settings.lock_timeout, timedelta(0), local=True)
            row = conn.execute(query).fetchone()
        count = int(row[0]) if row else 0
        if count:
            found.append((what, count))
    if found:
        listed = "; ".join(f"{count:,} {what}" for what, count in found)
        raise MigrationFailed(
            f"{listed}: fix those rows (and the writes making them) before contract, then apply"
            " again"
        )
    return found
