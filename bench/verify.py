"""Verify benchmark: pgshift's chunked row-hash comparison against reladiff and one statement.

Builds two tables of `--rows` rows (bigint key; text with non-ASCII, numeric, float8,
timestamptz, boolean, jsonb, uuid) in a scratch database it creates on the `--dsn` server and
drops afterwards, plants 10 differences, then runs, interleaved `--runs` times:

- floor: `sum(hashtextextended(t::text, 0)::numeric)` over each whole table, both in ONE
  statement: the cheapest exact-enough hash of every row, one scan per side and nothing else;
- baseline: the same single statement with pgshift's own per-row hash (values of some types
  hashed as they are, the rest rendered as text);
- join: one full outer join on the key comparing row hashes, the single statement that also
  names the differing keys (`--join` adds it, for context);
- reladiff: reladiff's hashdiff (`diff_tables(..., algorithm="hashdiff")`, its defaults), when
  the `reladiff` package can be imported: install it in a virtualenv of its own and point
  `--reladiff-path` (or $PGSHIFT_BENCH_RELADIFF_PATH) at that virtualenv's site-packages;
- pgshift w1 / w2: `compare_same_db` with its defaults, 1 and 2 workers (`--text-arm` adds w1
  with every value rendered as text, as before values of some types were hashed as they are;
  `--big-chunk-arm` adds w1 with chunks of 100,000 keys);
- migrate verify: the whole command, a new process (`migrate verify PLAN --json`) on a
  `new_table` migration of `a` applied up to its backfill, with the same 10 differences planted
  in the new table (`--no-cli` skips it; its set-up adds a backfill to the build). Its
  processes find Python's bytecode cached in a folder of the run, as an installed package has
  it (else, with PYTHONDONTWRITEBYTECODE set and no bytecode beside the sources, every start
  would compile pgshift's modules again); one untimed run writes it. `--cli-w2-arm` adds the
  command with `--workers 2`; `--other-command CMD` adds the command run by CMD instead of
  `migrate` (e.g. `env PYTHONPATH=/other/checkout/src python -m pgshift.cli`: another version
  in the same session).

With `--gap N`, both tables lose the keys of a gap of N rows in the middle (the issue's pair:
`--rows 1000000 --gap 300000`, 700,000 rows per side). It prints each arm's median, its rows/s
(rows of both tables per second), reladiff's time over each, and then where pgshift's time goes:
the server's per-row work (scan, rendering the row's text, hashing it) on one side in one
process, the comparison's own phases (walk, bucket aggregates per side, bisection and row
fetches, example values) from one instrumented run, and the command's start-up, catalog and
plan compile (the whole command less its comparison).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from common import scratch_database, server, server_arguments  # bench/ is on sys.path
from psycopg import sql

from pgshift import db
from pgshift.verify import reader
from pgshift.verify.rowhash import Side, VerifyResult, compare_same_db
from pgshift.verify.side import RENDERED, SideQueries, binary_types

COLUMNS = ["name", "amount", "ratio", "created", "active", "doc", "ref"]

CREATE = """
CREATE TABLE {table} (
    id bigint PRIMARY KEY, name text, amount numeric(12,2), ratio float8,
    created timestamptz, active boolean, doc jsonb, ref uuid
)"""

FILL = """
INSERT INTO {table}
SELECT g,
       'name-' || g || CASE WHEN g %% 7 = 0 THEN ' été ✓' ELSE '' END,
       (g %% 100000) / 100.0,
       g / 3.0,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1.000001 second',
       g %% 2 = 0,
       jsonb_build_object('n', g, 'tag', 't' || (g %% 10), 'nested', jsonb_build_array(g, NULL)),
       md5(g::text)::uuid
FROM generate_series(1, %s) AS g"""

# 2 missing, 2 extra, 6 changed (each in a different column), at keys that exist for any --rows
# from 100 on.
PLANT = [
    "DELETE FROM {t} WHERE id IN (17, {mid})",
    "INSERT INTO {t} (id, name) VALUES ({rows} + 5, 'extra'), (0, 'extra')",
    "UPDATE {t} SET amount = amount + 0.01 WHERE id = {rows} / 10",
    "UPDATE {t} SET name = name || ' ' WHERE id = {mid} + 1",
    "UPDATE {t} SET ratio = -ratio WHERE id = {rows} - 3",
    "UPDATE {t} SET created = created + interval '1 microsecond' WHERE id = {rows} / 5 + 2",
    "UPDATE {t} SET doc = doc || '{{\"x\": 1}}' WHERE id = {rows} / 4 + 1",
    "UPDATE {t} SET active = NULL WHERE id = {rows} / 3 + 3",
]
PLANTED = {"missing": 2, "extra": 2, "changed": 6}

# `migrate verify`'s migration: a copy of `a` into `a_v2`, the same columns.
PLAN = """version: 1
name: verify_bench
table: public.a
new_table:
  name: public.a_v2
  create: |
    CREATE TABLE public.a_v2 (
      id bigint PRIMARY KEY, name text, amount numeric(12,2), ratio float8,
      created timestamptz, active boolean, doc jsonb, ref uuid
    );
phases: [expand, dual_write, backfill, verify]
"""


def plant(conn: psycopg.Connection[Any], table: str, rows: int) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL pgshift.backfill = 'on'")  # around a copy trigger, if any
        for statement in PLANT:
            conn.execute(statement.format(t=table, rows=rows, mid=rows // 2))


def build(conn: psycopg.Connection[Any], rows: int, gap: int = 0) -> None:
    for table in ("a", "b"):
        conn.execute(sql.SQL(CREATE).format(table=sql.Identifier(table)))
    conn.execute(sql.SQL(FILL).format(table=sql.Identifier("a")), [rows])
    if gap:
        # A gap of keys in the middle, clear of the planted keys (they sit at rows/10 .. rows/2+1
        # and near both ends).
        start = rows // 2 + 10
        conn.execute("DELETE FROM a WHERE id > %s AND id <= %s", [start, start + gap])
    conn.execute("INSERT INTO b SELECT * FROM a")
    plant(conn, "b", rows)
    conn.execute("VACUUM ANALYZE a")
    conn.execute("VACUUM ANALYZE b")


MIGRATE = [str(Path(sys.executable).with_name("migrate"))]


def migrate(
    dsn: str,
    *args: str,
    program: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(program or MIGRATE), "--dsn", dsn, "--log-format", "json", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def cached_bytecode(folder: str) -> dict[str, str]:
    """The environment with Python's bytecode written to and read from `folder`: from the
    second start on, no module is compiled from source, as with an installed package."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = folder
    return env


def build_migration(conn: psycopg.Connection[Any], dsn: str, plan: str, rows: int) -> None:
    """`a` copied into `a_v2` by a new_table migration up to its backfill, then the same
    differences planted in `a_v2` as in `b`."""
    done = migrate(dsn, "apply", "--until", "backfill", plan)
    if done.returncode != 0:
        raise SystemExit(f"migrate apply failed:\n{done.stdout}{done.stderr}")
    plant(conn, "a_v2", rows)
    conn.execute("VACUUM ANALYZE a_v2")


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = run()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    server_arguments(parser)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=100_000)
    parser.add_argument("--gap", type=int, default=0, help="keys missing from both tables")
    parser.add_argument("--join", action="store_true", help="add the full outer join arm")
    parser.add_argument("--no-cli", action="store_true", help="skip the `migrate verify` arms")
    parser.add_argument(
        "--cli-w2-arm", action="store_true", help="add `migrate verify --workers 2`"
    )
    parser.add_argument(
        "--other-command",
        help="add `migrate verify` run by this command instead of `migrate` (another version)",
    )
    parser.add_argument(
        "--big-chunk-arm",
        action="store_true",
        help="add pgshift w1 with chunks of 100,000 keys",
    )
    parser.add_argument(
        "--text-arm",
        action="store_true",
        help="add pgshift w1 with every value rendered as text (no value hashed as it is)",
    )
    parser.add_argument("--no-reladiff", action="store_true", help="skip reladiff's hashdiff")
    parser.add_argument(
        "--reladiff-path",
        default=os.environ.get("PGSHIFT_BENCH_RELADIFF_PATH"),
        help="a site-packages folder holding reladiff (and psycopg2)",
    )
    args = parser.parse_args()

    with (
        server(args) as server_dsn,
        scratch_database(server_dsn, "verify") as dsn,
        db.connect(dsn, role="bench") as conn,
        tempfile.TemporaryDirectory(prefix="pgshift-bench-") as folder,
    ):
        row = conn.execute("SHOW server_version").fetchone()
        version = row[0] if row else "?"
        started = time.perf_counter()
        build(conn, args.rows, args.gap)
        plan = str(Path(folder) / "verify_bench.yaml")
        Path(plan).write_text(PLAN)
        if not args.no_cli:
            build_migration(conn, dsn, plan, args.rows)
        print(
            f"verify bench: PostgreSQL {version}, {args.rows - args.gap:,} rows per table, "
            f"built in {time.perf_counter() - started:.1f} s, {os.cpu_count()} CPUs"
        )
        run_bench(conn, args, dsn, plan, str(Path(folder) / "bytecode"))


def reladiff_arm(dsn: str, path: str | None) -> Callable[[], dict[str, int]] | None:
    """reladiff's hashdiff of a and b, if the package can be imported: the counts it finds."""
    if path:
        sys.path.append(path)
    try:
        import reladiff  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    # psycopg2's connection keywords (a socket folder as host too, as the embedded server has)
    database = {"driver": "postgresql", **psycopg.conninfo.conninfo_to_dict(dsn)}

    def run() -> dict[str, int]:
        a = reladiff.connect_to_table(database, "a", "id", extra_columns=tuple(COLUMNS))
        b = reladiff.connect_to_table(database, "b", "id", extra_columns=tuple(COLUMNS))
        found = {"-": 0, "+": 0}
        for sign, _ in reladiff.diff_tables(a, b, algorithm="hashdiff", skip_sort_results=True):
            found[sign] += 1
        # A changed row comes out as one '-' and one '+'.
        changed = PLANTED["changed"]
        return {"missing": found["-"] - changed, "extra": found["+"] - changed, "changed": changed}

    return run


def cli_arm(
    dsn: str,
    plan: str,
    chunk_size: int,
    *more: str,
    program: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Callable[[], dict[str, Any]]:
    """`migrate verify PLAN --json` as a new process: what it found and its own seconds."""

    def run() -> dict[str, Any]:
        done = migrate(
            dsn,
            "verify",
            plan,
            "--json",
            "--chunk-size",
            str(chunk_size),
            *more,
            program=program,
            env=env,
        )
        if done.returncode != 4:  # 4: differences found, as planted
            raise SystemExit(f"migrate verify exited {done.returncode}:\n{done.stderr}")
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    return run


def command_arms(
    args: argparse.Namespace, dsn: str, plan: str, env: dict[str, str]
) -> dict[str, Callable[[], dict[str, Any]]]:
    """The `migrate verify` arms by name, each run once to write the bytecode it then reads."""
    if args.no_cli:
        return {}
    arms = {"migrate verify": cli_arm(dsn, plan, args.chunk_size, env=env)}
    if args.cli_w2_arm:
        arms["migrate verify w2"] = cli_arm(dsn, plan, args.chunk_size, "--workers", "2", env=env)
    if args.other_command:
        program = shlex.split(args.other_command)
        arms["other migrate verify"] = cli_arm(dsn, plan, args.chunk_size, program=program, env=env)
    for run in arms.values():
        run()
    return arms


def run_bench(
    conn: psycopg.Connection[Any], args: argparse.Namespace, dsn: str, plan: str, bytecode: str
) -> None:
    left = Side(sql.Identifier("a"), ["id"], COLUMNS)
    right = Side(sql.Identifier("b"), ["id"], COLUMNS)
    # pgshift's own row hash (values of some types hashed as they are, the rest rendered)
    binary = binary_types(
        reader.Reader(conn, left, "hashtext").value_types(),
        reader.Reader(conn, right, "hashtext").value_types(),
    )
    hash_a = SideQueries(left, "hashtext", binary).row_hash
    hash_b = SideQueries(right, "hashtext", binary).row_hash
    baseline = sql.SQL(
        "SELECT * FROM (SELECT count(*), sum({ha}) FROM a) AS l, "
        "(SELECT count(*), sum({hb}) FROM b) AS r"
    ).format(ha=hash_a, hb=hash_b)
    floor = sql.SQL(
        "SELECT * FROM (SELECT count(*), sum(hashtextextended(a::text, 0)::numeric) FROM a) AS l, "
        "(SELECT count(*), sum(hashtextextended(b::text, 0)::numeric) FROM b) AS r"
    )
    join = sql.SQL(
        "SELECT count(*) FILTER (WHERE r.id IS NULL), count(*) FILTER (WHERE l.id IS NULL), "
        "count(*) FILTER (WHERE l.h <> r.h) "
        "FROM (SELECT id, {ha} AS h FROM a) AS l FULL JOIN (SELECT id, {hb} AS h FROM b) AS r "
        "ON l.id = r.id"
    ).format(ha=hash_a, hb=hash_b)
    total = sum(
        row[0] for row in conn.execute("SELECT count(*) FROM a UNION ALL SELECT count(*) FROM b")
    )

    rela = None if args.no_reladiff else reladiff_arm(dsn, args.reladiff_path)
    if rela is None and not args.no_reladiff:
        print("reladiff is not importable: its arm is skipped (see --reladiff-path)")
    env = cached_bytecode(bytecode)
    commands = command_arms(args, dsn, plan, env)
    times: dict[str, list[float]] = collections.defaultdict(list)
    inside: dict[str, list[float]] = collections.defaultdict(list)  # the comparison alone

    def pgshift(workers: int, binary_values: bool = True) -> VerifyResult:
        return compare_same_db(
            conn,
            left,
            right,
            chunk_size=args.chunk_size,
            workers=workers,
            binary_values=binary_values,
        )

    for run in range(1, args.runs + 1):
        seconds, _ = timed(lambda: conn.execute(floor).fetchall())
        times["floor"].append(seconds)
        seconds, _ = timed(lambda: conn.execute(baseline).fetchall())
        times["baseline"].append(seconds)
        if rela is not None:
            seconds, found = timed(rela)
            times["reladiff"].append(seconds)
            if found != PLANTED:
                raise SystemExit(f"reladiff found {found}, planted {PLANTED}")
        if args.join:
            seconds, counts = timed(lambda: conn.execute(join).fetchone())
            times["join"].append(seconds)
            if tuple(counts) != tuple(PLANTED.values()):
                raise SystemExit(f"the join found {counts}, planted {PLANTED}")
        for workers in (1, 2):
            seconds, result = timed(lambda: pgshift(workers))  # noqa: B023 (called at once)
            times[f"pgshift w{workers}"].append(seconds)
            check(result)
        if args.big_chunk_arm:
            seconds, result = timed(
                lambda: compare_same_db(conn, left, right, chunk_size=100_000, workers=1)
            )
            times["pgshift w1 c100k"].append(seconds)
            check(result)
        if args.text_arm:
            seconds, result = timed(lambda: pgshift(1, binary_values=False))
            times["pgshift w1 text"].append(seconds)
            check(result)
        for name, command in commands.items():
            seconds, report = timed(command)
            times[name].append(seconds)
            inside[name].append(float(report["seconds"]))  # the command's own `seconds`
            if report["differences"] != PLANTED:
                raise SystemExit(f"{name} found {report['differences']}")
        line = "  ".join(f"{name} {values[-1]:5.2f} s" for name, values in times.items())
        print(f"run {run}: {line}")

    medians = {name: statistics.median(values) for name, values in times.items()}
    print()
    for name, seconds in medians.items():
        versus = ""
        if "reladiff" in medians:
            versus = f"  reladiff/this {medians['reladiff'] / seconds:5.1f}x"
        print(f"median {name:31} {seconds:6.2f} s {total / seconds:11,.0f} rows/s{versus}")
    print(f"pgshift w1 speed / floor:    {medians['floor'] / medians['pgshift w1']:.2f}")
    print(f"pgshift w1 speed / baseline: {medians['baseline'] / medians['pgshift w1']:.2f}")
    print(f"pgshift w2 time / w1:        {medians['pgshift w2'] / medians['pgshift w1']:.2f}")
    if "reladiff" in medians:
        for name in ("pgshift w1", "pgshift w2", *commands):
            if name in medians:
                print(f"{name} is {medians['reladiff'] / medians[name]:.1f}x faster than reladiff")
    print()
    breakdown(conn, left, right, args.chunk_size, total)
    imports = startup(env) if commands else 0.0
    for name in commands:
        whole, comparison = medians[name], statistics.median(inside[name])
        of_which = "" if name.startswith("other") else f" (imports {imports:.2f} s)"
        print(
            f"{name} (medians): whole command {whole:.2f} s = comparison {comparison:.2f} s"
            f" + start-up, catalog and plan compile {whole - comparison:.2f} s{of_which}"
        )


# What `migrate verify` imports before it connects, as it imports them: without the cyclic
# garbage collector, then everything loaded frozen (gc.freeze).
IMPORTS = (
    "import gc; gc.disable(); import pgshift.cli, pgshift.engine.executor, pgshift.engine.progress;"
    " gc.enable(); gc.freeze()"
)


def startup(env: dict[str, str] | None = None) -> float:
    """Median seconds of a new interpreter importing the CLI, as `migrate` does on start."""
    runs = [
        timed(lambda: subprocess.run([sys.executable, "-c", IMPORTS], check=True, env=env))[0]
        for _ in range(5)
    ]
    return statistics.median(runs)


def backend_cpu(conn: psycopg.Connection[Any]) -> Callable[[], float | None]:
    """The CPU seconds the connection's server process has used so far, where that process
    runs on this machine (else None): on a busy machine it moves less than the wall clock."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    stat = Path(f"/proc/{row[0] if row else 0}/stat")

    def read() -> float | None:
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return read


def breakdown(
    conn: psycopg.Connection[Any], left: Side, right: Side, chunk_size: int, total: int
) -> None:
    """Where the time goes: the server's per-row work on one side, then one instrumented run."""
    values = sql.SQL(", ").join(map(sql.Identifier, ["id", *COLUMNS]))
    binary = binary_types(
        reader.Reader(conn, left, "hashtext").value_types(),
        reader.Reader(conn, right, "hashtext").value_types(),
    )
    steps: dict[str, sql.Composed] = {
        "scan (count)": sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("a")),
        "+ render the row's text": sql.SQL("SELECT sum(length(ROW({})::text)) FROM a").format(
            values
        ),
        "+ hash it (the text row hash)": sql.SQL("SELECT sum({}) FROM a").format(
            SideQueries(left).row_hash
        ),
        "the row hash verify uses": sql.SQL("SELECT sum({}) FROM a").format(
            SideQueries(left, "hashtext", binary).row_hash
        ),
    }
    rendered = [name for name, how in zip(["id", *COLUMNS], binary, strict=True) if how == RENDERED]
    print(
        "server work on one side (a), one process, no parallel workers, wall and server CPU"
        f" seconds (verify renders {', '.join(rendered) or 'nothing'} as text, and hashes the"
        " rest as it is):"
    )
    cpu = backend_cpu(conn)
    with conn.transaction():
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        for name, query in steps.items():
            before = cpu()
            seconds, _ = timed(lambda: conn.execute(query).fetchall())  # noqa: B023
            after = cpu()
            used = "" if before is None or after is None else f" {after - before:6.2f} s CPU"
            print(f"  {name:32} {seconds:6.2f} s{used}")

    spent: dict[str, float] = collections.defaultdict(float)
    with instrumented(spent):
        seconds, result = timed(
            lambda: compare_same_db(conn, left, right, chunk_size=chunk_size, workers=1)
        )
    check(result)
    print(
        f"one instrumented run of pgshift w1: {seconds:.2f} s, {result.chunks} chunks"
        f" ({total:,} rows); seconds spent in (the two sides run side by side):"
    )
    for name, value in sorted(spent.items()):
        print(f"  {name:40} {value:6.2f} s")


@contextmanager
def instrumented(spent: dict[str, float]) -> Iterator[None]:
    """Time spent in each of the reader's calls, by call and side."""
    names = {
        "walk": "walk the left keys (coordinator)",
        "buckets": "bucket aggregates",
        "aggregate": "bisection aggregates",
        "nth_key": "bisection split keys",
        "hashes": "leaf rows (key, hash)",
        "details": "example values",
        "check_key": "NULL key check",
        "key_types": "key types",
    }
    originals = {name: getattr(reader.Reader, name) for name in names}

    def wrap(name: str) -> Callable[..., Any]:
        original = originals[name]

        def timed_call(self: reader.Reader, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                side = self.side.source.as_string(None)
                spent[f"{names[name]}, {side}"] += time.perf_counter() - started

        return timed_call

    for name in names:
        setattr(reader.Reader, name, wrap(name))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(reader.Reader, name, original)


def check(result: VerifyResult) -> None:
    found = {"missing": result.missing, "extra": result.extra, "changed": result.changed}
    if found != PLANTED:
        raise SystemExit(f"pgshift found {found}, planted {PLANTED}")


if __name__ == "__main__":
    main()
