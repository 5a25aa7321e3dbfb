"""`migrate verify` loads what verifying needs and not the other commands' code: no linter
(the `lint` command is imported only when it runs), no move engine for a plan that moves
nothing, no backfill or data-check engine; and it compares with the garbage collector on (it is
off only while the command starts). Start-up is most of a short verify's time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from pgshift.cli import main

PLANS = Path(__file__).resolve().parents[2] / "plans"

# Loaded by `migrate verify` of a plan that moves nothing: none of these, nor any module below.
NOT_LOADED = (
    "pgshift.lint",
    "pgshift.move",
    "pgshift.engine.backfill_runner",
    "pgshift.engine.data_check",
)

NO_DATABASE = ("DATABASE_URL", "PGHOST", "PGDATABASE", "PGSERVICE")

# Runs the command in a new interpreter and stops it where it first connects: the modules
# loaded by then are all the command loads before it talks to the database.
PROBE = """
import gc, json, sys
import psycopg
from click.testing import CliRunner
from pgshift.cli import main

seen = []

def connect(*args, **kwargs):
    seen.append({"modules": sorted(sys.modules), "gc": gc.isenabled()})
    raise psycopg.OperationalError("connection refused by the test")

psycopg.connect = connect
result = CliRunner().invoke(main, sys.argv[1:])
print(json.dumps({"code": result.exit_code, "seen": seen[0] if seen else None}))
"""


def loaded_before_connecting(*args: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k not in NO_DATABASE}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "--dsn", "postgresql://pgshift@localhost/probe", *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    data = json.loads(done.stdout.strip().splitlines()[-1])
    assert data["seen"] is not None, f"the command never connected: {done.stdout}"
    assert data["code"] == 1  # the refused connection, reported as such
    assert data["seen"]["gc"], "the command connects with the garbage collector off"
    return set(data["seen"]["modules"])


def unwanted(modules: set[str]) -> set[str]:
    return {m for m in modules for n in NOT_LOADED if m == n or m.startswith(n + ".")}


def test_verify_of_a_columns_plan_loads_no_other_commands_code() -> None:
    modules = loaded_before_connecting("verify", str(PLANS / "widen_account_balance.yaml"))
    assert {"psycopg", "pgshift.engine.executor", "pgshift.verify.rowhash"} <= modules
    assert not unwanted(modules), sorted(unwanted(modules))


def test_verify_of_a_new_table_plan_loads_no_other_commands_code() -> None:
    modules = loaded_before_connecting(
        "--log-format", "json", "verify", str(PLANS / "accounts_bigint_key.yaml"), "--json"
    )
    assert "pgshift.engine.executor" in modules
    assert not unwanted(modules), sorted(unwanted(modules))


def test_verify_of_a_move_loads_the_move_engine() -> None:
    modules = loaded_before_connecting(
        "--destination-dsn",
        "postgresql://pgshift@localhost/probe_destination",
        "verify",
        str(PLANS / "move_accounts.yaml"),
    )
    assert "pgshift.move.executor" in modules


def test_lint_is_still_a_command() -> None:
    listing = CliRunner().invoke(main, ["--help"])
    assert listing.exit_code == 0 and "\n  lint " in listing.output
    usage = CliRunner().invoke(main, ["lint", "--help"])
    assert usage.exit_code == 0 and "DDL safety rules" in usage.output
