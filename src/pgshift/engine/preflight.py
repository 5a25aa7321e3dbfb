"""Pre-flight checks against the live database: how big the table is, how much free disk the
migration needs, how far behind the replicas are (and what slots retain), and which open
transactions would hold up the strong locks. A snapshot of now, for deciding whether to start.

One set of queries, built as SQL with literals (no parameters), so the runbook prints exactly
the query that produced each number, runnable as is in psql; `migrate plan` prints a summary of
the same data, with warnings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pgshift.compile import CompiledPlan
from pgshift.db import Query
from pgshift.phases.columns_shape import ColumnsShape
from pgshift.plan.durations import to_ms


def size_query(regclass: str) -> Query:
    return sql.SQL(
        """SELECT pg_size_pretty(pg_table_size(c.oid)) AS table_size,
       pg_size_pretty(pg_total_relation_size(c.oid)) AS total_size,
       c.reltuples::bigint AS row_estimate,
       greatest(s.last_analyze, s.last_autoanalyze) AS analyzed_at,
       pg_table_size(c.oid) AS table_bytes,
       pg_total_relation_size(c.oid) AS total_bytes
  FROM pg_class c
  LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
 WHERE c.oid = {}::regclass"""
    ).format(sql.Literal(regclass))


def rebuilt_indexes(compiled: CompiledPlan) -> list[tuple[str, str, str, int]]:
    """(what, index name, index as regclass text, copies built) for each index over a changed
    column of a `columns` plan: the copy on the new column, and for a constraint's index a
    spare on the old one too (rollback needs it)."""
    shape = compiled.context.shape
    if not isinstance(shape, ColumnsShape):
        return []
    schema = compiled.table.schema
    out = []
    for ix in shape.indexes:
        name = f"{schema}.{ix.original.name}"
        spare = ix.constraint is not None and ix.spare is not None
        out.append(
            (
                f"2 copies of index {name} (the new one, and a spare on the old columns)"
                if spare
                else f"copy of index {name} on the new columns",
                ix.original.name,
                sql.Identifier(schema, ix.original.name).as_string(),
                2 if spare else 1,
            )
        )
    return out


def disk_query(compiled: CompiledPlan) -> Query:
    """Extra disk the migration needs at its peak. `columns`: the backfill writes a new version
    of every row (the old ones stay as dead tuples until vacuum), and each index over a changed
    column is built again. `new_table`: a copy of every row in the new table, with indexes of
    its own (taken as the live table's). pg_table_size, not the heap alone: counting TOAST too
    errs on the safe side."""
    regclass = sql.Literal(compiled.table.regclass)
    if compiled.plan.target == "operations":
        parts: list[Query] = [
            sql.SQL(
                "SELECT 'no row copied; each index an operation builds needs about its own size'"
                " AS what, NULL::text AS index_name, 0::bigint AS bytes"
            )
        ]
    elif not isinstance(compiled.context.shape, ColumnsShape):
        parts = [
            sql.SQL(
                "SELECT 'copy of every row in the new table, with its indexes' AS what,"
                " NULL::text AS index_name, pg_total_relation_size({}::regclass) AS bytes"
            ).format(regclass)
        ]
    else:
        parts = [
            sql.SQL(
                "SELECT 'new version of every row (old ones stay until vacuum)' AS what,"
                " NULL::text AS index_name, pg_table_size({}::regclass) AS bytes"
            ).format(regclass)
        ]
    indexes = rebuilt_indexes(compiled)
    if indexes:
        parts.append(
            sql.SQL(
                "SELECT what, index_name, copies * coalesce(pg_relation_size(to_regclass(name)), 0)\n"
                "    FROM (VALUES {}) AS i(what, index_name, name, copies)"
            ).format(
                sql.SQL(",\n                 ").join(
                    sql.SQL("({}, {}, {}, {})").format(*map(sql.Literal, index))
                    for index in indexes
                )
            )
        )
    return sql.SQL(
        """WITH needed(what, index_name, bytes) AS (
  {}
)
SELECT what, index_name, pg_size_pretty(bytes::bigint) AS size, bytes::bigint AS bytes
  FROM needed
UNION ALL
SELECT 'total', NULL, pg_size_pretty(sum(bytes)::bigint), sum(bytes)::bigint FROM needed"""
    ).format(sql.SQL("\n  UNION ALL\n  ").join(parts))


# What PostgreSQL reports, as is: the throttle measures lag itself while it runs, this is the
# picture before anything starts. replay_lag keeps its last value while a standby's replay
# stalls (and is NULL when idle), so the WAL not replayed yet is shown too: a replica that has
# caught up is near 0 bytes. Without pg_monitor a walsender shows its pid and no more; on a
# standby pg_current_wal_lsn() raises, hence the guard.
REPLICAS_QUERY = sql.SQL(
    """SELECT coalesce(nullif(application_name, '') || coalesce(' at ' || host(client_addr), ''),
                host(client_addr), 'pid ' || pid) AS replica,
       state, sync_state,
       round(extract(epoch FROM replay_lag)::numeric, 1) AS replay_lag_seconds,
       CASE WHEN NOT pg_is_in_recovery()
            THEN pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint END AS behind_bytes,
       CASE WHEN NOT pg_is_in_recovery()
            THEN pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)) END
         AS not_replayed
  FROM pg_stat_replication
 ORDER BY 1"""
)

# Slots keep WAL until their consumer reads it, and the backfill writes a lot of it.
SLOTS_QUERY = sql.SQL(
    """SELECT slot_name, slot_type, active,
       pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) AS wal_retained
  FROM pg_replication_slots
 ORDER BY 1"""
)


def long_transactions_query(regclass: str, lock_timeout: timedelta) -> Query:
    """Client sessions of this database inside a transaction older than lock_timeout: any of
    them holding a lock on the table makes every strong-lock attempt of the migration time out
    (and queue the application's queries behind it for up to lock_timeout each time).
    Background workers are left out (autovacuum gives way to a lock request)."""
    return sql.SQL(
        """SELECT a.pid,
       round(extract(epoch FROM clock_timestamp() - a.xact_start)::numeric, 1)::float8
         AS age_seconds,
       a.state,
       a.application_name,
       EXISTS (SELECT 1 FROM pg_locks l
                WHERE l.pid = a.pid AND l.granted AND l.locktype = 'relation'
                  AND l.relation = {table}::regclass) AS locks_table,
       left(regexp_replace(a.query, '[[:space:]]+', ' ', 'g'), 80) AS query
  FROM pg_stat_activity a
 WHERE a.datname = current_database()
   AND a.pid <> pg_backend_pid()
   AND a.backend_type = 'client backend'
   AND a.xact_start < clock_timestamp() - {timeout}::interval
 ORDER BY a.xact_start"""
    ).format(
        table=sql.Literal(regclass),
        timeout=sql.Literal(f"{to_ms(lock_timeout)} milliseconds"),
    )


@dataclass(frozen=True)
class Preflight:
    database: str
    server_version: str
    size: dict[str, Any]
    disk: list[dict[str, Any]]
    replicas: list[dict[str, Any]]
    slots: list[dict[str, Any]] | None  # None: not readable here (a standby, or no privilege)
    long_transactions: list[dict[str, Any]]
    queries: dict[str, Query]


def _rows(conn: psycopg.Connection[Any], query: Query) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query).fetchall()


def read_preflight(
    conn: psycopg.Connection[Any], compiled: CompiledPlan, lock_timeout: timedelta | None = None
) -> Preflight:
    """Run every pre-flight query now (lock_timeout: the plan's unless given)."""
    regclass = compiled.table.regclass
    timeout = compiled.plan.settings.lock_timeout if lock_timeout is None else lock_timeout
    queries: dict[str, Query] = {
        "size": size_query(regclass),
        "disk": disk_query(compiled),
        "replicas": REPLICAS_QUERY,
        "slots": SLOTS_QUERY,
        "long_transactions": long_transactions_query(regclass, timeout),
    }
    info = _rows(
        conn,
        sql.SQL("SELECT current_database() AS db, current_setting('server_version') AS version"),
    )[0]
    slots: list[dict[str, Any]] | None
    try:
        with conn.transaction():
            slots = _rows(conn, queries["slots"])
    except psycopg.Error:
        slots = None
    return Preflight(
        database=info["db"],
        server_version="PostgreSQL " + str(info["version"]).split(" ")[0],
        size=_rows(conn, queries["size"])[0],
        disk=_rows(conn, queries["disk"]),
        replicas=_rows(conn, queries["replicas"]),
        slots=slots,
        long_transactions=_rows(conn, queries["long_transactions"]),
        queries=queries,
    )


def preflight(
    conn: psycopg.Connection[Any], compiled: CompiledPlan, lock_timeout: timedelta
) -> dict[str, Any]:
    """`migrate plan`'s pre-flight data for `compiled`'s table (each of its tables), read now."""
    if compiled.parts:
        return _several(conn, compiled, lock_timeout)
    pre = read_preflight(conn, compiled, lock_timeout)
    size = pre.size
    # reltuples is -1 for a table never vacuumed or analyzed: unknown, not empty
    rows = int(size["row_estimate"]) if size["row_estimate"] >= 0 else None
    settings = compiled.plan.settings
    return {
        "table": compiled.table.display,
        "table_bytes": int(size["table_bytes"]),
        "total_bytes": int(size["total_bytes"]),
        "rows_estimate": rows,
        "free_disk_needed_bytes": int(next(r["bytes"] for r in pre.disk if r["what"] == "total")),
        # what the figure is made of: the rows' part first, then each rebuilt index
        "free_disk_for": [r["what"] for r in pre.disk if r["what"] != "total"],
        "rebuilt_index_bytes": {
            r["index_name"]: int(r["bytes"]) for r in pre.disk if r["index_name"] is not None
        },
        "replicas": [
            {
                "name": r["replica"],
                "state": r["state"],
                "lag_seconds": _number(r["replay_lag_seconds"]),
                "behind_bytes": r["behind_bytes"],
            }
            for r in pre.replicas
        ],
        "long_transactions": [
            {
                "pid": t["pid"],
                "age_seconds": t["age_seconds"],
                "state": t["state"],
                "application_name": t["application_name"],
                "query": t["query"],
                "holds_table_lock": t["locks_table"],
            }
            for t in pre.long_transactions
        ],
        "lock_timeout_seconds": lock_timeout.total_seconds(),
        "max_replication_lag_seconds": settings.max_replication_lag.total_seconds(),
    }


def _several(
    conn: psycopg.Connection[Any], compiled: CompiledPlan, lock_timeout: timedelta
) -> dict[str, Any]:
    """Each table's figures (under `tables`), and their sums; a long transaction once, holding
    a lock on the tables if it holds one on any."""
    each = [preflight(conn, part, lock_timeout) for part in compiled.parts]
    rows = [d["rows_estimate"] for d in each]
    transactions: dict[int, dict[str, Any]] = {}
    for d in each:
        for t in d["long_transactions"]:
            seen = transactions.setdefault(t["pid"], t)
            seen["holds_table_lock"] = seen["holds_table_lock"] or t["holds_table_lock"]
    keys = ("table", "table_bytes", "total_bytes", "rows_estimate", "free_disk_needed_bytes")
    return {
        **each[0],
        "table": compiled.display,
        "table_bytes": sum(d["table_bytes"] for d in each),
        "total_bytes": sum(d["total_bytes"] for d in each),
        "rows_estimate": None if None in rows else sum(rows),
        "free_disk_needed_bytes": sum(d["free_disk_needed_bytes"] for d in each),
        "free_disk_for": [f"{d['table']}: {w}" for d in each for w in d["free_disk_for"]],
        "rebuilt_index_bytes": {k: v for d in each for k, v in d["rebuilt_index_bytes"].items()},
        "long_transactions": list(transactions.values()),
        "tables": [{k: d[k] for k in (*keys, "free_disk_for")} for d in each],
    }


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


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
    lines = ["pre-flight:"]
    for table in data.get("tables") or [data]:
        rows = table["rows_estimate"]
        lines += [
            f"  table {table['table']}: {_size(table['table_bytes'])}"
            f" ({_size(table['total_bytes'])} with indexes and TOAST),"
            + (f" ~{rows:,} rows" if rows is not None else " row count unknown (never analyzed)"),
            f"  free disk needed: ~{_size(table['free_disk_needed_bytes'])}"
            f" ({'; '.join(table.get('free_disk_for') or ['see the steps'])}; WAL comes on top)",
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
