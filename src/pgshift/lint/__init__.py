"""DDL safety rules (docs/lint.md): statements that would lock or rewrite a live table.

The linter reads SQL text only, never a database, so "existing table" means any table the text
did not create itself and the caller did not list in `new_tables`. Every finding names the safe
alternative; `-- pgshift:allow RULE` on a line of the statement accepts one deliberately.
"""

from __future__ import annotations

from pgshift.lint.config import ConfigError, LintConfig, discover, find_config, load_config
from pgshift.lint.engine import LintContext, lint_file, lint_paths, lint_sql
from pgshift.lint.files import collect_sql_files
from pgshift.lint.model import SYNTAX_ERROR, Finding, Rule, format_finding
from pgshift.lint.output import FORMATS, render
from pgshift.lint.rules import RULES

__all__ = [
    "FORMATS",
    "RULES",
    "SYNTAX_ERROR",
    "ConfigError",
    "Finding",
    "LintConfig",
    "LintContext",
    "Rule",
    "collect_sql_files",
    "discover",
    "find_config",
    "format_finding",
    "lint_file",
    "lint_paths",
    "lint_sql",
    "load_config",
    "render",
]
