"""Findings as text lines, JSON, SARIF 2.1.0 or GitHub Actions annotations."""

from __future__ import annotations

import json
from collections.abc import Sequence

from pgshift.lint.config import LintConfig
from pgshift.lint.model import Finding, format_finding
from pgshift.lint.rules import RULES

_SLUGS = {rule.id: rule.slug for rule in RULES}
_SARIF_LEVEL = {"error": "error", "warning": "warning", "off": "none"}

FORMATS = ("text", "json", "sarif", "github")


def _escape_github(value: str, *, prop: bool = False) -> str:
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        value = value.replace(":", "%3A").replace(",", "%2C")
    return value


def render(
    findings: Sequence[tuple[str, Finding]], fmt: str, config: LintConfig | None = None
) -> str:
    """Findings, each with its file name, as `text`, `json`, `sarif` or `github` annotations.
    `config` gives SARIF's rule levels (each rule's default severity without it)."""
    config = config or LintConfig()
    if fmt == "text":
        return "".join(format_finding(f, file) + "\n" for file, f in findings)
    if fmt == "github":
        lines = []
        for file, f in findings:
            level = "warning" if f.severity == "warning" or f.allowed else "error"
            props = f"file={_escape_github(file, prop=True)},line={f.line},col={f.column}"
            title = _escape_github(f"{f.rule}" + (" (allowed)" if f.allowed else ""), prop=True)
            lines.append(f"::{level} {props},title={title}::{_escape_github(f.message)}\n")
        return "".join(lines)
    if fmt == "json":
        rows = [
            {
                "file": file,
                "line": f.line,
                "column": f.column,
                "rule": f.rule,
                "slug": _SLUGS.get(f.rule, f.rule),
                "severity": f.severity,
                "allowed": f.allowed,
                "message": f.message,
                "statement": f.statement,
            }
            for file, f in findings
        ]
        return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    if fmt == "sarif":
        rules = [
            {
                "id": rule.id,
                "name": rule.slug,
                "shortDescription": {"text": rule.summary},
                "helpUri": "docs/lint.md",
                "defaultConfiguration": {"level": _SARIF_LEVEL[config.severity(rule)]},
            }
            for rule in RULES
        ]
        results = [
            {
                "ruleId": f.rule,
                "level": "note" if f.allowed else f.severity,
                "message": {"text": f.message},
                **({"suppressions": [{"kind": "inSource"}]} if f.allowed else {}),
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": file},
                            "region": {"startLine": f.line, "startColumn": f.column},
                        }
                    }
                ],
            }
            for file, f in findings
        ]
        log = {
            "version": "2.1.0",
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "runs": [
                {
                    "tool": {"driver": {"name": "pgshift-lint", "rules": rules}},
                    "results": results,
                }
            ],
        }
        return json.dumps(log, indent=2, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
