"""A plan's `hooks:` on a real database: each event's command gets the state as JSON on stdin and
PGSHIFT_* in its environment, at a gate stop, an approval, the end, a failed phase and its
automatic rollback, and `migrate rollback`; a failing or hanging hook does not fail the
migration but is named in the log and the event log."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgshift.demo.seed import create_accounts
from pgshift.engine.hooks import HookFailed, run_hook
from tests.integration.helpers import cli, write_plan
from tests.integration.servers import DatabasePair, move_databases, move_servers

__all__ = ["move_databases", "move_servers"]  # fixtures, used by name

# every hook appends its stdin as one line of events.jsonl, and its environment to env.txt
RECORD = '"{{ cat; echo; }} >> {dir}/events.jsonl && echo \\"$PGSHIFT_MIGRATION $PGSHIFT_EVENT $PGSHIFT_PHASE\\" >> {dir}/env.txt"'

PLAN = """version: 1
name: hooked
table: public.accounts
columns:
  balance: {{type: bigint}}
hooks:
  on_phase_start: {record}
  on_phase_done: {record}
  on_gate: {record}
  on_failure: {record}
  on_rollback: {record}
  on_done: {record}
phases:
{phases}
"""

GATED = """  - expand
  - dual_write
  - backfill
  - gate: {name: before_cutover}
  - cutover
  - contract"""

FAILING = """  - expand
  - dual_write
  - backfill
  - sql: {name: boom, up: "SELECT 1 / 0", down: "SELECT 1"}
  - cutover
  - contract"""


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    create_accounts(conn, 1_000)
    return conn


def hooked_plan(folder: Path, phases: str) -> str:
    return write_plan(folder, PLAN.format(record=RECORD.format(dir=folder), phases=phases))


def payloads(folder: Path) -> list[dict[str, Any]]:
    path = folder / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fired(folder: Path) -> list[tuple[str, str | None]]:
    return [(p["event"], p["phase"]) for p in payloads(folder)]


def take(folder: Path) -> list[dict[str, Any]]:
    """The payloads so far, and start the files over."""
    found = payloads(folder)
    (folder / "events.jsonl").unlink(missing_ok=True)
    return found


def test_hooks_at_gate_approval_and_done(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = hooked_plan(tmp_path, GATED)

    stopped = cli(dsn, "apply", plan)
    assert stopped.exit_code == 3, stopped.output
    first = take(tmp_path)
    assert [(p["event"], p["phase"]) for p in first] == [
        ("on_phase_start", "expand"),
        ("on_phase_done", "expand"),
        ("on_phase_start", "dual_write"),
        ("on_phase_done", "dual_write"),
        ("on_phase_start", "backfill"),
        ("on_phase_done", "backfill"),
        ("on_phase_start", "before_cutover"),
        ("on_gate", "before_cutover"),
    ]
    backfill_done = first[5]
    assert backfill_done["migration"] == "hooked"
    assert backfill_done["table"] == "public.accounts"
    assert backfill_done["phase_kind"] == "backfill" and backfill_done["phase_status"] == "done"
    assert backfill_done["status"] == "running"
    assert backfill_done["progress"]["rows_done"] == 1_000
    assert backfill_done["progress"]["phases_done"] == 3
    assert backfill_done["progress"]["phases"] == 6
    assert backfill_done["error"] is None
    gate = first[7]
    assert gate["status"] == "waiting" and gate["phase_status"] == "waiting"
    assert gate["phase_kind"] == "gate"
    assert "gate before_cutover waits for an approval" in gate["reason"]
    assert [p["status"] for p in gate["phases"]] == [
        "done",
        "done",
        "done",
        "waiting",
        "pending",
        "pending",
    ]
    assert gate["at"].endswith("+00:00")
    env = (tmp_path / "env.txt").read_text().splitlines()
    assert env[0] == "hooked on_phase_start expand"
    assert env[-1] == "hooked on_gate before_cutover"

    assert cli(dsn, "approve", plan, "before_cutover", "--by", "alice").exit_code == 0
    finished = cli(dsn, "apply", plan)
    assert finished.exit_code == 0, finished.output
    second = take(tmp_path)
    assert [(p["event"], p["phase"]) for p in second] == [
        ("on_phase_start", "before_cutover"),
        ("on_phase_done", "before_cutover"),
        ("on_phase_start", "cutover"),
        ("on_phase_done", "cutover"),
        ("on_phase_start", "contract"),
        ("on_phase_done", "contract"),
        ("on_done", None),
    ]
    done = second[-1]
    assert done["status"] == "done" and done["phase"] is None
    assert done["progress"]["phases_done"] == 6
    assert {p["status"] for p in done["phases"]} == {"done"}
    assert (tmp_path / "env.txt").read_text().splitlines()[-1] == "hooked on_done "


def test_hooks_at_failure_and_automatic_rollback(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = hooked_plan(tmp_path, FAILING)

    result = cli(dsn, "apply", plan)
    assert result.exit_code == 1, result.output
    found = take(tmp_path)
    assert [(p["event"], p["phase"]) for p in found] == [
        ("on_phase_start", "expand"),
        ("on_phase_done", "expand"),
        ("on_phase_start", "dual_write"),
        ("on_phase_done", "dual_write"),
        ("on_phase_start", "backfill"),
        ("on_phase_done", "backfill"),
        ("on_phase_start", "boom"),
        ("on_failure", "boom"),
        # the phases undone, last first (boom's one transaction never committed)
        ("on_rollback", "backfill"),
        ("on_rollback", "dual_write"),
        ("on_rollback", "expand"),
    ]
    failure = found[7]
    assert failure["phase_kind"] == "sql" and failure["phase_status"] == "failed"
    assert "division by zero" in failure["error"]
    undone = found[-1]
    assert undone["phase_status"] == "rolled_back"
    assert [p["status"] for p in undone["phases"]][:3] == ["rolled_back"] * 3


def test_hooks_at_migrate_rollback(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = hooked_plan(tmp_path, GATED)
    assert cli(dsn, "apply", plan, "--until", "backfill").exit_code == 0
    take(tmp_path)

    result = cli(dsn, "rollback", plan)
    assert result.exit_code == 0, result.output
    assert fired(tmp_path) == [
        ("on_rollback", "backfill"),
        ("on_rollback", "dual_write"),
        ("on_rollback", "expand"),
    ]


def test_a_failing_or_hanging_hook_does_not_fail_the_migration(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(
        tmp_path,
        """version: 1
name: noisy
table: public.accounts
columns:
  balance: {type: bigint}
hooks:
  on_phase_done: "echo calling the webhook; echo webhook down >&2; exit 3"
  on_done: "echo waiting; sleep 30"
  timeout: 300ms
phases: [expand, dual_write, backfill]
""",
    )
    result = cli(dsn, "apply", plan)
    assert result.exit_code == 0, result.output
    assert "done" in result.stdout
    warnings = [
        json.loads(line)
        for line in result.stderr.splitlines()
        if line.startswith("{") and '"hook failed' in line
    ]
    assert len(warnings) == 4, result.stderr  # three phases, then on_done
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["error"] == "hook on_phase_done exited with status 3: webhook down"
    assert "hook on_done ran longer than 300ms (hooks.timeout)" in warnings[-1]["error"]
    events = accounts.execute(
        "SELECT phase, detail->>'hook', detail->>'error' FROM pgshift.events"
        " WHERE migration = 'noisy' AND event = 'hook failed' ORDER BY id"
    ).fetchall()
    assert [(phase, hook) for phase, hook, _ in events] == [
        ("expand", "on_phase_done"),
        ("dual_write", "on_phase_done"),
        ("backfill", "on_phase_done"),
        (None, "on_done"),
    ]
    status = accounts.execute("SELECT status FROM pgshift.migrations WHERE name = 'noisy'")
    assert status.fetchone() == ("done",)


def test_hooks_in_the_plan_are_checked(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path,
        """version: 1
name: typo
table: public.accounts
columns:
  balance: {type: bigint}
hooks:
  on_phase_end: "true"
phases: [expand]
""",
    )
    result = cli("postgresql://nowhere.invalid/db", "plan", plan)
    assert result.exit_code == 2
    assert "on_phase_end" in result.output


MOVE = """version: 1
name: hooked_move
move:
  tables: [public.accounts]
  hooks:
    after_fence: "cat > {dir}/after_fence.json"
hooks:
  on_phase_done: {record}
  on_done: {record}
phases: [expand, dual_write, backfill, cutover, contract]
"""


def test_hooks_of_a_move_and_its_fence_hook(move_databases: DatabasePair, tmp_path: Path) -> None:
    db = move_databases
    with psycopg.connect(db.source_dsn, autocommit=True) as conn:
        create_accounts(conn, 200)
    plan = write_plan(tmp_path, MOVE.format(dir=tmp_path, record=RECORD.format(dir=tmp_path)))

    # a password in the connection string (trust ignores it) never reaches a hook
    source = f"{db.source_dsn} password=s3cret"
    result = cli(source, "--destination-dsn", db.destination_dsn, "apply", plan)
    assert result.exit_code == 0, result.output
    assert fired(tmp_path) == [
        ("on_phase_done", "expand"),
        ("on_phase_done", "dual_write"),
        ("on_phase_done", "backfill"),
        ("on_phase_done", "cutover"),
        ("on_phase_done", "contract"),
        ("on_done", None),
    ]
    assert payloads(tmp_path)[-1]["table"].startswith("public.accounts")
    assert "s3cret" not in (tmp_path / "events.jsonl").read_text()
    fence = json.loads((tmp_path / "after_fence.json").read_text())  # the shared runner's
    assert fence["hook"] == "after_fence" and fence["writes_go_to"] == "destination"
    assert "password=***" in fence["source"] and "s3cret" not in json.dumps(fence)


def test_the_shared_runner_fails_a_step_hook_and_ends_what_it_started() -> None:
    """What a move's fence hooks run through: a non-zero exit and a timeout are errors naming
    the hook (the command's last line, the plan's key), and a timeout ends the processes the
    hook started too, even one holding its output open."""
    with pytest.raises(HookFailed, match=r"^hook after_fence exited with status 4: no pooler$"):
        run_hook(
            "cat > /dev/null; echo trying; echo no pooler >&2; exit 4",
            hook="after_fence",
            payload={"migration": "m"},
            env={},
            timeout=timedelta(seconds=30),
            timeout_key="move.hooks.timeout",
        )
    with pytest.raises(HookFailed, match=r"ran longer than 200ms \(move.hooks.timeout\)"):
        run_hook(
            "(sleep 60; echo late) & echo started; wait",
            hook="before_fence",
            payload={},
            env={},
            timeout=timedelta(milliseconds=200),
            timeout_key="move.hooks.timeout",
        )
    seconds = run_hook(
        'test "$(cat)" = \'{"a": 1}\' && test "$PGSHIFT_X" = y',
        hook="on_done",
        payload={"a": 1},
        env={"PGSHIFT_X": "y"},
        timeout=timedelta(seconds=30),
        timeout_key="hooks.timeout",
    )
    assert seconds >= 0
