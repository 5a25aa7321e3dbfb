"""Guarded trigger benchmark: what the dual-write triggers' exception blocks cost a writer.

Since a write the plan cannot map no longer fails the application's statement, every pgshift
trigger computes its values in a PL/pgSQL `BEGIN ... EXCEPTION` block (phases/dual_write.py,
`guarded`): a subtransaction that is never given an ID, but is still entered and left once per
row. This measures that against the body without the block, on the happy path (no value
fails), in a scratch database it creates on the `--dsn` server (or an embedded one with
`--embedded`) and drops afterwards.

For each target, interleaved `--runs` times, each arm on a fresh `accounts` table of `--rows`
rows (the demo's table), `--updates` single-row UPDATEs (`balance = balance + 1` by key, keys
cycling over the table) run in one server-side loop, committing every 1,000, timed as a whole:

- columns: the BEFORE trigger filling `_pgshift_balance` from `balance::bigint` (the shadow
  column in place), with no trigger (none), the body before the guard (unguarded) and
  `forward_body` (guarded);
- new_table: the AFTER trigger upserting into `accounts_v2` (already holding a copy of every
  row), with no trigger, the body before the guard and `copy_body`.

Prints seconds and microseconds per UPDATE for every run, the medians, the ratio guarded /
unguarded of the whole UPDATE and of the trigger's own share (the time above `none`). When the
server runs on this machine, the figures are the CPU time of the backend running the loop (read
from /proc), which a busy machine disturbs far less than the wall clock; else the wall clock.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from common import scratch_database, server, server_arguments  # bench/ is on sys.path
from psycopg import sql

from pgshift.catalog import load_table
from pgshift.compile import compile_plan
from pgshift.demo.seed import create_accounts
from pgshift.engine.state import StateStore
from pgshift.phases.columns_shape import ColumnsShape
from pgshift.phases.dual_write import (
    RowErrorSink,
    _assign,
    copy_trigger,
    forward_body,
    forward_copy,
    function_ddl,
)
from pgshift.phases.table_shape import TableShape
from pgshift.plan.check import check_plan, parse_mappings, probe_new_table
from pgshift.plan.load import load_plan_text

COLUMNS_PLAN = """\
version: 1
name: bench_guard
table: public.accounts
columns:
  balance:
    type: bigint
    up: balance::bigint
phases: [expand, dual_write]
"""

TABLE_PLAN = """\
version: 1
name: bench_guard
table: public.accounts
new_table:
  name: public.accounts_v2
  create: |
    CREATE TABLE public.accounts_v2 (id bigint PRIMARY KEY, balance bigint NOT NULL,
      email text NOT NULL, status text, created_at timestamptz NOT NULL, updated_at timestamptz);
phases: [expand, dual_write]
"""

LOOP = """
DO $bench$ BEGIN
  FOR i IN 1..{updates} LOOP
    UPDATE accounts SET balance = balance + 1 WHERE id = 1 + i % {rows};
    IF i % 1000 = 0 THEN COMMIT; END IF;
  END LOOP;
END $bench$
"""


def unguarded_copy_body(
    target: sql.Identifier, mapping: dict[str, str], key: tuple[str, ...], overriding: bool
) -> str:
    """The new_table copy body as it was before the guard: the key compared and the row
    upserted with the expressions evaluated inline."""

    def select(row: str, exprs: list[str]) -> str:
        return f"(SELECT {', '.join(exprs)} FROM (SELECT {row}.*) AS r)"

    key_exprs = [mapping[k] for k in key]
    key_cols = ", ".join(sql.Identifier(k).as_string() for k in key)
    others = [c for c in mapping if c not in key]
    action = "DO UPDATE SET " + ", ".join(
        f"{sql.Identifier(c).as_string()} = EXCLUDED.{sql.Identifier(c).as_string()}"
        for c in others
    )
    table = target.as_string()
    old_key = select("OLD", [f"ROW({', '.join(key_exprs)})"])
    new_key = select("NEW", [f"ROW({', '.join(key_exprs)})"])
    return (
        "#variable_conflict use_column\nBEGIN\n"
        f"  IF TG_OP = 'TRUNCATE' THEN\n    TRUNCATE {table};\n    RETURN NULL;\n  END IF;\n"
        f"  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND {old_key} IS DISTINCT FROM {new_key}) THEN\n"
        f"    DELETE FROM {table} WHERE ({key_cols}) = {select('OLD', key_exprs)};\n"
        "  END IF;\n"
        "  IF TG_OP <> 'DELETE' THEN\n"
        f"    INSERT INTO {table} ({', '.join(sql.Identifier(c).as_string() for c in mapping)})"
        f"{' OVERRIDING SYSTEM VALUE' if overriding else ''}\n"
        f"      SELECT {', '.join(mapping.values())} FROM (SELECT NEW.*) AS r\n"
        f"      ON CONFLICT ({key_cols}) {action};\n"
        "  END IF;\n  RETURN NULL;\nEND"
    )


def columns_arm(conn: psycopg.Connection[Any], rows: int, arm: str) -> None:
    """A fresh table with its shadow column (filled) and the trigger of `arm`."""
    create_accounts(conn, rows, replace=True)
    plan = load_plan_text(COLUMNS_PLAN, "bench.yaml").plan
    table = load_table(conn, plan.table)
    compiled = compile_plan(plan, table, check_plan(conn, plan, table), "pgshift", None)
    shape: ColumnsShape = compiled.context.shape
    conn.execute("ALTER TABLE accounts ADD COLUMN _pgshift_balance bigint")
    conn.execute("UPDATE accounts SET _pgshift_balance = balance")
    if arm == "none":
        return
    if arm == "guarded":
        body = forward_body(shape, errors=RowErrorSink.of(compiled.context))
    else:
        assign = _assign([(c.shadow, c.up) for c in shape.columns])
        body = "#variable_conflict use_column\nBEGIN\n" + assign + "  RETURN NEW;\nEND"
    conn.execute(
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier("pgshift_bench_guard"))
    )
    conn.execute(function_ddl(shape, body))
    conn.execute(
        sql.SQL(
            "CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON accounts FOR EACH ROW"
            " WHEN (current_setting('pgshift.backfill', true) IS DISTINCT FROM 'on')"
            " EXECUTE FUNCTION {}()"
        ).format(sql.Identifier(shape.trigger), shape.function)
    )


def table_arm(conn: psycopg.Connection[Any], rows: int, arm: str) -> None:
    """A fresh table, the new table holding a copy of every row, and the trigger of `arm`."""
    create_accounts(conn, rows, replace=True)
    conn.execute("DROP TABLE IF EXISTS accounts_v2")
    plan = load_plan_text(TABLE_PLAN, "bench.yaml").plan
    table = load_table(conn, plan.table)
    key = check_plan(conn, plan, table)
    parse_mappings(plan)
    new = probe_new_table(conn, plan, table)
    assert plan.new_table is not None
    conn.execute(plan.new_table.create)
    conn.execute(
        "INSERT INTO accounts_v2 SELECT id, balance, email, status, created_at, updated_at FROM accounts"
    )
    compiled = compile_plan(plan, table, key, "pgshift", new)
    shape: TableShape = compiled.context.shape
    if arm == "none":
        return
    conn.execute(
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier("pgshift_bench_guard"))
    )
    if arm == "guarded":
        statements = forward_copy(shape, errors=RowErrorSink.of(compiled.context))
    else:
        body = unguarded_copy_body(
            shape.new.qualified, shape.forward, shape.new_key, shape.overriding
        )
        statements = copy_trigger(
            shape.forward_function, body, shape.forward_trigger, shape.old.qualified
        )
    for statement in statements:
        conn.execute(statement)


def backend_cpu(conn: psycopg.Connection[Any]) -> float | None:
    """CPU seconds (user + system) of this connection's backend, when it runs on this machine."""
    stat = Path("/proc") / str(conn.info.backend_pid) / "stat"
    host = conn.info.host
    if not (host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")):
        return None
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(conn: psycopg.Connection[Any], rows: int, updates: int) -> float:
    """The loop's cost: the backend's CPU seconds when readable, else the wall clock."""
    conn.execute("VACUUM ANALYZE accounts")
    conn.execute("CHECKPOINT")
    conn.execute("SET synchronous_commit = off")
    cpu = backend_cpu(conn)
    started = time.perf_counter()
    conn.execute(LOOP.format(updates=updates, rows=rows))
    wall = time.perf_counter() - started
    after = backend_cpu(conn)
    return after - cpu if cpu is not None and after is not None else wall


def bench(
    dsn: str,
    name: str,
    arm_setup: Callable[[psycopg.Connection[Any], int, str], None],
    args: argparse.Namespace,
) -> None:
    arms = ("none", "unguarded", "guarded")
    seconds: dict[str, list[float]] = {a: [] for a in arms}
    with psycopg.connect(dsn, autocommit=True) as conn:
        StateStore("pgshift").ensure_schema(conn)  # record_row_error, which the guarded body names
        for run in range(1, args.runs + 1):
            for arm in arms if run % 2 else reversed(arms):  # drift hits every arm alike
                arm_setup(conn, args.rows, arm)
                took = timed(conn, args.rows, args.updates)
                seconds[arm].append(took)
                print(
                    f"{name:9} run {run} {arm:9} {took:7.2f} s"
                    f" {took / args.updates * 1e6:7.1f} us/update"
                )
    median = {a: statistics.median(v) for a, v in seconds.items()}
    whole = median["guarded"] / median["unguarded"]
    share = (median["guarded"] - median["none"]) / (median["unguarded"] - median["none"])
    print(
        f"{name:9} median: none {median['none']:.2f} s, unguarded {median['unguarded']:.2f} s,"
        f" guarded {median['guarded']:.2f} s; guarded/unguarded {whole:.3f} per UPDATE,"
        f" {share:.3f} of the trigger's own time"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    server_arguments(parser)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with server(args) as dsn, scratch_database(dsn, "guard") as db:
        with psycopg.connect(db, autocommit=True) as conn:
            print(conn.execute("SELECT version()").fetchone()[0])  # type: ignore[index]
        bench(db, "columns", columns_arm, args)
        bench(db, "new_table", table_arm, args)


if __name__ == "__main__":
    main()
