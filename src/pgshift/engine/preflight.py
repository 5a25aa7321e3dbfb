"""Pre-flight checks `migrate plan` runs against the database: how big the table is, how much
free disk the migration needs, how far behind the replicas are, and which open transactions
would hold up the cutover's lock. A snapshot of now, for deciding whether to start."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pgshift.compile import CompiledPlan
from pgshift.phases.columns_shape import ColumnsShape

_SIZE_QUERY = """
SELECT pg_table_size(c.oid) AS table_bytes,
       pg_total_relation_size(c.oid) AS total_bytes,
       c.reltuples AS reltuples
  FROM pg_class c
 WHERE c.oid = to_regclass(%s)
"""

# What PostgreSQL reports, as is: the throttle measures lag itself while it runs, this is the
# picture before anything starts. Without pg_monitor a walsender shows its pid and no more.
_REPLICAS_QUERY = """
SELECT coalesce(nullif(application_name, '') || coalesce(' at ' || host(client_addr), ''),
                host(client_addr), 'pid ' || pid) AS name,
       state,
       extract(epoch FROM replay_lag)::float8 AS lag_seconds,
       CASE WHEN NOT pg_is_in_recovery()  -- on a standby pg_current_wal_lsn() raises
            THEN pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint END AS behind_bytes
  FROM pg_stat_replication
 ORDER BY 1
"""

# Client sessions of this database inside a transaction older than lock_timeout: the cutover
# queues behind any lock they hold on the table, and everything else queues behind the
# cutover. Background workers (autovacuum gives way to a lock request) are left out.
_LONG_TRANSACTIONS_QUERY = """
SELECT a.pid,
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8 AS age_seconds,
       a.state,
       a.application_name,
       left(a.query, 80) AS query,
       EXISTS (SELECT 1 FROM pg_locks l
                WHERE l.pid = a.pid AND l.granted
                  AND l.locktype = 'relation' AND l.relation = to_regclass(%(table)s)
       ) AS holds_table_lock
  FROM pg_stat_activity a
 WHERE a.datname = current_database()
   AND a.pid <> pg_backend_pid()
   AND a.backend_type = 'client backend'
   AND a.xact_start < clock_timestamp() - %(threshold)s
 ORDER BY a.xact_start
"""


def preflight(
    conn: psycopg.Connection[Any], compiled: CompiledPlan, lock_timeout: timedelta
) -> dict[str, Any]:
    """The pre-flight numbers for `compiled`'s table, read now."""
    table = compiled.table
    with conn.cursor(row_factory=dict_row) as cur:
        size = cur.execute(_SIZE_QUERY, (table.regclass,)).fetchone()
        if size is None:
            table_bytes, total_bytes, rows = table.table_bytes, table.total_bytes, None
        else:
            table_bytes, total_bytes = int(size["table_bytes"]), int(size["total_bytes"])
            # reltuples is -1 for a table never vacuumed or analyzed: unknown, not empty
            rows = int(size["reltuples"]) if size["reltuples"] >= 0 else None
        replicas = cur.execute(_REPLICAS_QUERY).fetchall()
        long_transactions = cur.execute(
            _LONG_TRANSACTIONS_QUERY,
            {"table": table.regclass, "threshold": lock_timeout},
        ).fetchall()
    rebuilt = _rebuilt_index_bytes(conn, compiled)
    settings = compiled.plan.settings
    return {
        "table": table.display,
        "table_bytes": table_bytes,
        "total_bytes": total_bytes,
        "rows_estimate": rows,
        "free_disk_needed_bytes": _disk_needed(compiled, table_bytes, total_bytes, rebuilt),
        "rebuilt_index_bytes": rebuilt,
        "replicas": [
            {
                "name": r["name"],
                "state": r["state"],
                "lag_seconds": _rounded(r["lag_seconds"]),
                "behind_bytes": r["behind_bytes"],
            }
            for r in replicas
        ],
        "long_transactions": [
            {
                "pid": t["pid"],
                "age_seconds": _rounded(t["age_seconds"]),
                "state": t["state"],
                "application_name": t["application_name"],
                "query": t["query"],
                "holds_table_lock": t["holds_table_lock"],
            }
            for t in long_transactions
        ],
        "lock_timeout_seconds": lock_timeout.total_seconds(),
        "max_replication_lag_seconds": settings.max_replication_lag.total_seconds(),
    }


def _rebuilt_index_bytes(conn: psycopg.Connection[Any], compiled: CompiledPlan) -> dict[str, int]:
    """Current size of each index the migration builds a copy of, by name."""
    shape = compiled.context.shape
    if not isinstance(shape, ColumnsShape):
        return {}
    out: dict[str, int] = {}
    for index in shape.indexes:
        name = index.original.name
        qualified = sql.Identifier(compiled.table.schema, name).as_string(conn)
        row = conn.execute(
            "SELECT coalesce(pg_relation_size(to_regclass(%s)), 0)", (qualified,)
        ).fetchone()
        out[name] = int(row[0]) if row else 0
    return out


def _disk_needed(
    compiled: CompiledPlan, table_bytes: int, total_bytes: int, rebuilt: dict[str, int]
) -> int:
    if not isinstance(compiled.context.shape, ColumnsShape):
        # new_table: every row copied, with indexes of its own (taken as the live table's)
        return total_bytes
    # The backfill's UPDATE writes a new version of every row (the old ones are only reused
    # after vacuum), and each changed column's indexes are built anew beside the old ones.
    return table_bytes + sum(rebuilt.values())


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} bytes"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{value:,.1f} {unit}"


def render_preflight(data: dict[str, Any]) -> list[str]:
    """The text lines `migrate plan` prints for `preflight()`'s data; warnings start with
    `warning:`."""
    rows = data["rows_estimate"]
    lines = [
        "pre-flight:",
        f"  table {data['table']}: {_size(data['table_bytes'])}"
        f" ({_size(data['total_bytes'])} with indexes and TOAST),"
        + (f" ~{rows:,} rows" if rows is not None else " row count unknown (never analyzed)"),
        f"  free disk needed: ~{_size(data['free_disk_needed_bytes'])}"
        " (a new version of every row, plus the rebuilt indexes; WAL comes on top)",
    ]
    limit = data["max_replication_lag_seconds"]
    if not data["replicas"]:
        lines.append("  replicas: none")
    for replica in data["replicas"]:
        lag = replica["lag_seconds"]
        behind = replica["behind_bytes"]
        lines.append(
            f"  replica {replica['name']}: {replica['state'] or 'state unreadable'},"
            f" lag {f'{lag:g}s' if lag is not None else 'unknown'},"
            f" {_size(behind) if behind is not None else 'unknown'} behind"
        )
    for replica in data["replicas"]:
        lag = replica["lag_seconds"]
        if limit > 0 and lag is not None and lag > limit:
            lines.append(
                f"warning: replica {replica['name']} lags {lag:g}s, more than"
                f" max_replication_lag {limit:g}s: the backfill will wait for it"
            )
    timeout = data["lock_timeout_seconds"]
    if not data["long_transactions"]:
        lines.append(f"  transactions open longer than lock_timeout {timeout:g}s: none")
    for t in data["long_transactions"]:
        held = " (holds a lock on the table)" if t["holds_table_lock"] else ""
        lines.append(
            f"warning: pid {t['pid']} open for {t['age_seconds']:g}s would block the cutover"
            f" lock{held}: {t['state']}, application {t['application_name'] or '-'!r},"
            f" query {t['query']!r}"
        )
    return lines
