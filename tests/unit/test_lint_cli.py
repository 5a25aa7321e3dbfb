"""`migrate lint PATH...`: several files and folders as one run, output formats, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pgshift.cli import main

NO_DATABASE = {"DATABASE_URL": None, "PGHOST": None, "PGDATABASE": None, "PGSERVICE": None}


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner(env=NO_DATABASE).invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def migrations(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "12_create.sql").write_text("CREATE TABLE invites (id bigint, code text);\n")
    (folder / "13_index.sql").write_text("CREATE INDEX invites_code ON invites (code);\n")
    return folder


def test_a_folder_is_one_run(tmp_path: Path) -> None:
    folder = migrations(tmp_path)
    code, out, _ = run("lint", str(folder))
    assert code == 0
    assert "no DDL safety rule broken" in out
    # the second file alone indexes a table it does not know
    code, out, _ = run("lint", str(folder / "13_index.sql"))
    assert code == 2 and "PGS005" in out


def test_several_paths_and_warnings_do_not_fail(tmp_path: Path) -> None:
    folder = migrations(tmp_path)
    extra = tmp_path / "99_json.sql"
    extra.write_text("CREATE TABLE events (payload json);\n")
    code, out, _ = run("lint", str(folder), str(extra))
    assert code == 0
    assert f"{extra}:1:1: PGS017 warning:" in out


def test_formats(tmp_path: Path) -> None:
    bad = tmp_path / "1.sql"
    bad.write_text("SET lock_timeout = '1s';\nCREATE INDEX i ON accounts (email);\n")
    code, out, _ = run("lint", "--format", "github", str(bad))
    assert code == 2
    assert out.startswith(f"::error file={bad},line=2,col=1,title=PGS005::")
    code, out, _ = run("lint", "--format", "json", str(bad))
    assert code == 2 and json.loads(out)[0]["rule"] == "PGS005"
    code, out, _ = run("lint", "--format", "sarif", str(bad))
    assert code == 2 and json.loads(out)["runs"][0]["results"][0]["ruleId"] == "PGS005"
    bad.write_text("SET lock_timeout = '1s';\nCREATE INDEX CONCURRENTLY i ON accounts (email);\n")
    code, out, _ = run("lint", "--format", "json", str(bad))
    assert code == 0 and json.loads(out) == []
