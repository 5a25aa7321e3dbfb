"""The plan's own SQL expressions (a CHECK's condition, a default, an index predicate): one
expression each, parsed, and the columns they name."""

from __future__ import annotations

from typing import Any

import pglast
from pglast.visitors import Visitor

from pgshift.plan.check import parse_expression


class _Columns(Visitor):
    def __init__(self) -> None:
        self.found: set[str] = set()

    def visit_ColumnRef(self, ancestors: Any, node: Any) -> None:
        last = node.fields[-1]
        name = getattr(last, "sval", None)
        if name is not None:
            self.found.add(name)


def expression_columns(text: str, path: tuple[str | int, ...]) -> set[str]:
    """The column names `text` refers to; refuses anything but one expression."""
    parse_expression(text, path)
    visitor = _Columns()
    visitor(pglast.parse_sql(f"SELECT ({text})"))
    return visitor.found
