"""Row-hash verification of a move: every moved table with a key, on both servers.

Each table is compared by the two-connection comparison of `verify/rowhash.py` (chunked by
key, count and hash sum per chunk on each server at once, differing chunks bisected to their
keys, keys still different after a short delay rechecked). While the application writes, a
hot row can differ between two reads made a moment apart on two servers however often it is
read again; so the keys still reported are compared once more at one consistent point: locked
(FOR SHARE) on the publishing server, which holds back writes to those rows only, while the
marker shows the other server has applied everything committed before the lock. A key still
different then is a difference.

Tables without a primary key are not compared (no key to chunk or name rows by); the result
names them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgshift import db
from pgshift.engine.progress import Reporter
from pgshift.errors import UsageError
from pgshift.move.catalog import MovedTable
from pgshift.move.names import Direction, publisher, subscriber
from pgshift.move.runner import Servers, bump, subscription_oid, wait_marker
from pgshift.move.steps import CompiledMove
from pgshift.verify.diff import Difference, collect_hashes, diff_hashes
from pgshift.verify.rowhash import VerifyResult, compare_two_connections
from pgshift.verify.side import Key, KeyRange, Side, SideQueries

Connection = psycopg.Connection[Any]
MAX_RECHECKED = 1_000  # keys per table given the consistent-point recheck
RECHECK_DELAY = 0.5
LOCK_TIMEOUT = "2s"
CATCH_UP_TIMEOUT = 60.0


@dataclass
class TableResult:
    table: str
    result: VerifyResult
    rechecked: int = 0  # keys compared again at one point, and found equal then


@dataclass
class MoveVerification:
    tables: list[TableResult] = field(default_factory=list)
    not_compared: list[str] = field(default_factory=list)


def verify_move(
    servers: Servers,
    compiled: CompiledMove,
    *,
    chunk_size: int,
    reporter: Reporter,
) -> tuple[VerifyResult, dict[str, Any]]:
    """Every moved table compared; the summed result (each example's key starts with its
    table) and the per-table detail for the report."""
    for table in compiled.tables:
        row = servers.destination.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (table.ident.as_string(),)
        ).fetchone()
        if not (row and row[0]):
            raise UsageError(
                f"nothing to verify: {table.display} does not exist on the destination; apply"
                " the move up to backfill first"
            )
    direction = _live_direction(servers, compiled)
    found = MoveVerification()
    started = time.monotonic()
    with (
        db.connect(servers.conninfo("source"), role=f"verify {compiled.plan.name}") as left,
        db.connect(servers.conninfo("destination"), role=f"verify {compiled.plan.name}") as right,
    ):
        for table in compiled.tables:
            if not table.key:
                found.not_compared.append(table.display)
                continue
            reporter.event("verifying", table=table.display)
            values = [c for c in table.columns if c not in table.key]
            side = Side(table.ident, table.key, values)
            result = compare_two_connections(
                left,
                right,
                side,
                side,
                chunk_size=chunk_size,
                recheck_delay=RECHECK_DELAY,
                max_examples=MAX_RECHECKED,
            )
            entry = TableResult(table.display, result)
            if result.differences and direction is not None:
                _recheck_at_one_point(servers, compiled, table, entry, direction)
            found.tables.append(entry)
    total = VerifyResult()
    for entry in found.tables:
        r = entry.result
        total.rows_compared += r.rows_compared
        total.chunks += r.chunks
        total.missing += r.missing
        total.extra += r.extra
        total.changed += r.changed
        total.examples += [
            Difference(d.kind, (entry.table, *d.key), d.columns, d.left, d.right)
            for d in r.examples[:20]
        ]
    total.seconds = time.monotonic() - started
    detail = {
        "tables": {
            e.table: {
                "rows_compared": e.result.rows_compared,
                "differences": e.result.differences,
                "rechecked_equal": e.rechecked,
            }
            for e in found.tables
        },
        "not_compared": [f"{t} (no primary key)" for t in found.not_compared],
    }
    return total, detail


def _live_direction(servers: Servers, compiled: CompiledMove) -> Direction | None:
    """Which way replication runs now (None: neither, nothing to wait for)."""
    names = compiled.names
    if subscription_oid(servers.destination, names.forward) is not None:
        return "forward"
    if subscription_oid(servers.source, names.back) is not None:
        return "back"
    return None


def _recheck_at_one_point(
    servers: Servers,
    compiled: CompiledMove,
    table: MovedTable,
    entry: TableResult,
    direction: Direction,
) -> None:
    """Compare the reported keys again, locked on the publishing server while the other one
    catches up past the lock; replace the table's result with what still differs."""
    result = entry.result
    if result.differences > len(result.examples):
        return  # more than were named: too many to be rows in flight
    keys = list(dict.fromkeys(d.key for d in result.examples))
    values = [c for c in table.columns if c not in table.key]
    queries = SideQueries(Side(table.ident, table.key, values))
    source_server = publisher(direction)
    target_server = subscriber(direction)
    key_list = sql.SQL(", ").join(sql.Identifier(k) for k in table.key)
    marks = sql.SQL(", ").join(
        sql.SQL("({})").format(sql.SQL(", ").join([sql.Placeholder()] * len(table.key)))
        for _ in keys
    )
    lock = sql.SQL("SELECT 1 FROM {} WHERE ({}) IN ({}) FOR SHARE").format(
        table.ident, key_list, marks
    )
    params = [v for key in keys for v in key]
    dsn = servers.conninfo(source_server)
    with db.connect(dsn, role=f"verify {compiled.plan.name}") as locker, locker.transaction():
        locker.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        try:
            locker.execute(lock, params)
        except psycopg.errors.LockNotAvailable:
            return  # busy rows: keep what the comparison found
        value = bump(servers, compiled.names, direction)
        wait_marker(
            servers,
            compiled.names,
            direction,
            value,
            time.monotonic() + CATCH_UP_TIMEOUT,
            f"the {target_server} did not catch up within {CATCH_UP_TIMEOUT:.0f}s",
        )
        here = _hashes(locker, queries, keys, len(table.key))
        there = _hashes(servers.conn(target_server), queries, keys, len(table.key))
    left, right = (here, there) if source_server == "source" else (there, here)
    still = diff_hashes(left, right)
    kinds = {"missing": 0, "extra": 0, "changed": 0}
    for kind, _ in still:
        kinds[kind] += 1
    differing = {key for _, key in still}
    entry.rechecked = len(keys) - len(differing)
    result.missing, result.extra, result.changed = (
        kinds["missing"],
        kinds["extra"],
        kinds["changed"],
    )
    result.examples = [d for d in result.examples if d.key in differing]


def _hashes(
    conn: Connection, queries: SideQueries, keys: list[Key], width: int
) -> dict[Key, list[int]]:
    query, params = queries.hashes(KeyRange(), keys)
    return collect_hashes(conn.execute(query, params).fetchall(), width)
