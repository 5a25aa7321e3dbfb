"""Runs the rules over SQL text, statement after statement (the statements of DO blocks too),
keeping what earlier statements and files of the same run created."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

import pglast
from pglast import ast

from pgshift.lint.config import LintConfig
from pgshift.lint.do_blocks import do_statements
from pgshift.lint.files import collect_sql_files
from pgshift.lint.model import SYNTAX_ERROR, Finding, Rule
from pgshift.lint.parse import fast_parsing, parse
from pgshift.lint.rules import CHECKS, STATEMENT_TIMEOUT, Check, follow_up
from pgshift.lint.source import Source, syntax_error
from pgshift.lint.sqlfacts import TableSet
from pgshift.lint.state import State, Unit, alter_commands, created_views

_DEFAULT = LintConfig()


class LintContext:
    """What earlier texts of one run created: tables, indexes, views and enum types that
    nobody uses yet.

    Pass the same context to `lint_sql` for each migration file in order, so a table created in
    one file and indexed in the next is still new.
    """

    def __init__(self, new_tables: Iterable[str] = ()) -> None:
        self.tables = TableSet(new_tables)
        self.indexes: set[str] = set()
        self.views = TableSet()
        self.types: set[str] = set()


def lint_file(
    path: Path, context: LintContext | None = None, config: LintConfig | None = None
) -> list[Finding]:
    """Lint a .sql file as raw SQL (lock_timeout required)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        message = f"not valid UTF-8 ({exc.reason}); instead save the file as UTF-8"
        return [Finding(SYNTAX_ERROR, message, 1, 1, "", False)]
    return lint_sql(text, context=context, config=config)


def lint_paths(
    paths: Iterable[Path], config: LintConfig | None = None
) -> list[tuple[Path, Finding]]:
    """Lint .sql files and directories as one run: what an earlier file creates is new after."""
    context = LintContext()
    found: list[tuple[Path, Finding]] = []
    with fast_parsing():  # once for the run, not once a file
        for path in collect_sql_files(paths):
            found += [(path, f) for f in lint_file(path, context, config)]
    return found


def lint_sql(
    text: str,
    *,
    first_line: int = 1,
    new_tables: frozenset[str] = frozenset(),
    in_cutover: bool = False,
    require_lock_timeout: bool = True,
    context: LintContext | None = None,
    config: LintConfig | None = None,
) -> list[Finding]:
    """Every rule of docs/lint.md over `text`, in statement order; never raises on bad SQL.

    `first_line` is the line `text` starts on in its file. `new_tables` (lowercased, with or
    without schema) are tables the plan creates, exempt from the "existing table" rules.
    `context` carries what earlier texts of the same run created, and receives what this text
    creates. `config` sets rules' severities (or turns them off).
    """
    with fast_parsing():
        return _lint(
            text, first_line, new_tables, in_cutover, require_lock_timeout, context, config
        )


def _lint(
    text: str,
    first_line: int,
    new_tables: frozenset[str],
    in_cutover: bool,
    require_lock_timeout: bool,
    context: LintContext | None,
    config: LintConfig | None,
) -> list[Finding]:
    source = Source(text, first_line)
    try:
        raw_statements = parse(text)
    except pglast.Error as exc:
        return [syntax_error(source, exc)]
    if context is None:
        context = LintContext()
    for name in new_tables:
        schema, _, rel = name.lower().rpartition(".")
        context.tables.add(schema or None, rel)
    state = State(
        new_tables=context.tables,
        new_indexes=context.indexes,
        new_types=context.types,
        new_views=context.views,
        in_cutover=in_cutover,
        require_lock_timeout=require_lock_timeout,
    )
    state.views_in_text = created_views(raw_statements)
    config = config or _DEFAULT
    findings: list[Finding] = []
    for statement in source.statements(raw_statements):
        units = [(statement.node, statement.start, statement.end, statement.allowed)]
        if isinstance(statement.node, ast.DoStmt):
            units += do_statements(source, statement)
        for node, start, end, allowed in units:
            state.in_do = node is not statement.node
            for rule, message in _check(node, state):
                severity = config.severity(rule)
                if severity == "off":
                    continue
                findings.append(
                    Finding(
                        rule=rule.id,
                        message=message,
                        line=source.line(start),
                        column=source.column(start),
                        statement=text[start:end].strip(),
                        allowed=rule.id in allowed,
                        severity=severity,
                    )
                )
        state.in_do = False
    return findings


def _check(node: ast.Node, state: State) -> list[tuple[Rule, str]]:
    """Every rule's messages on one statement, each once, updating `state` as it goes: each
    command of an ALTER TABLE sees what the commands before it did."""
    found: list[tuple[Rule, str]] = []
    state.before(node)
    if isinstance(node, ast.AlterTableStmt):
        for command in alter_commands(node, state):
            _run(command, state, found)
            state.after_command(command)
    _run(node, state, found)
    state.after(node)
    fired = {rule.id for rule, _ in found}
    found += [(STATEMENT_TIMEOUT, message) for message in follow_up(fired, state)]
    return list(dict.fromkeys(found))


def _run(unit: Unit, state: State, found: list[tuple[Rule, str]]) -> None:
    kind: type = type(unit)
    for rule, check in _checks_for(kind):
        found += [(rule, message) for message in check(unit, state)]


@functools.cache
def _checks_for(kind: type) -> tuple[tuple[Rule, Check], ...]:
    """The checks that look at statements of this type, in order."""
    return tuple((rule, check) for rule, check, nodes in CHECKS if issubclass(kind, nodes))
