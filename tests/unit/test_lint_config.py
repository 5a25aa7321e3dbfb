"""Rule severities from a config file: found from the current directory up, or named with
`migrate lint --config`; bad files are one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pgshift.cli import main
from pgshift.lint import ConfigError, LintConfig, discover, find_config, lint_sql, load_config

NO_DATABASE = {"DATABASE_URL": None, "PGHOST": None, "PGDATABASE": None, "PGSERVICE": None}
TABLE = (
    "SET lock_timeout = '1s';\nCREATE TABLE cluster_metadata (id integer PRIMARY KEY, data json);\n"
)

PYPROJECT = """[project]
name = "app"

[tool.pgshift.lint]
exclude = ["prefer-jsonb"]

[tool.pgshift.lint.severity]
PGS013 = "error"
drop-view = "warning"
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner(env=NO_DATABASE).invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_pyproject_section_sets_severities_and_excludes(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    config = load_config(tmp_path / "pyproject.toml")
    assert config.severities == {"PGS013": "error", "PGS024": "warning", "PGS017": "off"}
    [finding] = lint_sql(TABLE, config=config)
    assert (finding.rule, finding.severity, finding.fails) == ("PGS013", "error", True)
    # without the config: two warnings, nothing fails
    assert [(f.rule, f.fails) for f in lint_sql(TABLE)] == [("PGS013", False), ("PGS017", False)]


def test_the_nearest_file_with_a_lint_table_wins(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    deep = tmp_path / "db" / "migrations"
    deep.mkdir(parents=True)
    (tmp_path / "db" / "pyproject.toml").write_text("[project]\nname = 'db'\n")  # no table
    assert find_config(deep) == tmp_path / "pyproject.toml"
    (tmp_path / "db" / ".pgshift.toml").write_text('[lint]\nexclude = ["PGS013"]\n')
    assert find_config(deep) == tmp_path / "db" / ".pgshift.toml"
    assert discover(deep).severities == {"PGS013": "off"}
    (tmp_path / "db" / ".pgshift.toml").write_text("[other]\n")  # no [lint]: passed over
    assert find_config(deep) == tmp_path / "pyproject.toml"


def test_no_config_file_keeps_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'app'\n")  # no lint table
    assert find_config(tmp_path) is None
    assert discover(tmp_path) == LintConfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[lint]\nexclude = ["PGS999"]\n', "no lint rule named 'PGS999'"),
        ('[lint.severity]\nPGS013 = "fatal"\n', "severity 'fatal' of PGS013 is not one of"),
        ("[lint]\nseverities = {}\n", "unknown lint setting 'severities'"),
        ("[lint]\nexclude = 'PGS013'\n", "lint exclude must be a list"),
        ("[lint\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / ".pgshift.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_cli_config_option_and_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sql = tmp_path / "0001_init.sql"
    sql.write_text(TABLE)
    code, out, _ = run("lint", str(sql))
    assert code == 0 and "PGS013 warning:" in out
    config = tmp_path / "lint.toml"
    config.write_text('[lint.severity]\nprefer-bigint = "error"\n')
    code, out, err = run("lint", "--config", str(config), str(sql))
    assert code == 2 and f"{sql}:2:1: PGS013 column" in out and "broken" in err
    # found from the current directory up
    project = tmp_path / "project"
    (project / "migrations").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    monkeypatch.chdir(project / "migrations")
    code, out, _ = run("lint", str(sql))
    assert code == 2 and "PGS017" not in out
    code, out, _ = run("lint", "--format", "sarif", str(sql))
    levels = {
        r["id"]: r["defaultConfiguration"]["level"]
        for r in json.loads(out)["runs"][0]["tool"]["driver"]["rules"]
    }
    assert (levels["PGS013"], levels["PGS017"], levels["PGS024"], levels["PGS020"]) == (
        "error",
        "none",
        "warning",
        "none",
    )


def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    sql = tmp_path / "0001_init.sql"
    sql.write_text(TABLE)
    config = tmp_path / "lint.toml"
    config.write_text('[lint]\nexclude = ["no-such-rule"]\n')
    code, out, err = run("lint", "--config", str(config), str(sql))
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"error: {config}: no lint rule named 'no-such-rule'; use a code (PGS001) or a slug "
        "(rewrite-type-change) from docs/lint.md"
    ]


PLAN = """version: 1
name: lint_me
table: accounts
columns:
  balance: {type: bigint}
phases:
  - expand
  - sql:
      name: add_index
      up: CREATE INDEX accounts_email_idx ON accounts (email);
      down: DROP INDEX CONCURRENTLY IF EXISTS accounts_email_idx;
"""


def test_config_applies_to_a_plan_linted_by_migrate_lint(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    assert run("lint", str(plan))[0] == 2
    config = tmp_path / ".pgshift.toml"
    config.write_text('[lint.severity]\nindex-concurrently = "warning"\n')
    code, out, _ = run("lint", "--config", str(config), str(plan))
    assert code == 0 and "PGS005 warning:" in out
