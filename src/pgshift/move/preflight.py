"""The pre-flight checks of a move, on both servers: `migrate plan` and the runbook show them,
and `migrate apply` runs them before anything is applied and refuses to start while any of
them refuses.

What each looks at: server versions, `wal_level`, free replication slots and WAL senders (the
copy takes one slot per table being copied at once, besides the subscription's own), keys (or
REPLICA IDENTITY) and what cannot come (unlogged and partitioned tables, large objects, foreign
keys to tables that stay), `max_slot_wal_keep_size`, long transactions (the slot waits for
them), the roles and extensions the tables need on the destination, the privileges both
subscriptions need, tables already on the destination, an estimate of the disk needed, and at
last the moved schema itself, run on the destination in a transaction that is rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from pgshift.errors import MigrationFailed
from pgshift.move.catalog import MoveSource
from pgshift.move.steps import CompiledMove
from pgshift.phases.base import SqlStep

Connection = psycopg.Connection[Any]
Status = Literal["ok", "warning", "refused", "skipped"]
MIN_SOURCE = 11  # EXECUTE FUNCTION in the fence triggers
MIN_DESTINATION = 14  # pg_stat_progress_copy, for the copy's progress


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail}


def _one(conn: Connection, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{n} bytes"


def run_preflight(
    src: Connection, dst: Connection | None, compiled: CompiledMove, source: MoveSource
) -> list[Check]:
    checks: list[Check] = []
    add = checks.append
    src_major = src.info.server_version // 10000
    dst_major = dst.info.server_version // 10000 if dst is not None else None

    # versions
    if src_major < MIN_SOURCE:
        add(
            Check(
                "versions",
                "refused",
                f"the source runs PostgreSQL {src_major}: a move needs {MIN_SOURCE} or newer",
            )
        )
    elif dst_major is None:
        add(
            Check(
                "versions",
                "skipped",
                f"source PostgreSQL {src_major}; the destination is not known",
            )
        )
    elif dst_major < MIN_DESTINATION:
        add(
            Check(
                "versions",
                "refused",
                f"the destination runs PostgreSQL {dst_major}: a move needs {MIN_DESTINATION} or "
                "newer there",
            )
        )
    elif dst_major < src_major:
        add(
            Check(
                "versions",
                "refused",
                f"the destination runs PostgreSQL {dst_major}, older than the source's "
                f"{src_major}: move to the same major or a newer one",
            )
        )
    else:
        add(Check("versions", "ok", f"PostgreSQL {src_major} to {dst_major}"))

    # wal_level on both sides (the destination publishes after cutover)
    for conn, where in ((src, "source"), (dst, "destination")):
        if conn is None:
            continue
        level = _one(conn, "SHOW wal_level")
        if level != "logical":
            why = (
                ""
                if where == "source"
                else " (cutover replicates the destination's writes back to the source)"
            )
            add(
                Check(
                    f"wal_level on the {where}",
                    "refused",
                    f"wal_level is {level} on the {where}{why}: set wal_level = logical and "
                    "restart it",
                )
            )
        else:
            add(Check(f"wal_level on the {where}", "ok", "logical"))

    # slots and senders
    tables = len(compiled.tables)
    sync = int(_one(dst, "SHOW max_sync_workers_per_subscription")) if dst is not None else 2
    needed = 1 + min(tables + 1, sync)
    for conn, where, least, want in ((src, "source", 2, needed), (dst, "destination", 1, 1)):
        if conn is None:
            continue
        free_slots = int(
            _one(
                conn,
                "SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM "
                "pg_replication_slots)",
            )
        )
        free_senders = int(
            _one(
                conn,
                "SELECT current_setting('max_wal_senders')::int - (SELECT count(*) FROM "
                "pg_stat_replication)",
            )
        )
        free = min(free_slots, free_senders)
        name = f"replication slots and WAL senders on the {where}"
        text = f"{free_slots} slot(s) and {free_senders} WAL sender(s) free"
        if free < least:
            add(
                Check(
                    name,
                    "refused",
                    f"{text}; the move needs {want}: raise max_replication_slots and "
                    "max_wal_senders (a restart), or drop unused slots",
                )
            )
        elif free < want:
            add(
                Check(
                    name,
                    "warning",
                    f"{text}; with {want} the tables are copied {want - 1} at a time, with fewer "
                    "the copy runs slower",
                )
            )
        else:
            add(Check(name, "ok", f"{text}; the move takes up to {want}"))
    if dst is not None:
        workers = int(_one(dst, "SHOW max_logical_replication_workers"))
        if workers < 2:
            add(
                Check(
                    "logical replication workers on the destination",
                    "refused",
                    f"max_logical_replication_workers is {workers}: the subscription needs 2 or "
                    "more (one applies, one copies); raise it and restart",
                )
            )

    # what cannot come
    for problem in source.problems:
        add(
            Check(
                f"table {problem.table}" if problem.table else "tables", "refused", problem.message
            )
        )
    for warning in source.warnings:
        add(Check("foreign keys", "warning", warning))
    keyless = [t.display for t in compiled.tables if not t.key and t.replica_identity in ("f", "i")]
    if keyless:
        add(
            Check(
                "keys",
                "warning",
                f"{', '.join(keyless)} has no primary key: updates and deletes are applied by a "
                "scan of the table on the destination, and verify cannot compare it",
            )
        )
    elif not source.problems:
        add(Check("keys", "ok", "every table has a primary key"))

    # WAL the slot may keep
    if src_major >= 13:
        keep = _one(src, "SHOW max_slot_wal_keep_size")
        if keep in ("-1", "-1kB", "-1MB"):
            add(
                Check(
                    "max_slot_wal_keep_size on the source",
                    "ok",
                    "unlimited: the slot keeps the WAL the destination still needs; if the "
                    "destination stops, WAL piles up on the source until the move is rolled back "
                    "(watch the lag in `migrate status`)",
                )
            )
        else:
            add(
                Check(
                    "max_slot_wal_keep_size on the source",
                    "warning",
                    f"{keep}: if the destination falls further behind than that (a long copy "
                    "under heavy writes), the source drops the WAL it needs and the move fails; "
                    "raise it (or -1) for the move",
                )
            )

    # long transactions: creating the slot waits for them
    old = src.execute(
        "SELECT pid, extract(epoch FROM now() - xact_start)::int FROM pg_stat_activity"
        " WHERE xact_start < now() - interval '1 minute' AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend' ORDER BY xact_start"
    ).fetchall()
    if old:
        pid, seconds = old[0]
        add(
            Check(
                "long transactions on the source",
                "warning",
                f"{len(old)} transaction(s) open for over a minute (the oldest: pid {pid}, "
                f"{seconds}s): the subscription's slot waits for them to end before the copy "
                "starts",
            )
        )
    else:
        add(Check("long transactions on the source", "ok", "none open for over a minute"))

    # privileges
    checks += _privileges(src, dst, compiled, src_major, dst_major)

    # roles and extensions the destination needs
    if dst is not None:
        checks += _roles_and_extensions(src, dst, compiled)
        there = [
            t.display
            for t in compiled.tables
            if _one(dst, "SELECT to_regclass(%s) IS NOT NULL", (t.ident.as_string(),))
        ]
        if there:
            add(
                Check(
                    "tables on the destination",
                    "refused",
                    f"{', '.join(there)} already exist(s) on the destination: drop them there, or "
                    "move into another database",
                )
            )
        else:
            add(
                Check(
                    "tables on the destination", "ok", "none of the moved tables exists there yet"
                )
            )
        collations = {
            _one(c, "SELECT datcollate FROM pg_database WHERE datname = current_database()")
            for c in (src, dst)
        }
        if len(collations) > 1:
            add(
                Check(
                    "collations",
                    "warning",
                    "the databases' collations differ "
                    f"({', '.join(sorted(map(str, collations)))}): text keys may sort "
                    "differently, and verify then reports their rows as different",
                )
            )

    add(
        Check(
            "disk",
            "ok",
            f"the destination needs about {_bytes(compiled.total_bytes)} for {tables} table(s) "
            f"with their indexes (~{compiled.rows:,} rows); the source keeps the WAL written "
            "during the copy until the destination has it",
        )
    )

    if dst is not None and not any(c.status == "refused" for c in checks):
        checks.append(_dry_run(dst, compiled))
    return checks


def _privileges(
    src: Connection,
    dst: Connection | None,
    compiled: CompiledMove,
    src_major: int,
    dst_major: int | None,
) -> list[Check]:
    out: list[Check] = []
    su, repl = src.execute(
        "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user"
    ).fetchone() or (False, False)
    user = src.info.user
    if not (su or repl):
        out.append(
            Check(
                "replication role on the source",
                "refused",
                f"role {user} has neither REPLICATION nor SUPERUSER on the source, and the "
                "destination's subscription connects as it: ALTER ROLE "
                f"{sql.Identifier(user).as_string()} REPLICATION",
            )
        )
    not_owned = [
        t.display
        for t in compiled.tables
        if not su and not _one(src, "SELECT pg_has_role(current_user, %s, 'USAGE')", (t.owner,))
    ]
    if not_owned:
        out.append(
            Check(
                "ownership on the source",
                "refused",
                f"role {user} does not own {', '.join(not_owned)}: publishing and fencing a table "
                "needs its owner (or a superuser)",
            )
        )
    for conn, where, major in ((dst, "destination", dst_major), (src, "source", src_major)):
        if conn is None or major is None:
            continue
        if not _can_subscribe(conn, major):
            why = (
                "its subscription copies the tables"
                if where == "destination"
                else "cutover subscribes it to the destination, so a rollback keeps the writes made there"
            )
            how = (
                "a superuser"
                if major < 16
                else "a superuser, or a member of pg_create_subscription with CREATE on the database"
            )
            out.append(
                Check(
                    f"subscriptions on the {where}",
                    "refused",
                    f"role {conn.info.user} cannot create subscriptions on the {where} ({why}): "
                    f"it must be {how}",
                )
            )
    if dst is not None:
        dsu, drepl = dst.execute(
            "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user"
        ).fetchone() or (False, False)
        if not (dsu or drepl):
            out.append(
                Check(
                    "replication role on the destination",
                    "refused",
                    f"role {dst.info.user} has neither REPLICATION nor SUPERUSER on the "
                    "destination, and the source subscribes as it after cutover",
                )
            )
    if not out:
        out.append(
            Check(
                "privileges",
                "ok",
                "replication, publications and subscriptions allowed on both sides",
            )
        )
    return out


def _can_subscribe(conn: Connection, major: int) -> bool:
    if _one(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        return True
    if major < 16:
        return False
    return bool(
        _one(
            conn,
            "SELECT pg_has_role(current_user, 'pg_create_subscription', 'USAGE') AND "
            "has_database_privilege(current_database(), 'CREATE')",
        )
    )


def _roles_and_extensions(src: Connection, dst: Connection, compiled: CompiledMove) -> list[Check]:
    out: list[Check] = []
    names = [t.ident.as_string() for t in compiled.tables] + [
        sql.Identifier(*s).as_string() for s in compiled.sequences
    ]
    roles = [
        r[0]
        for r in src.execute(
            "SELECT DISTINCT r FROM ("
            " SELECT pg_get_userbyid(c.relowner) AS r FROM pg_class c WHERE c.oid = "
            "ANY(%(o)s::regclass[])"
            " UNION SELECT pg_get_userbyid(a.grantee) FROM pg_class c, aclexplode(c.relacl) a"
            "  WHERE c.oid = ANY(%(o)s::regclass[]) AND a.grantee <> 0"
            " UNION SELECT pg_get_userbyid(a.grantee) FROM pg_attribute t, aclexplode(t.attacl) a"
            "  WHERE t.attrelid = ANY(%(o)s::regclass[]) AND a.grantee <> 0"
            ") x ORDER BY 1",
            {"o": names},
        ).fetchall()
    ]
    present = {
        r[0]
        for r in dst.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (roles,)
        ).fetchall()
    }
    missing = [r for r in roles if r not in present]
    if missing:
        out.append(
            Check(
                "roles on the destination",
                "refused",
                f"role(s) {', '.join(missing)} (owners or grantees of the moved tables) do not "
                "exist on the destination: create them there first (`pg_dumpall --roles-only` of "
                "the source lists them)",
            )
        )
    else:
        out.append(
            Check(
                "roles on the destination",
                "ok",
                f"{len(roles)} role(s) owning or granted the tables exist there",
            )
        )
    ext_src = {r[0] for r in src.execute("SELECT extname FROM pg_extension").fetchall()}
    ext_dst = {r[0] for r in dst.execute("SELECT extname FROM pg_extension").fetchall()}
    lacking = sorted(ext_src - ext_dst)
    if lacking:
        out.append(
            Check(
                "extensions on the destination",
                "warning",
                f"{', '.join(lacking)} installed on the source only: if a moved table uses one, "
                "the schema check fails (CREATE EXTENSION it on the destination)",
            )
        )
    else:
        out.append(
            Check("extensions on the destination", "ok", "every extension of the source is there")
        )
    return out


def _dry_run(dst: Connection, compiled: CompiledMove) -> Check:
    """Every statement the destination will run for the schema, in one transaction rolled back:
    what PostgreSQL itself refuses (a missing type, function, role...)."""
    expand = next((p for p in compiled.phases if p.kind == "expand"), None)
    statements: list[Any] = []
    if expand is not None:
        for step in expand.forward:
            if isinstance(step, SqlStep) and step.server == "destination":
                statements += list(step.statements)
    statements += [sql.SQL(text) for text in compiled.schema.after_copy]
    current: Any = None
    try:
        with dst.transaction(force_rollback=True):
            dst.execute("SET LOCAL lock_timeout = '5s'")
            for current in statements:
                dst.execute(current)
    except psycopg.Error as error:
        text = " ".join(current.as_string().split()) if current is not None else ""
        message = error.diag.message_primary or str(error).splitlines()[0]
        return Check(
            "schema on the destination",
            "refused",
            f"the destination refuses the moved schema: {message} (in: {text[:100]}); create what "
            "it needs there first",
        )
    return Check(
        "schema on the destination",
        "ok",
        f"{len(statements)} statement(s) tried on the destination and rolled back",
    )


def refuse(checks: list[Check]) -> None:
    refused = [c for c in checks if c.status == "refused"]
    if refused:
        more = (
            f" (and {len(refused) - 1} more: `migrate plan` lists them)" if len(refused) > 1 else ""
        )
        raise MigrationFailed(f"pre-flight: {refused[0].detail}{more}")


def render(checks: list[Check]) -> list[str]:
    mark = {"ok": "ok", "warning": "WARNING", "refused": "REFUSED", "skipped": "skipped"}
    return [f"  [{mark[c.status]}] {c.name}: {c.detail}" for c in checks]


__all__ = ["Check", "refuse", "render", "run_preflight"]
