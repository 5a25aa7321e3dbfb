"""The DDL safety rules (pgshift.lint) over the raw SQL a plan carries: its `sql` phases' `up`
and `down`, and the `create` DDL of a `new_table`. Findings point at the plan file's lines."""

from __future__ import annotations

from dataclasses import dataclass

from pgshift.db import split_name
from pgshift.lint import Finding, LintConfig, format_finding, lint_sql
from pgshift.plan.load import LoadedPlan
from pgshift.plan.model import NewTable


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
    # the new tables of `new_table`, or of each entry of `tables`, with where their DDL is
    creates: list[tuple[NewTable, tuple[str | int, ...]]] = []
    if plan.new_table is not None:
        creates.append((plan.new_table, ("new_table",)))
    for index, entry in enumerate(plan.tables or []):
        if entry.new_table is not None:
            creates.append((entry.new_table, ("tables", index, "new_table")))
    names: set[str] = set()
    for new_table, _ in creates:
        schema, name = split_name(new_table.name)
        names |= {name, f"{schema}.{name}"} if schema else {name}
    new_tables = frozenset(names)
    for new_table, at in creates:
        findings = lint_sql(
            new_table.create,
            first_line=_first_line(loaded, (*at, "create")),
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
