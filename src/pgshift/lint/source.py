"""Where things are in a SQL text: statements' exact spans, lines and columns, the allow
comments that accept a finding, and the finding of a text PostgreSQL cannot parse."""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pglast
from pglast import ast
from pglast.parser import parse_sql, scan, split

from pgshift.lint.model import SYNTAX_ERROR, Finding
from pgshift.lint.rules import RULES

# Both the id and the slug work in an allow comment, in any case.
_RULE_BY_NAME: dict[str, str] = {
    **{rule.id.lower(): rule.id for rule in RULES},
    **{rule.slug: rule.id for rule in RULES},
}

# `pgshift:allow RULE[, RULE]` and `pgshift-lint: ignore RULE[, RULE] [reason]`.
_ALLOW = re.compile(
    r"(?:pgshift:allow|pgshift-lint:\s*ignore)\s+([\w-]+(?:\s*,\s*[\w-]+)*)", re.IGNORECASE
)


def allowed_on_line(body: str, offset: int) -> set[str]:
    """Rules an allow comment names on the line of `offset`, or on a comment line before it."""
    line_start = body.rfind("\n", 0, offset) + 1
    line_end = body.find("\n", offset)
    lines = [body[line_start : line_end if line_end >= 0 else len(body)]]
    if line_start > 0:
        previous_start = body.rfind("\n", 0, line_start - 1) + 1
        previous = body[previous_start : line_start - 1]
        if previous.strip().startswith("--"):
            lines.append(previous)
    names: set[str] = set()
    for line in lines:
        comment = line.find("--")
        if comment < 0:
            continue
        for match in _ALLOW.finditer(line[comment:]):
            names |= rule_names(match.group(1))
    return names


def rule_names(listed: str) -> set[str]:
    return {
        _RULE_BY_NAME.get(name.strip().lower(), name.strip().upper()) for name in listed.split(",")
    }


_COMMENT_TOKENS = frozenset({"SQL_COMMENT", "C_COMMENT"})


@functools.cache
def _locations_are_bytes() -> bool:
    # pglast maps libpg_query's UTF-8 byte offsets to str indices; builds that did not would
    # put every line after a non-ASCII character off. One probe decides, once.
    probe = "SELECT 'ééé'; SELECT 1"
    location = parse_sql(probe)[1].stmt_location or 0
    return location >= len("SELECT 'ééé';".encode())


@dataclass
class Statement:
    node: ast.Node
    start: int  # str index of the first token
    end: int  # str index just past the last token (the `;` excluded)
    allowed: set[str] = field(default_factory=set)


class Source:
    def __init__(self, text: str, first_line: int) -> None:
        self.text = text
        self.first_line = first_line
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self._utf8 = text.encode() if _locations_are_bytes() else b""

    def index(self, location: int) -> int:
        """A pglast location as an index into the str."""
        if not self._utf8:
            return location
        return len(self._utf8[:location].decode("utf-8", "ignore"))

    def line_index(self, index: int) -> int:
        return bisect.bisect_right(self._line_starts, index) - 1

    def line(self, index: int) -> int:
        return self.first_line + self.line_index(index)

    def column(self, index: int) -> int:
        return index - self._line_starts[self.line_index(index)] + 1

    def statements(self, raws: Iterable[ast.RawStmt]) -> Iterator[Statement]:
        """Each statement with its exact span and the rules allowed on its lines."""
        tokens = scan(self.text)
        if self._utf8:
            index = self.index
            spans_of = [(index(t.start), index(t.end) + 1, t.name) for t in tokens]
        else:  # str indices already: no conversion
            spans_of = [(t.start, t.end + 1, t.name) for t in tokens]
        # (start, end exclusive, token name)
        code = [t for t in spans_of if t[2] not in _COMMENT_TOKENS]
        comments = [(t[0], self.text[t[0] : t[1]]) for t in spans_of if t[2] in _COMMENT_TOKENS]
        starts = [t[0] for t in code]

        spans: list[tuple[Statement, int, int]] = []  # statement, first line, last line
        for raw in raws:
            if raw.stmt is None:
                continue
            location = raw.stmt_location or 0
            begin = self.index(location)
            stop = self.index(location + raw.stmt_len) if raw.stmt_len else len(self.text)
            # stmt_location may include leading comments and blanks (PostgreSQL < 18).
            first = bisect.bisect_left(starts, begin)
            last = bisect.bisect_left(starts, stop) - 1
            if first > last:
                continue
            statement = Statement(raw.stmt, code[first][0], code[last][1])
            end_token = (
                last + 1 if last + 1 < len(code) and code[last + 1][2] == "ASCII_59" else last
            )
            spans.append(
                (statement, self.line_index(statement.start), self.line_index(code[end_token][0]))
            )

        for start, comment in comments:
            for match in _ALLOW.finditer(comment):
                names = rule_names(match.group(1))
                for statement in self._owners(spans, self.line_index(start + match.start())):
                    statement.allowed |= names
        for statement, _, _ in spans:
            yield statement

    @staticmethod
    def _owners(spans: list[tuple[Statement, int, int]], line: int) -> list[Statement]:
        # A comment belongs to every statement on its line; a comment on a line of its own
        # belongs to the statement that follows it.
        on_line = [statement for statement, first, last in spans if first <= line <= last]
        if on_line:
            return on_line
        after = [statement for statement, first, _ in spans if first > line]
        return after[:1]


def syntax_error(source: Source, exc: pglast.Error) -> Finding:
    text = source.text
    message = str(exc.args[0]) if exc.args else str(exc)
    location = exc.args[1] if len(exc.args) > 1 else None
    if not isinstance(location, int):  # "at end of input"
        location = max(len(text.rstrip()) - 1, 0)
    statement = ""
    try:
        # The statement the error falls in, or the one it ends (an error at its `;`).
        for part in split(text, with_parser=False, only_slices=True):
            if part.start <= location:
                statement = text[part]
    except pglast.Error:
        pass
    if not statement:
        line_start = text.rfind("\n", 0, location) + 1
        line_end = text.find("\n", location)
        statement = text[line_start : line_end if line_end >= 0 else len(text)]
    return Finding(
        rule=SYNTAX_ERROR,
        message=f"{message}; instead fix the SQL so PostgreSQL can parse it",
        line=source.line(location),
        column=source.column(location),
        statement=statement.strip(),
        allowed=False,
    )
