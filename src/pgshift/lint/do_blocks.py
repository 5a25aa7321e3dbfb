"""The SQL statements inside a PL/pgSQL `DO` block, each at its real place in the file."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pglast
from pglast import ast, parse_plpgsql

from pgshift.lint.parse import parse
from pgshift.lint.source import Source, Statement, allowed_on_line

_DOLLAR_QUOTE = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")


def do_statements(
    source: Source, statement: Statement
) -> list[tuple[ast.Node, int, int, set[str]]]:
    """The SQL statements of a PL/pgSQL DO block, each with its span in the file's text.

    Only statements PL/pgSQL runs as written count; a string given to EXECUTE is not looked
    into. A body pgshift cannot parse is skipped: PostgreSQL reports it when the block runs.
    """
    node = statement.node
    assert isinstance(node, ast.DoStmt)
    body: str | None = None
    location: int | None = None
    language = "plpgsql"
    for arg in node.args or ():
        if not isinstance(arg, ast.DefElem) or not isinstance(arg.arg, ast.String):
            continue
        if arg.defname == "as":
            body, location = arg.arg.sval, arg.arg_location
        elif arg.defname == "language":
            language = (arg.arg.sval or "").lower()
    if body is None or language != "plpgsql":
        return []
    text = source.text
    body_start = source.index(location) if isinstance(location, int) and location >= 0 else -1
    if body_start < 0:
        body_start = statement.start
    opener = _DOLLAR_QUOTE.match(text, body_start)
    if opener is not None:
        body_start = opener.end()
    elif text.startswith("'", body_start):
        body_start += 1
    try:
        tree = parse_plpgsql(
            f"CREATE FUNCTION pgshift_do() RETURNS void LANGUAGE plpgsql AS $pgshift_do${body}"
            "$pgshift_do$"
        )
    except Exception:  # pglast.Error, or anything the PL/pgSQL parser trips on
        return []
    if isinstance(tree, str):
        tree = json.loads(tree)
    line_starts = [0] + [m.end() for m in re.finditer("\n", body)]
    units: list[tuple[ast.Node, int, int, set[str]]] = []
    for lineno, query, written, skip in _execsql(tree):
        try:
            nodes = parse(query)
        except pglast.Error:
            continue
        line_start = line_starts[min(max(lineno - 1, 0), len(line_starts) - 1)]
        offset = body.find(written.strip()[:40], line_start)
        if offset < 0:
            offset = line_start + len(body[line_start:]) - len(body[line_start:].lstrip(" \t"))
        else:
            offset += skip
        start = body_start + offset
        end = start + len(query.strip())
        allowed = set(statement.allowed) | allowed_on_line(body, offset)
        for raw in nodes:
            if raw.stmt is not None:
                units.append((raw.stmt, start, min(end, statement.end), allowed))
    return units


def _execsql(tree: Any) -> Iterator[tuple[int, str, str, int]]:
    """Every SQL statement PL/pgSQL runs as written in a PL/pgSQL parse tree, and every
    `EXECUTE 'constant string'`: (line in the body, SQL, its text as written, offset of the SQL
    in that text)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "PLpgSQL_stmt_execsql" and isinstance(value, dict):
                expr = value.get("sqlstmt", {}).get("PLpgSQL_expr", {})
                query = expr.get("query")
                if isinstance(query, str):
                    yield int(value.get("lineno", 1)), query, query, 0
            elif key == "PLpgSQL_stmt_dynexecute" and isinstance(value, dict):
                expr = value.get("query", {}).get("PLpgSQL_expr", {})
                written = expr.get("query")
                constant = _string_constant(written) if isinstance(written, str) else None
                if written and constant is not None and written.lstrip().startswith("'"):
                    skip = len(written) - len(written.lstrip()) + 1
                    yield int(value.get("lineno", 1)), constant, written, skip
            else:
                yield from _execsql(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _execsql(item)


def _string_constant(expression: str) -> str | None:
    """The value of `expression` when it is one string literal, else None."""
    try:
        [raw] = parse(f"SELECT {expression}")
    except (pglast.Error, ValueError):
        return None
    select = raw.stmt
    targets = select.targetList or () if isinstance(select, ast.SelectStmt) else ()
    if len(targets) != 1:
        return None
    target = targets[0]
    if not isinstance(target, ast.ResTarget) or target.indirection:
        return None
    value = target.val
    if isinstance(value, ast.A_Const) and isinstance(value.val, ast.String):
        return value.val.sval
    return None
