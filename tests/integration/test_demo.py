"""`migrate demo` end to end on the test server: the bundled plans under live traffic, two
application versions by default."""

from __future__ import annotations

import importlib.resources
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgshift.demo import run
from pgshift.demo.run import DEMO_DATABASE, PLAN_FILES, run_demo

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_dsn(server_dsn: str) -> Iterator[str]:
    """The demo database's DSN; the database is dropped afterwards, whatever happened."""
    yield make_conninfo(server_dsn, dbname=DEMO_DATABASE)
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DEMO_DATABASE))
        )


def column_type(dsn: str, relation: str = "public.accounts") -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attname = 'balance' AND NOT attisdropped",
            (relation,),
        ).fetchone()
    assert row is not None
    return str(row[0])


def version_block(output: str, label: str) -> str:
    """The summary's lines of one application version, up to the next blank line."""
    found = re.search(rf"^application {label}, .*?(?=\n\n|\Z)", output, re.MULTILINE | re.DOTALL)
    assert found, output
    return found[0]


def counted(block: str, what: str) -> int:
    found = re.search(rf"^  {what} +([\d,]+)", block, re.MULTILINE)
    assert found, block
    return int(found[1].replace(",", ""))


def test_demo_runs_two_application_versions_under_traffic(server_dsn: str, demo_dsn: str) -> None:
    """The default demo: the old version writes and reads from the start, the new one (through
    the version schema) from after verify; the old one goes, the gate passes, contract runs
    while the new one writes and reads; neither sees a failure."""
    lines: list[str] = []
    code = run_demo(dsn=server_dsn, rows=20_000, connections=2, rate=50, echo=lines.append)
    output = "\n".join(lines)
    assert code == 0, output
    for label in ("v1", "v2"):
        block = version_block(output, label)
        assert counted(block, "failed") == 0, output
        assert counted(block, "writes done") > 0, output
        assert counted(block, "reads done") > 0, output
    assert re.search(r"^  backfill +done .* rows backfilled", output, re.MULTILINE), output
    assert re.search(r"^  old_version_gone +done ", output, re.MULTILINE), output
    assert re.search(r"^  contract +done ", output, re.MULTILINE), output
    assert re.search(r"^  rows +[\d,]+ \(matches ", output, re.MULTILINE), output
    assert column_type(demo_dsn) == "bigint"
    assert column_type(demo_dsn, "app_v2.accounts") == "bigint"  # the new version's view stays


def test_demo_says_so_when_the_gate_stays_shut(
    server_dsn: str, demo_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session older than expand that is not the old version's traffic keeps the gate shut:
    the demo does not wait for it, it says so and exits 3, contract not run."""
    monkeypatch.setattr(run, "OLD_SESSIONS_GRACE", 0.2)
    held: list[psycopg.Connection[Any]] = []
    lines: list[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        if line.startswith("migrating"):  # before expand
            held.append(psycopg.connect(demo_dsn, application_name="someone else"))

    try:
        code = run_demo(dsn=server_dsn, rows=2_000, connections=1, rate=50, echo=echo)
        output = "\n".join(lines)
        assert code == 3, output
        pid = held[0].info.backend_pid
        assert re.search(
            rf"^WAITING: .*gate old_version_gone.* pid {pid} ", output, re.MULTILINE
        ), output
    finally:
        for conn in held:
            conn.close()
    assert re.search(r"^  contract +pending", output, re.MULTILINE), output
    for label in ("v1", "v2"):
        assert counted(version_block(output, label), "failed") == 0, output
    assert column_type(demo_dsn) == "integer"


@pytest.mark.parametrize("mode", [None, "rename"], ids=["default", "rename"])
def test_migrate_demo_command(server_dsn: str, demo_dsn: str, mode: str | None) -> None:
    more = ["--mode", mode] if mode else []
    done = subprocess.run(
        [sys.executable, "-m", "pgshift.cli", "--dsn", server_dsn, "demo", "--rows", "5000", *more],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    failed = re.findall(r"^  failed +(\d+)$", done.stdout, re.MULTILINE)
    assert failed == (["0"] if mode == "rename" else ["0", "0"]), done.stdout
    assert "Traceback" not in done.stderr
    assert column_type(demo_dsn) == "bigint"


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
    for plan_file in PLAN_FILES.values():
        assert importlib.resources.files("pgshift.plans").joinpath(plan_file).is_file()
