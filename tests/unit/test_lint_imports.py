"""`migrate lint` loads only what linting needs: no database driver, plan model, logging or
terminal rendering libraries (they are most of the command line's start-up time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("psycopg", "pydantic", "structlog", "rich", "yaml", "pgshift.engine", "pgshift.db")

NO_DATABASE = ("DATABASE_URL", "PGHOST", "PGDATABASE", "PGSERVICE")
PROBE = """
import json, sys
from click.testing import CliRunner
from pgshift.cli import main
result = CliRunner().invoke(main, sys.argv[1:])
loaded = sorted({m.split(".")[0] if not m.startswith("pgshift") else ".".join(m.split(".")[:2])
                 for m in sys.modules})
print(json.dumps({"code": result.exit_code, "modules": loaded}))
"""


def loaded_by(*args: str) -> tuple[int, set[str]]:
    env = {k: v for k, v in os.environ.items() if k not in NO_DATABASE}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True, env=env
    )
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return data["code"], set(data["modules"])


def test_lint_of_sql_files_loads_no_heavy_module(tmp_path: Path) -> None:
    bad = tmp_path / "1.sql"
    bad.write_text("CREATE INDEX i ON accounts (email);\n")
    code, modules = loaded_by("lint", str(bad))
    assert code == 2  # the failing path (an error message) too
    assert "pglast" in modules
    assert not modules & set(HEAVY), modules & set(HEAVY)


def test_other_commands_still_load_what_they_need() -> None:
    plan = Path(__file__).resolve().parents[2] / "plans" / "accounts_bigint_key.yaml"
    code, modules = loaded_by("plan", str(plan))
    assert code == 0 and {"pydantic", "yaml", "structlog"} <= modules
