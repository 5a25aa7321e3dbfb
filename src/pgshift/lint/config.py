"""Rule severities from a config file: `[tool.pgshift.lint]` in pyproject.toml or `[lint]` in
.pgshift.toml, the nearest one from the current directory up (docs/lint.md)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgshift.errors import UsageError
from pgshift.lint.model import Rule
from pgshift.lint.rules import RULES

SEVERITIES = ("error", "warning", "off")

_BY_NAME: dict[str, str] = {
    **{rule.id.lower(): rule.id for rule in RULES},
    **{rule.slug: rule.id for rule in RULES},
}


class ConfigError(UsageError):
    """A config file pgshift cannot use; the message says what to fix."""


@dataclass(frozen=True)
class LintConfig:
    severities: Mapping[str, str] = field(default_factory=dict)  # rule id -> SEVERITIES
    path: Path | None = None  # the file it was read from

    def severity(self, rule: Rule) -> str:
        return self.severities.get(rule.id, rule.severity)


def find_config(start: Path) -> Path | None:
    """The nearest .pgshift.toml with a [lint] table, or pyproject.toml with a
    [tool.pgshift.lint] table, in `start` or a directory above it."""
    for folder in (start, *start.parents):
        for name in (".pgshift.toml", "pyproject.toml"):
            candidate = folder / name
            if candidate.is_file() and _lint_table(candidate) is not None:
                return candidate
    return None


def load_config(path: Path) -> LintConfig:
    """The lint settings of a config file (either kind), checked."""
    table = _lint_table(path)
    if table is None:
        where = "[tool.pgshift.lint]" if path.name == "pyproject.toml" else "[lint]"
        raise ConfigError(f"{path}: no {where} table; add one or name another file")
    return LintConfig(_severities(path, table), path)


def discover(start: Path | None = None) -> LintConfig:
    """The config the nearest file sets, else every rule at its default severity."""
    found = find_config(start or Path.cwd())
    return load_config(found) if found is not None else LintConfig()


def _lint_table(path: Path) -> dict[str, Any] | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); fix it or name another file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the file") from None
    table: Any = data.get("lint")
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("pgshift", {}).get("lint")
    return table if isinstance(table, dict) else None


def _rule_id(path: Path, name: object) -> str:
    rule = _BY_NAME.get(str(name).strip().lower())
    if rule is None:
        raise ConfigError(
            f"{path}: no lint rule named {name!r}; use a code (PGS001) or a slug "
            "(rewrite-type-change) from docs/lint.md"
        )
    return rule


def _severities(path: Path, table: dict[str, Any]) -> dict[str, str]:
    unknown = sorted(set(table) - {"severity", "exclude"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown lint setting {unknown[0]!r}; the settings are severity and exclude"
        )
    severities: dict[str, str] = {}
    given = table.get("severity", {})
    if not isinstance(given, dict):
        raise ConfigError(
            f'{path}: lint severity must be a table of rule = "error" | "warning" | "off"'
        )
    for name, value in given.items():
        if value not in SEVERITIES:
            raise ConfigError(
                f"{path}: severity {value!r} of {name} is not one of {', '.join(SEVERITIES)}"
            )
        severities[_rule_id(path, name)] = value
    excluded = table.get("exclude", [])
    if not isinstance(excluded, list):
        raise ConfigError(f'{path}: lint exclude must be a list of rules, like ["PGS014"]')
    for name in excluded:
        severities[_rule_id(path, name)] = "off"
    return severities
