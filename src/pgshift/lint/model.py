"""A rule and a finding: what every part of the linter passes around."""

from __future__ import annotations

from dataclasses import dataclass

SYNTAX_ERROR = "syntax-error"


@dataclass(frozen=True)
class Rule:
    id: str
    slug: str
    summary: str
    severity: str = "error"  # "error" fails the run; "warning" is shown only


@dataclass(frozen=True)
class Finding:
    rule: str
    message: str
    line: int
    column: int
    statement: str
    allowed: bool
    severity: str = "error"

    @property
    def fails(self) -> bool:
        """Whether this finding fails the run: an error that was not allowed."""
        return not self.allowed and self.severity == "error"


def format_finding(f: Finding, filename: str) -> str:
    """`file:line:column: RULE message` on one line."""
    suffix = " (allowed)" if f.allowed else ""
    label = " warning:" if f.severity == "warning" else ""
    return f"{filename}:{f.line}:{f.column}: {f.rule}{label} {f.message}{suffix}"
