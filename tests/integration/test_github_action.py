"""The GitHub Action (action.yml, action/run.sh) as docs/ci.md's pipeline runs it: the script
itself, with `migrate` installed, against a real server, outputs and job summary in files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgshift.demo.seed import create_accounts
from tests.integration.helpers import REPO, write_plan

MIGRATE = Path(sys.executable).parent / "migrate"
PLAN = """version: 1
name: pipeline
table: public.accounts
columns:
  balance: {type: bigint}
phases:
  - expand
  - dual_write
  - backfill
  - verify
  - gate: {name: before_cutover, approval: true, require_verify: true}
  - cutover
  - gate: {name: before_contract, approval: true}
  - contract
"""

pytestmark = pytest.mark.skipif(not MIGRATE.exists(), reason="needs the installed `migrate`")


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    create_accounts(conn, 1_000)
    return conn


class Action:
    def __init__(self, dsn: str, folder: Path) -> None:
        # a password in the secret: trust auth ignores it, and nothing may print it
        self.dsn = make_conninfo(**{**conninfo_to_dict(dsn), "password": "s3cret-pw"})
        self.folder = folder
        self.summary = folder / "summary.md"

    def run(self, **inputs: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
        output = self.folder / "output.txt"
        output.write_text("")
        env = {
            **os.environ,
            "GITHUB_ACTIONS": "true",
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(self.summary),
            "PGSHIFT_MIGRATE": str(MIGRATE),
            "PGSHIFT_ACTOR": "ci-bot",
            "INPUT_DATABASE_URL": self.dsn,
        }
        env.pop("DATABASE_URL", None)
        env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})
        done = subprocess.run(
            ["bash", str(REPO / "action" / "run.sh")],
            cwd=self.folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
        for text in (done.stdout, done.stderr, output.read_text()):
            assert "s3cret-pw" not in text
        return done, outputs


def test_the_actions_inputs_match_its_script() -> None:
    action = yaml.safe_load((REPO / "action.yml").read_text())
    script = (REPO / "action" / "run.sh").read_text()
    env = action["runs"]["steps"][-1]["env"]
    for name in action["inputs"]:
        if name in ("pgshift-version", "python-version"):
            continue  # used by the install steps
        variable = f"INPUT_{name.upper().replace('-', '_')}"
        assert env[variable] == f"${{{{ inputs.{name} }}}}"
        assert variable in script, variable
    assert set(action["outputs"]) == {"exit-code", "status", "report"}


def test_the_pipeline_of_the_docs_runs_stage_by_stage(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN)
    action = Action(dsn, tmp_path)

    done, out = action.run(command="lint", plan=plan)
    assert done.returncode == 0, done.stderr

    done, out = action.run(command="runbook", plan=plan)
    assert done.returncode == 0, done.stderr
    assert action.summary.read_text().startswith("# Runbook: pipeline")
    assert (tmp_path / "pgshift-runbook.md").is_file()

    # on deploy: up to the first gate; exit 3 there is this stage's success
    done, out = action.run(command="apply", plan=plan, until="before_cutover")
    assert done.returncode == 0, done.stderr
    assert out == {"exit-code": "3", "status": "waiting", "report": "pgshift-report.json"}
    report = json.loads((tmp_path / "pgshift-report.json").read_text())
    assert report["gate"]["name"] == "before_cutover" and report["exit_code"] == 3
    assert "pgshift: pipeline — waiting (exit 3)" in action.summary.read_text()

    # the same, with exit 3 not accepted, fails the step
    done, out = action.run(command="apply", plan=plan, gate_is_success="false")
    assert done.returncode == 3 and out["exit-code"] == "3"

    # approved: cutover, then stop before contract
    done, out = action.run(
        command="apply", plan=plan, approve="before_cutover", until="before_contract"
    )
    assert done.returncode == 0, done.stderr
    assert out["exit-code"] == "3" and out["status"] == "waiting"
    events = accounts.execute(
        "SELECT actor FROM pgshift.events WHERE event = 'approved'"
    ).fetchall()
    assert events == [("ci-bot",)]

    done, out = action.run(command="status", plan=plan)
    assert done.returncode == 0 and out["status"] == "waiting"

    done, out = action.run(command="rollback", plan=plan)
    assert done.returncode == 0, done.stderr
    assert out == {"exit-code": "0", "status": "rolled_back", "report": "pgshift-report.json"}

    done, out = action.run(command="nosuch", plan=plan)
    assert done.returncode == 2 and "unknown command" in done.stderr
