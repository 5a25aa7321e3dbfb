"""PostgreSQL's parser through pglast, without pglast's per-attribute checks.

pglast's nodes check and coerce every value assigned to them (`Node.__setattr__`): that is for
nodes built by hand, yet it runs for each attribute the parser sets too, and takes about 85% of
`parse_sql`'s time. The parser's values are already of the right types (only a Boolean's
`boolval` arrives as 0 / 1 instead of False / True, equal either way), so while it parses, node
attributes are set plainly. tests/unit/test_lint_parse.py holds the two parses equal.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pglast import ast
from pglast.parser import parse_sql

_LOCK = threading.RLock()  # the switch is process-wide: one thread parses at a time
_depth = 0


@contextmanager
def fast_parsing() -> Iterator[None]:
    """Parse without the checks inside this block. Switching costs more than a small parse, so
    a run switches once around all its files; nested blocks reuse the switch."""
    global _depth
    with _LOCK:
        checked = ast.Node.__setattr__
        if _depth == 0:
            ast.Node.__setattr__ = object.__setattr__  # type: ignore[method-assign,assignment]
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
            if _depth == 0:
                ast.Node.__setattr__ = checked  # type: ignore[method-assign]


def parse(text: str) -> tuple[ast.RawStmt, ...]:
    """`pglast.parser.parse_sql(text)`, several times faster; raises what it raises."""
    with fast_parsing():
        result: tuple[ast.RawStmt, ...] = parse_sql(text)
        return result
