"""`migrate demo` end to end on the test server: the bundled plan under live traffic."""

from __future__ import annotations

import importlib.resources
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgshift.demo.run import DEMO_DATABASE, PLAN_FILE, run_demo

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_dsn(server_dsn: str) -> Iterator[str]:
    """The demo database's DSN; the database is dropped afterwards, whatever happened."""
    yield make_conninfo(server_dsn, dbname=DEMO_DATABASE)
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DEMO_DATABASE))
        )


def balance_type(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'public.accounts'::regclass AND attname = 'balance'"
            " AND NOT attisdropped"
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_demo_widens_balance_under_traffic(server_dsn: str, demo_dsn: str) -> None:
    lines: list[str] = []
    code = run_demo(dsn=server_dsn, rows=20_000, connections=2, rate=50, echo=lines.append)
    output = "\n".join(lines)
    assert code == 0, output
    assert re.search(r"^  failed +0$", output, re.MULTILINE), output
    writes = re.search(r"^  writes done +([\d,]+) ", output, re.MULTILINE)
    assert writes and int(writes[1].replace(",", "")) > 0, output
    assert re.search(r"^  backfill +done .* rows backfilled", output, re.MULTILINE), output
    assert re.search(r"^  rows +[\d,]+ \(matches ", output, re.MULTILINE), output
    assert balance_type(demo_dsn) == "bigint"


def test_migrate_demo_command(server_dsn: str, demo_dsn: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pgshift.cli", "--dsn", server_dsn, "demo", "--rows", "5000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^  failed +0$", done.stdout, re.MULTILINE), done.stdout
    assert "Traceback" not in done.stderr
    assert balance_type(demo_dsn) == "bigint"


def test_bundled_plans_ship_in_the_package() -> None:
    """pyproject lists the packages by hand (plans/ ships as pgshift.plans, which a find over
    src/ cannot add): a package added under src/ but not listed would be missing from wheels."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(REPO / "src").parts)
        for init in (REPO / "src").rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == on_disk | {"pgshift.plans"}
    assert setuptools["package-dir"]["pgshift.plans"] == "plans"
    assert importlib.resources.files("pgshift.plans").joinpath(PLAN_FILE).is_file()
