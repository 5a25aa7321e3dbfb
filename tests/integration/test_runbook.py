"""`migrate runbook`: every step and every rollback in a short list per phase, their exact SQL
in the appendix the steps link to, the point of no return, the Mermaid diagram, pre-flight facts
read from the live database, estimates from a measured run, `-o FILE`, the refusal without a
database, and a one-column runbook short enough to read before its appendix."""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgshift.cli import main
from pgshift.compile import CompiledPlan
from pgshift.db import connect
from pgshift.demo.seed import create_accounts
from pgshift.engine.executor import prepare
from pgshift.engine.state import StateStore
from pgshift.plan.load import load_plan
from pgshift.report.preview import step_sql
from pgshift.report.runbook import APPENDIX, POINT_OF_NO_RETURN
from tests.integration.helpers import PLANS, cli, create_customers, definition, error_line
from tests.integration.replica import find_binaries, streaming_pair

# a move needs a second server: its runbook is tested in test_move.py
PLAN_FILES = sorted(p for p in PLANS.glob("*.yaml") if not p.name.startswith("move_"))
WIDEN = PLANS / "widen_account_balance.yaml"


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    create_accounts(conn, 2000)
    create_customers(conn, 500)  # the table of plans/split_full_name.yaml
    # the tables referencing accounts, of the plans with several tables
    conn.execute(
        "CREATE TABLE transfers (id serial PRIMARY KEY, account_id int NOT NULL"
        " REFERENCES accounts, amount int NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE history (id serial PRIMARY KEY, aid int REFERENCES accounts, note text)"
    )
    conn.execute("INSERT INTO transfers (account_id, amount) SELECT id, 1 FROM accounts")
    conn.execute("INSERT INTO history (aid, note) SELECT id, 'x' FROM accounts WHERE id % 2 = 0")
    conn.execute("ANALYZE transfers, history")
    return conn


def runbook(dsn: str, plan: Path) -> str:
    result = cli(dsn, "runbook", str(plan))
    assert result.exit_code == 0, result.output
    return result.stdout


def compiled(dsn: str, plan: Path) -> CompiledPlan:
    with connect(dsn) as conn:
        return prepare(conn, load_plan(plan), StateStore())[0]


def split_appendix(text: str) -> tuple[str, str]:
    """The runbook before its SQL appendix, and the appendix."""
    before, appendix = text.split(f"## {APPENDIX}\n", 1)
    return before, appendix


def sections(text: str) -> dict[str, str]:
    """Each phase's section by phase name (`## Phase 3 of 5: backfill ...` up to the next, the
    appendix excluded)."""
    parts = re.split(r"^## Phase \d+ of \d+: ", split_appendix(text)[0], flags=re.MULTILINE)[1:]
    return {part.split()[0]: part for part in parts}


def appendix_entry(text: str, anchor: str) -> str:
    """The appendix's entry under `<a id="anchor">`, up to the next anchor."""
    appendix = split_appendix(text)[1]
    marker = f'<a id="{anchor}"></a>'
    assert appendix.count(marker) == 1, anchor
    return appendix.split(marker, 1)[1].split("<a id=", 1)[0]


def heading(section: str) -> str:
    return section.splitlines()[0]


@pytest.mark.parametrize("plan", PLAN_FILES, ids=lambda p: p.stem)
def test_runbook_shows_every_step_rollback_and_the_point_of_no_return(
    dsn: str, accounts: psycopg.Connection[Any], plan: Path
) -> None:
    loaded = load_plan(plan).plan
    tables = [e.table for e in loaded.tables] if loaded.tables else [loaded.table]
    before = [definition(accounts, table) for table in tables]
    text = runbook(dsn, plan)
    assert [definition(accounts, table) for table in tables] == before, (
        "generating a runbook must change nothing"
    )
    assert accounts.execute("SELECT to_regnamespace('pgshift')").fetchone() == (None,)

    compiled_plan = compiled(dsn, plan)
    phases = compiled_plan.phases
    by_phase = sections(text)
    assert list(by_phase) == [p.name for p in phases]
    path = shlex.quote(str(plan))
    for phase in phases:
        section = by_phase[phase.name]
        for number, step in enumerate(phase.forward, start=1):
            if not step_sql(step):
                continue
            anchor = f"sql-{phase.index + 1}-{number}"
            assert f"[{phase.index + 1}.{number}](#{anchor})" in section, (phase.name, number)
            entry = appendix_entry(text, anchor)
            assert "```sql" in entry and "```sql" not in section.split("**Go / no-go:**")[0]
            for statement in step_sql(step):
                assert statement in entry, (phase.name, statement)
        if phase.reversible:
            command = f"migrate rollback {path}"
            if phase.index > 0:
                command += f" --to {phases[phase.index - 1].name}"
            rollback = section.split("**Rollback:**")[1]
            assert rollback.startswith(f" `{command}` undoes"), phase.name
            for number, step in enumerate(phase.rollback, start=1):
                anchor = f"sql-{phase.index + 1}-r{number}"
                assert f"(#{anchor})" in rollback, (phase.name, anchor)
                for statement in step_sql(step):
                    assert statement in appendix_entry(text, anchor)
        assert (POINT_OF_NO_RETURN in heading(section)) == (phase.kind == "contract")
    contract = by_phase["contract"]
    assert "[!CAUTION]" in contract
    assert "migrate rollback" in contract and "refuses" in contract

    mermaid = re.search(r"```mermaid\n(.*?)```", text, flags=re.DOTALL)
    assert mermaid is not None
    diagram = mermaid.group(1)
    assert diagram.startswith("flowchart")
    for phase in phases:
        assert f"{phase.index + 1}. {phase.name}" in diagram
    contract_node = next(line for line in diagram.splitlines() if ". contract" in line)
    assert POINT_OF_NO_RETURN in contract_node
    reversible = [p for p in phases if p.reversible]
    assert diagram.count(".->") == len(reversible)

    reltuples = accounts.execute(
        "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", (tables[0],)
    ).fetchone()
    assert reltuples is not None
    assert f"Row estimate: **{reltuples[0]:,}** rows" in text
    assert "Replicas streaming from this server: **none**." in text
    assert "Transactions open longer than that: **none**." in text
    assert re.search(r"\| total \| \*\*[\d.,]+ (bytes|KiB|MiB)\*\* \|", text)


def test_header_names_the_migration_version_and_plan_hash(
    dsn: str, accounts: psycopg.Connection[Any]
) -> None:
    text = runbook(dsn, WIDEN)
    loaded = load_plan(WIDEN)
    assert text.startswith("# Runbook: widen_account_balance\n")
    assert loaded.plan.description and loaded.plan.description in text
    assert f"hash `{loaded.sha256[:12]}`" in text
    assert "- **Table:** `public.accounts` (key: `id`)" in text
    assert re.search(r"- \*\*Generated:\*\* \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC by pgshift", text)


def test_a_long_transaction_shows_in_the_pre_flight(
    dsn: str, accounts: psycopg.Connection[Any]
) -> None:
    lock_timeout = load_plan(WIDEN).plan.settings.lock_timeout.total_seconds()
    with psycopg.connect(dsn) as holder:  # not autocommit: the SELECT opens a transaction
        pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        holder.execute("SELECT count(*) FROM accounts")
        time.sleep(lock_timeout + 0.5)
        text = runbook(dsn, WIDEN)
        holder.rollback()
    rows = [line for line in text.splitlines() if line.startswith(f"| {pid} |")]
    assert len(rows) == 1, text
    assert "**yes**" in rows[0]  # it holds a lock on the table the cutover needs
    assert "idle in transaction" in rows[0]
    assert "Transactions open longer than that: **none**." not in text


def test_a_streaming_replica_shows_in_the_pre_flight() -> None:
    binaries = find_binaries(os.environ.get("PGSHIFT_TEST_DSN"))
    if isinstance(binaries, str):
        pytest.skip(binaries)
    with streaming_pair(binaries, standby_name="runbook_standby") as pair:
        with psycopg.connect(pair.primary_dsn, autocommit=True) as conn:
            create_accounts(conn, 2000)
        text = runbook(pair.primary_dsn, WIDEN)
    rows = [line for line in text.splitlines() if line.startswith("| `runbook_standby` |")]
    assert len(rows) == 1, text
    assert "| streaming |" in rows[0]
    assert "Replicas streaming from this server: **none**." not in text


def test_backfill_estimate_uses_the_measured_throughput_after_a_run(
    dsn: str, accounts: psycopg.Connection[Any]
) -> None:
    before = sections(runbook(dsn, WIDEN))["backfill"]
    assert "from catalog statistics" in before and "measured throughput" not in before

    applied = cli(dsn, "apply", str(WIDEN), "--until", "backfill")
    assert applied.exit_code == 0, applied.output
    status = json.loads(cli(dsn, "status", "widen_account_balance", "--json").stdout)
    backfill = next(p for p in status["phases"] if p["kind"] == "backfill")

    text = runbook(dsn, WIDEN)
    after = sections(text)["backfill"]
    assert "based on **measured throughput**" in after
    assert f"{backfill['rows']:,} rows in" in after
    assert f"{backfill['rows_per_second']:,.0f} rows/s" in after
    assert "**Status in this database:** `done`" in after
    assert "phases done: expand, dual_write, backfill" in text


def test_output_file(dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path) -> None:
    target = tmp_path / "runbook.md"
    result = cli(dsn, "runbook", str(WIDEN), "-o", str(target))
    assert result.exit_code == 0, result.output
    assert "written to" in result.stdout and "# Runbook" not in result.stdout
    text = target.read_text()
    assert text.startswith("# Runbook: widen_account_balance\n")
    assert "```mermaid" in text and text.endswith("\n")


def test_a_plan_breaking_a_ddl_safety_rule_gets_no_runbook(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = tmp_path / "unsafe.yaml"
    plan.write_text(
        WIDEN.read_text().replace(
            "  - cutover\n",
            "  - sql:\n"
            "      name: index_email\n"
            "      up: CREATE INDEX accounts_email_x ON public.accounts (email);\n"
            "      down: DROP INDEX CONCURRENTLY IF EXISTS public.accounts_email_x;\n"
            "  - cutover\n",
        )
    )
    result = cli(dsn, "runbook", str(plan))
    assert result.exit_code == 2, result.output
    assert error_line(result).startswith(f"error: {plan}:")
    assert "CONCURRENTLY" in result.stderr and result.stdout == ""


def test_without_a_database_exit_2_and_say_to_pass_dsn() -> None:
    result = CliRunner().invoke(
        main,
        ["runbook", str(WIDEN)],
        env={"DATABASE_URL": None, "PGHOST": None, "PGDATABASE": None, "PGSERVICE": None},
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "--dsn" in lines[0]
    assert result.stdout == ""


def test_new_table_runbook_names_the_insert_the_new_tables_locks_and_the_shadow_reads(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    text = (PLANS / "accounts_bigint_key.yaml").read_text()
    text = text.replace(
        "  - verify\n",
        "  - verify\n  - shadow_read:\n      queries: ['SELECT count(*) FROM accounts']\n",
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    book = runbook(dsn, plan)
    parts = sections(book)

    backfill = parts["backfill"]
    copy = appendix_entry(book, "sql-3-1")
    assert "the INSERT then copies exactly the rows of that key range" in copy
    assert "the UPDATE" not in copy
    for index in ("accounts_v2_email_idx", "accounts_v2_balance_idx"):
        row = next(line for line in backfill.splitlines() if f"build {index}" in line)
        assert "| `SHARE UPDATE EXCLUSIVE` on `public.accounts_v2` |" in row
    # the new table's owner and grants: its ACCESS EXCLUSIVE is on the new table only
    owner = next(line for line in parts["expand"].splitlines() if "the owner, grants" in line)
    assert "| `ACCESS EXCLUSIVE` on `public.accounts_v2` |" in owner

    shadow = parts["shadow_read"]
    assert "catalog changes only" not in shadow and "< 1s" not in shadow
    assert "as long as its queries take, run on both shapes" in shadow
    assert "reads what its queries read" in shadow


def test_a_one_column_runbook_is_short_before_its_appendix(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """What a reviewer reads first (steps, locks, go / no-go, rollback) fits in 15,000
    characters for a one-column change; the SQL follows in the appendix."""
    create_accounts(conn, 1000)
    text = runbook(dsn, WIDEN)
    before, appendix = split_appendix(text)
    assert len(before) < 15_000, len(before)
    for part in ("## Pre-flight checks", "```mermaid", POINT_OF_NO_RETURN, "**Go / no-go:**"):
        assert part in before, part
    # the internal catalog queries (the DO blocks re-creating views) and the trigger's function
    # are in the appendix only
    assert "CREATE OR REPLACE FUNCTION" not in before and "DO '" not in before
    assert "CREATE OR REPLACE FUNCTION" in appendix
