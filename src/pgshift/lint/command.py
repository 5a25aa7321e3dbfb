"""`migrate lint`: its own module so that running it loads click, pglast and the rules only,
not the database driver or the migration engine (plans are loaded only when one is named)."""

from __future__ import annotations

from pathlib import Path

import click

from pgshift.errors import UsageError
from pgshift.lint.config import discover, load_config
from pgshift.lint.engine import lint_paths
from pgshift.lint.model import Finding
from pgshift.lint.output import FORMATS, render

_PLAN_SUFFIXES = (".yaml", ".yml")


@click.command("lint")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="Output: text lines, JSON, SARIF 2.1.0, or GitHub Actions annotations.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Rule severities from this file (default: the nearest pyproject.toml with "
    "[tool.pgshift.lint] or .pgshift.toml with [lint], from here up).",
)
def lint_command(paths: tuple[str, ...], fmt: str, config_file: str | None) -> None:
    """Check plans' raw SQL, .sql files and migration folders (in migration order, as one run)
    against the DDL safety rules (docs/lint.md)."""
    config = load_config(Path(config_file)) if config_file else discover()
    found: list[tuple[str, Finding]] = []
    plans = [p for p in paths if p.endswith(_PLAN_SUFFIXES)]
    if plans:
        from pgshift.plan.load import load_plan  # pydantic and the plan model: only for plans
        from pgshift.plan.plan_lint import lint_plan

        for path in plans:
            found += [(f.file, f.finding) for f in lint_plan(load_plan(path), config)]
    sql_paths = [Path(p) for p in paths if not p.endswith(_PLAN_SUFFIXES)]
    found += [(str(file), f) for file, f in lint_paths(sql_paths, config)]
    click.echo(render(found, fmt, config), nl=False)
    broken = [f for _, f in found if f.fails]
    where = paths[0] if len(paths) == 1 else f"{len(paths)} paths"
    if broken:
        raise UsageError(f"{len(broken)} DDL safety rule(s) broken in {where}")
    if fmt == "text":
        click.echo(f"{where}: no DDL safety rule broken")
