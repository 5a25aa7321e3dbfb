"""The DDL safety rules (pgshift.lint) over the raw SQL a plan carries: its `sql` phases' `up`
and `down`, and the `create` DDL of a `new_table`. Findings point at the plan file's lines."""

from __future__ import annotations

from dataclasses import dataclass

from pgshift.db import split_name
from pgshift.lint import Finding, LintConfig, format_finding, lint_sql
from pgshift.plan.load import LoadedPlan


@dataclass(frozen=True)
class PlanFinding:
    finding: Finding
    file: str

    def __str__(self) -> str:
        return format_finding(self.finding, self.file)


def _first_line(loaded: LoadedPlan, path: tuple[str | int, ...]) -> int:
    """The line a SQL value's text starts on: the line after `|` or `>` for a block scalar."""
    line, column = loaded.source.position(path)
    text_line = (
        loaded.text.splitlines()[line - 1] if line - 1 < len(loaded.text.splitlines()) else ""
    )
    indicator = text_line[column - 1 : column]
    return line + 1 if indicator in ("|", ">") else line


def lint_plan(loaded: LoadedPlan, config: LintConfig | None = None) -> list[PlanFinding]:
    """The plan's raw SQL against the rules, at `config`'s severities (the defaults without)."""
    plan = loaded.plan
    found: list[PlanFinding] = []
    new_tables: frozenset[str] = frozenset()
    if plan.new_table is not None:
        schema, name = split_name(plan.new_table.name)
        new_tables = frozenset({name, f"{schema}.{name}"} if schema else {name})
        findings = lint_sql(
            plan.new_table.create,
            first_line=_first_line(loaded, ("new_table", "create")),
            new_tables=new_tables,
            require_lock_timeout=False,
            config=config,
        )
        found += [PlanFinding(f, loaded.source.file) for f in findings]
    for index, phase in enumerate(plan.phases):
        if phase.kind != "sql":
            continue
        for field in ("up", "down"):
            text = getattr(phase, field)
            if text is None:
                continue
            # pgshift runs sql phases under lock_timeout itself: that rule does not apply
            findings = lint_sql(
                text,
                first_line=_first_line(loaded, ("phases", index, "sql", field)),
                new_tables=new_tables,
                require_lock_timeout=False,
                config=config,
            )
            found += [PlanFinding(f, loaded.source.file) for f in findings]
    return found
