"""DDL safety rules (docs/lint.md): statements that would lock or rewrite a live table.

The linter reads SQL text only, never a database, so "existing table" means any table the text
did not create itself and the caller did not list in `new_tables`. Every finding names the safe
alternative; `-- pgshift:allow RULE` on a line of the statement accepts one deliberately.
"""

from __future__ import annotations

import bisect
import functools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pglast
from pglast import ast, enums, parse_plpgsql
from pglast.parser import parse_sql, scan, split
from pglast.stream import RawStream

__all__ = [
    "FORMATS",
    "RULES",
    "SYNTAX_ERROR",
    "Finding",
    "LintContext",
    "Rule",
    "collect_sql_files",
    "format_finding",
    "lint_file",
    "lint_paths",
    "lint_sql",
    "render",
]


@dataclass(frozen=True)
class Rule:
    id: str
    slug: str
    summary: str
    severity: str = "error"  # "error" fails the run; "warning" is shown only


REWRITE_TYPE_CHANGE = Rule(
    "PGS001", "rewrite-type-change", "ALTER COLUMN ... TYPE that rewrites the table"
)
VOLATILE_DEFAULT = Rule(
    "PGS002", "volatile-default", "ADD COLUMN whose value is computed per row (rewrite)"
)
SET_NOT_NULL = Rule("PGS003", "set-not-null", "SET NOT NULL without a validated CHECK")
CONSTRAINT_NOT_VALID = Rule(
    "PGS004", "constraint-not-valid", "ADD FOREIGN KEY / CHECK validated in the same statement"
)
INDEX_CONCURRENTLY = Rule(
    "PGS005", "index-concurrently", "CREATE / DROP INDEX without CONCURRENTLY"
)
CONSTRAINT_USING_INDEX = Rule(
    "PGS006", "constraint-using-index", "ADD UNIQUE / PRIMARY KEY without USING INDEX"
)
RENAME_LIVE = Rule("PGS007", "rename-live", "rename of a live table or column outside cutover")
LOCK_TIMEOUT = Rule("PGS008", "lock-timeout", "lock-taking statement with no lock_timeout set")
REWRITE_MAINTENANCE = Rule(
    "PGS009", "rewrite-maintenance", "VACUUM FULL / CLUSTER / REINDEX without CONCURRENTLY"
)
REWRITE_STORAGE = Rule(
    "PGS010", "rewrite-storage", "SET LOGGED / UNLOGGED / TABLESPACE / ACCESS METHOD"
)

DROP_COLUMN = Rule("PGS011", "drop-column", "ALTER TABLE ... DROP COLUMN on a live table")
DROP_TABLE = Rule("PGS012", "drop-table", "DROP TABLE of a live table")
PREFER_BIGINT = Rule(
    "PGS013", "prefer-bigint", "integer / smallint primary key or identity column", "warning"
)
PREFER_IDENTITY = Rule(
    "PGS014", "prefer-identity", "serial / bigserial instead of an identity column", "warning"
)
CONCURRENTLY_IN_TRANSACTION = Rule(
    "PGS015", "concurrently-in-transaction", "CONCURRENTLY inside BEGIN ... COMMIT or a DO block"
)
DETACH_CONCURRENTLY = Rule(
    "PGS016", "detach-partition-concurrently", "DETACH PARTITION without CONCURRENTLY"
)
PREFER_JSONB = Rule("PGS017", "prefer-jsonb", "json column instead of jsonb", "warning")
PREFER_TIMESTAMPTZ = Rule(
    "PGS018", "prefer-timestamptz", "timestamp without time zone column", "warning"
)

RULES: tuple[Rule, ...] = (
    REWRITE_TYPE_CHANGE,
    VOLATILE_DEFAULT,
    SET_NOT_NULL,
    CONSTRAINT_NOT_VALID,
    INDEX_CONCURRENTLY,
    CONSTRAINT_USING_INDEX,
    RENAME_LIVE,
    LOCK_TIMEOUT,
    REWRITE_MAINTENANCE,
    REWRITE_STORAGE,
    DROP_COLUMN,
    DROP_TABLE,
    PREFER_BIGINT,
    PREFER_IDENTITY,
    CONCURRENTLY_IN_TRANSACTION,
    DETACH_CONCURRENTLY,
    PREFER_JSONB,
    PREFER_TIMESTAMPTZ,
)
_RULE_BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}

SYNTAX_ERROR = "syntax-error"

# Both the id and the slug work in an allow comment, in any case.
_RULE_BY_NAME: dict[str, str] = {
    **{rule.id.lower(): rule.id for rule in RULES},
    **{rule.slug: rule.id for rule in RULES},
}

# `pgshift:allow RULE[, RULE]` and `pgshift-lint: ignore RULE[, RULE] [reason]`.
_ALLOW = re.compile(
    r"(?:pgshift:allow|pgshift-lint:\s*ignore)\s+([\w-]+(?:\s*,\s*[\w-]+)*)", re.IGNORECASE
)


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


class LintContext:
    """What earlier texts of one run created: tables and indexes that nobody uses yet.

    Pass the same context to `lint_sql` for each migration file in order, so a table created in
    one file and indexed in the next is still new.
    """

    def __init__(self, new_tables: Iterable[str] = ()) -> None:
        self.tables = _TableSet(new_tables)
        self.indexes: set[str] = set()


def lint_file(path: Path, context: LintContext | None = None) -> list[Finding]:
    """Lint a .sql file as raw SQL (lock_timeout required)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        message = f"not valid UTF-8 ({exc.reason}); instead save the file as UTF-8"
        return [Finding(SYNTAX_ERROR, message, 1, 1, "", False)]
    return lint_sql(text, context=context)


def lint_sql(
    text: str,
    *,
    first_line: int = 1,
    new_tables: frozenset[str] = frozenset(),
    in_cutover: bool = False,
    require_lock_timeout: bool = True,
    context: LintContext | None = None,
) -> list[Finding]:
    """Every rule of docs/lint.md over `text`, in statement order; never raises on bad SQL.

    `first_line` is the line `text` starts on in its file. `new_tables` (lowercased, with or
    without schema) are tables the plan creates, exempt from the "existing table" rules.
    `context` carries the tables and indexes earlier texts of the same run created, and
    receives those this text creates.
    """
    source = _Source(text, first_line)
    try:
        raw_statements = parse_sql(text)
    except pglast.Error as exc:
        return [_syntax_error(source, exc)]
    if context is None:
        context = LintContext()
    for name in new_tables:
        schema, _, rel = name.lower().rpartition(".")
        context.tables.add(schema or None, rel)
    linter = _Linter(
        new_tables=context.tables,
        new_indexes=context.indexes,
        in_cutover=in_cutover,
        require_lock_timeout=require_lock_timeout,
    )
    findings: list[Finding] = []
    for statement in source.statements(raw_statements):
        units = [(statement.node, statement.start, statement.end, statement.allowed)]
        if isinstance(statement.node, ast.DoStmt):
            units += _do_statements(source, statement)
        for node, start, end, allowed in units:
            linter.in_do = node is not statement.node
            seen: set[tuple[str, str]] = set()
            for rule, message in linter.check(node):
                if (rule.id, message) in seen:
                    continue
                seen.add((rule.id, message))
                findings.append(
                    Finding(
                        rule=rule.id,
                        message=message,
                        line=source.line(start),
                        column=source.column(start),
                        statement=text[start:end].strip(),
                        allowed=rule.id in allowed,
                        severity=rule.severity,
                    )
                )
        linter.in_do = False
    return findings


# --- DO blocks ---------------------------------------------------------------------------------

_DOLLAR_QUOTE = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")


def _do_statements(
    source: _Source, statement: _Statement
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
            nodes = parse_sql(query)
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
        allowed = set(statement.allowed) | _allowed_on_line(body, offset)
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
        [raw] = parse_sql(f"SELECT {expression}")
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


def _allowed_on_line(body: str, offset: int) -> set[str]:
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
            names |= _rule_names(match.group(1))
    return names


def _rule_names(listed: str) -> set[str]:
    return {
        _RULE_BY_NAME.get(name.strip().lower(), name.strip().upper()) for name in listed.split(",")
    }


# --- several files -----------------------------------------------------------------------------

_DOWN_MIGRATION = re.compile(r"(^|[._-])down\.sql$", re.IGNORECASE)


def _natural_key(path: Path) -> tuple[tuple[int, int | str], ...]:
    """`2_a.sql` before `10_a.sql`: digit runs compare as numbers, the rest ignoring case."""
    key: list[tuple[int, int | str]] = []
    for part in path.parts:
        for chunk in re.split(r"(\d+)", part):
            if chunk.isdigit():
                key.append((0, int(chunk)))
            elif chunk:
                key.append((1, chunk.lower()))
        key.append((2, ""))
    return tuple(key)


def collect_sql_files(paths: Iterable[Path]) -> list[Path]:
    """The .sql files to lint, in the order a migration tool applies them.

    A file is taken as given; a directory gives its .sql files (recursively, down migrations
    such as `0003_x.down.sql` left out) in natural order of their paths inside it.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = [
                p for p in path.rglob("*.sql") if p.is_file() and not _DOWN_MIGRATION.search(p.name)
            ]
            files += sorted(found, key=lambda p: _natural_key(p.relative_to(path)))
        else:
            files.append(path)
    return files


def lint_paths(paths: Iterable[Path]) -> list[tuple[Path, Finding]]:
    """Lint .sql files and directories as one run: what an earlier file creates is new after."""
    context = LintContext()
    found: list[tuple[Path, Finding]] = []
    for path in collect_sql_files(paths):
        found += [(path, f) for f in lint_file(path, context)]
    return found


# --- output ------------------------------------------------------------------------------------

FORMATS = ("text", "json", "sarif", "github")


def _escape_github(value: str, *, prop: bool = False) -> str:
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        value = value.replace(":", "%3A").replace(",", "%2C")
    return value


def render(findings: Sequence[tuple[str, Finding]], fmt: str) -> str:
    """Findings, each with its file name, as `text`, `json`, `sarif` or `github` annotations."""
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
                "slug": _RULE_BY_ID[f.rule].slug if f.rule in _RULE_BY_ID else f.rule,
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
                "defaultConfiguration": {"level": rule.severity},
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


# --- positions ---------------------------------------------------------------------------------


@functools.cache
def _locations_are_bytes() -> bool:
    # pglast maps libpg_query's UTF-8 byte offsets to str indices; builds that did not would
    # put every line after a non-ASCII character off. One probe decides, once.
    probe = "SELECT 'ééé'; SELECT 1"
    location = parse_sql(probe)[1].stmt_location or 0
    return location >= len("SELECT 'ééé';".encode())


@dataclass
class _Statement:
    node: ast.Node
    start: int  # str index of the first token
    end: int  # str index just past the last token (the `;` excluded)
    allowed: set[str] = field(default_factory=set)


class _Source:
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

    def statements(self, raws: Iterable[ast.RawStmt]) -> Iterator[_Statement]:
        """Each statement with its exact span and the rules allowed on its lines."""
        code: list[tuple[int, int, str]] = []  # (start, end exclusive, token name)
        comments: list[tuple[int, str]] = []
        for token in scan(self.text):
            start, end = self.index(token.start), self.index(token.end) + 1
            if token.name in ("SQL_COMMENT", "C_COMMENT"):
                comments.append((start, self.text[start:end]))
            else:
                code.append((start, end, token.name))
        starts = [start for start, _, _ in code]

        spans: list[tuple[_Statement, int, int]] = []  # statement, first line, last line
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
            statement = _Statement(raw.stmt, code[first][0], code[last][1])
            end_token = (
                last + 1 if last + 1 < len(code) and code[last + 1][2] == "ASCII_59" else last
            )
            spans.append(
                (statement, self.line_index(statement.start), self.line_index(code[end_token][0]))
            )

        for start, comment in comments:
            for match in _ALLOW.finditer(comment):
                names = _rule_names(match.group(1))
                for statement in self._owners(spans, self.line_index(start + match.start())):
                    statement.allowed |= names
        for statement, _, _ in spans:
            yield statement

    @staticmethod
    def _owners(spans: list[tuple[_Statement, int, int]], line: int) -> list[_Statement]:
        # A comment belongs to every statement on its line; a comment on a line of its own
        # belongs to the statement that follows it.
        on_line = [statement for statement, first, last in spans if first <= line <= last]
        if on_line:
            return on_line
        after = [statement for statement, first, _ in spans if first > line]
        return after[:1]


def _syntax_error(source: _Source, exc: pglast.Error) -> Finding:
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


# --- names -------------------------------------------------------------------------------------


def _name(schema: str | None, rel: str) -> str:
    return f"{schema}.{rel}" if schema else rel


def _range_var_name(rv: ast.RangeVar | None) -> str:
    return _name(rv.schemaname, rv.relname or "") if rv is not None else "?"


def _strings(parts: Iterable[object]) -> list[str]:
    return [p.sval for p in parts if isinstance(p, ast.String) and p.sval is not None]


class _TableSet:
    """Table names matched the way a reader would: a schema on both sides must agree."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._qualified: set[str] = set()
        self._unqualified: set[str] = set()
        self._any: set[str] = set()
        for name in names:
            schema, _, rel = name.lower().rpartition(".")
            self.add(schema or None, rel)

    def add(self, schema: str | None, rel: str) -> None:
        rel = rel.lower()
        self._any.add(rel)
        if schema:
            self._qualified.add(f"{schema.lower()}.{rel}")
        else:
            self._unqualified.add(rel)

    def add_range_var(self, rv: ast.RangeVar | None) -> None:
        if rv is not None and rv.relname:
            self.add(rv.schemaname, rv.relname)

    def contains(self, schema: str | None, rel: str) -> bool:
        rel = rel.lower()
        if schema:
            return f"{schema.lower()}.{rel}" in self._qualified or rel in self._unqualified
        return rel in self._any

    def contains_range_var(self, rv: ast.RangeVar | None) -> bool:
        if rv is None or not rv.relname:
            return False
        return self.contains(rv.schemaname, rv.relname)


# --- expressions and types ---------------------------------------------------------------------


def _walk(value: object) -> Iterator[ast.Node]:
    if isinstance(value, ast.Node):
        yield value
        for attribute in value:
            yield from _walk(getattr(value, attribute))
    elif isinstance(value, tuple):
        for item in value:
            yield from _walk(item)


# Immutable or stable functions seen in column defaults: a default built only from these is
# evaluated once by ADD COLUMN (PostgreSQL 11+), so no rewrite. Anything else might be volatile.
# fmt: off
_NON_VOLATILE = frozenset({
    "now", "transaction_timestamp", "statement_timestamp", "timezone", "date_trunc",
    "date_part", "extract", "make_date", "make_time", "make_timestamp", "make_timestamptz",
    "make_interval", "to_timestamp", "to_date", "to_char", "to_number", "lower", "upper",
    "initcap", "trim", "btrim", "ltrim", "rtrim", "lpad", "rpad", "length", "char_length",
    "octet_length", "substr", "substring", "left", "right", "replace", "concat", "concat_ws",
    "format", "md5", "sha256", "encode", "decode", "split_part", "repeat", "reverse", "abs",
    "round", "trunc", "ceil", "ceiling", "floor", "mod", "power", "sqrt", "greatest", "least",
    "coalesce", "nullif", "jsonb_build_object", "jsonb_build_array", "json_build_object",
    "json_build_array", "to_jsonb", "to_json", "array_fill", "int4range", "int8range",
    "numrange", "tsrange", "tstzrange", "daterange", "current_setting", "current_schema",
    "current_database", "uuid_nil",
})
_VOLATILE = frozenset({
    "random", "random_normal", "clock_timestamp", "timeofday", "gen_random_uuid",
    "gen_random_bytes", "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4", "uuidv4",
    "uuidv7", "nextval", "setval", "txid_current", "pg_current_xact_id",
})
# fmt: on
_SERIAL_TYPES = frozenset({"smallserial", "serial", "bigserial", "serial2", "serial4", "serial8"})


def _possibly_volatile_call(expr: object) -> str | None:
    """The first function in `expr` not known to be immutable or stable, or None."""
    for node in _walk(expr):
        if isinstance(node, ast.FuncCall):
            parts = [part.lower() for part in _strings(node.funcname or ())]
            if not parts:
                continue
            schema_ok = len(parts) == 1 or parts[0] == "pg_catalog"
            if not schema_ok or parts[-1] not in _NON_VOLATILE:
                return ".".join(parts)
    return None


@dataclass(frozen=True)
class _Type:
    name: str
    mods: tuple[int, ...] | None  # None when a modifier is not an integer constant
    dims: int


def _type(type_name: ast.TypeName | None) -> _Type:
    if type_name is None:
        return _Type("", None, 0)
    parts = [part.lower() for part in _strings(type_name.names or ())]
    if parts[:1] == ["pg_catalog"]:
        parts = parts[1:]
    mods: list[int] | None = []
    for mod in type_name.typmods or ():
        if (
            mods is not None
            and isinstance(mod, ast.A_Const)
            and isinstance(mod.val, ast.Integer)
            and mod.val.ival is not None
        ):
            mods.append(mod.val.ival)
        else:
            mods = None
    return _Type(
        ".".join(parts), None if mods is None else tuple(mods), len(type_name.arrayBounds or ())
    )


def _type_text(type_name: ast.TypeName | None) -> str:
    """A type as a user would write it (`bigint`, not `pg_catalog.int8`)."""
    if type_name is None:
        return "?"
    try:
        return RawStream()(type_name)
    except Exception:  # display only: never let the printer fail a lint
        return ".".join(_strings(type_name.names or ()))


def _binary_coercible(old: _Type, new: _Type) -> bool:
    """Type changes PostgreSQL makes without a rewrite, decided from both declared types."""
    if old.mods is None or new.mods is None or old.dims != new.dims:
        return False
    if old == new:
        return True
    if old.dims:
        return False
    if (old.name, new.name) == ("varchar", "text") or (old.name, new.name, new.mods) == (
        "text",
        "varchar",
        (),
    ):
        return True
    if old.name == new.name and old.name in ("varchar", "varbit"):
        return not new.mods or (bool(old.mods) and new.mods[0] >= old.mods[0])
    if old.name == new.name == "numeric":
        if not new.mods:
            return True
        if not old.mods:
            return False
        old_scale = old.mods[1] if len(old.mods) > 1 else 0
        new_scale = new.mods[1] if len(new.mods) > 1 else 0
        return new_scale == old_scale and new.mods[0] >= old.mods[0]
    return False


def _not_null_columns(expr: object) -> set[str]:
    """Columns a CHECK expression proves NOT NULL: `col IS NOT NULL`, alone or AND-ed."""
    if (
        isinstance(expr, ast.NullTest)
        and expr.nulltesttype == enums.NullTestType.IS_NOT_NULL
        and isinstance(expr.arg, ast.ColumnRef)
    ):
        fields = _strings(expr.arg.fields or ())
        return {fields[-1]} if fields else set()
    if isinstance(expr, ast.BoolExpr) and expr.boolop == enums.BoolExprType.AND_EXPR:
        return {column for arg in expr.args or () for column in _not_null_columns(arg)}
    return set()


def _option_on(options: Iterable[object] | None, name: str) -> bool:
    """Whether a `(name [boolean])` option of VACUUM or REINDEX is on."""
    for option in options or ():
        if isinstance(option, ast.DefElem) and option.defname == name:
            arg = option.arg
            if isinstance(arg, ast.String):
                return (arg.sval or "").lower() not in ("false", "off", "0", "no")
            if isinstance(arg, ast.Integer):
                return arg.ival != 0
            if isinstance(arg, ast.Boolean):
                return bool(arg.boolval)
            return True
    return False


def _is_zero_timeout(args: Iterable[object] | None) -> bool:
    for arg in args or ():
        if isinstance(arg, ast.A_Const):
            if isinstance(arg.val, ast.Integer):
                return arg.val.ival == 0
            if isinstance(arg.val, ast.Float | ast.String):
                value = arg.val.fval if isinstance(arg.val, ast.Float) else arg.val.sval
                return re.fullmatch(r"\s*0*\.?0*\s*[a-z]*\s*", value or "") is not None
    return False


# --- the rules ---------------------------------------------------------------------------------

_AT = enums.AlterTableType
_CON = enums.ConstrType
_OBJ = enums.ObjectType

_INSTEAD_TIMEOUT = "instead run SET lock_timeout = '1s'; before it (and retry on timeout)"
_INSTEAD_NOT_VALID = "instead add it NOT VALID, then VALIDATE CONSTRAINT in a separate transaction"

_Result = list[tuple[Rule, str]]


class _Linter:
    """Walks statements in order, keeping what earlier statements established."""

    def __init__(
        self,
        *,
        new_tables: _TableSet,
        new_indexes: set[str],
        in_cutover: bool,
        require_lock_timeout: bool,
    ) -> None:
        self.new_tables = new_tables
        self.new_indexes = new_indexes
        self.in_cutover = in_cutover
        self.in_transaction = False  # between BEGIN and COMMIT / ROLLBACK
        self.in_do = False  # checking a statement of a DO block
        self.require_lock_timeout = require_lock_timeout
        self.session_timeout = False
        self.local_timeout: bool | None = None  # SET LOCAL, until the transaction ends
        self.added_types: dict[tuple[str, str], _Type] = {}
        self.pending_not_null: dict[tuple[str, str], set[str]] = {}  # (table, constraint)
        self.proven_not_null: set[tuple[str, str]] = set()  # (table, column)

    def check(self, node: ast.Node) -> _Result:
        out: _Result = []
        if isinstance(node, ast.VariableSetStmt):
            self._set(node)
        elif isinstance(node, ast.TransactionStmt):
            kind = node.kind
            if kind in (
                enums.TransactionStmtKind.TRANS_STMT_BEGIN,
                enums.TransactionStmtKind.TRANS_STMT_START,
            ):
                self.in_transaction = True
            elif kind not in (
                enums.TransactionStmtKind.TRANS_STMT_SAVEPOINT,
                enums.TransactionStmtKind.TRANS_STMT_RELEASE,
                enums.TransactionStmtKind.TRANS_STMT_ROLLBACK_TO,
            ):
                self.local_timeout = None
                self.in_transaction = False
        elif isinstance(node, ast.CreateStmt):
            self._create_table(node, out)
        elif isinstance(node, ast.CreateTableAsStmt):
            if node.into is not None:
                self.new_tables.add_range_var(node.into.rel)
        elif isinstance(node, ast.AlterTableStmt):
            self._alter_table(node, out)
        elif isinstance(node, ast.IndexStmt):
            self._create_index(node, out)
        elif isinstance(node, ast.DropStmt):
            self._drop(node, out)
        elif isinstance(node, ast.RenameStmt):
            self._rename(node, out)
        elif isinstance(node, ast.AlterObjectSchemaStmt):
            self._set_schema(node, out)
        elif isinstance(node, ast.TruncateStmt | ast.LockStmt):
            relations = [r for r in node.relations or () if isinstance(r, ast.RangeVar)]
            label = "TRUNCATE" if isinstance(node, ast.TruncateStmt) else "LOCK TABLE"
            self._lock(out, label, relations)
        elif isinstance(node, ast.CreateTrigStmt):
            self._lock(out, "CREATE TRIGGER", [node.relation])
        elif isinstance(node, ast.VacuumStmt | ast.ClusterStmt | ast.ReindexStmt):
            self._maintenance(node, out)
        return out

    # lock_timeout

    def _set(self, node: ast.VariableSetStmt) -> None:
        if node.kind == enums.VariableSetKind.VAR_RESET_ALL:
            self.session_timeout, self.local_timeout = False, None
            return
        if (node.name or "").lower() != "lock_timeout":
            return
        active = node.kind == enums.VariableSetKind.VAR_SET_VALUE and not _is_zero_timeout(
            node.args
        )
        if node.is_local:
            self.local_timeout = active
        else:
            self.session_timeout = active
            self.local_timeout = None

    def _lock(
        self,
        out: _Result,
        label: str,
        relations: Sequence[ast.RangeVar | None],
        mode: str = "",
    ) -> None:
        """PGS008 for a statement that locks `relations` (empty: not known from the SQL)."""
        if not self.require_lock_timeout:
            return
        if self.local_timeout if self.local_timeout is not None else self.session_timeout:
            return
        if relations and all(self.new_tables.contains_range_var(r) for r in relations):
            return
        target = ", ".join(_range_var_name(r) for r in relations) if relations else "its table"
        lock = f"its {mode} lock" if mode else "its lock"
        out.append(
            (
                LOCK_TIMEOUT,
                f"{label} on {target} waits for {lock} with no lock_timeout set, and every "
                f"query on the table queues behind that wait; {_INSTEAD_TIMEOUT}",
            )
        )

    # ALTER TABLE

    def _alter_table(self, node: ast.AlterTableStmt, out: _Result) -> None:
        if node.objtype != _OBJ.OBJECT_TABLE:
            return
        rv = node.relation
        table = _range_var_name(rv)
        key = (rv.relname or "").lower() if rv is not None else ""
        is_new = self.new_tables.contains_range_var(rv)
        for cmd in node.cmds or ():
            if not isinstance(cmd, ast.AlterTableCmd):
                continue
            found: _Result = []
            subtype = cmd.subtype
            if subtype == _AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
                self._add_column(cmd.def_, table, key, found)
            elif subtype == _AT.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
                self._alter_type(cmd.name or "", cmd.def_, table, key, found)
            elif subtype == _AT.AT_SetNotNull:
                column = cmd.name or ""
                if (key, column) not in self.proven_not_null:
                    found.append(
                        (
                            SET_NOT_NULL,
                            f"SET NOT NULL on {table}.{column} scans the whole table under an "
                            "ACCESS EXCLUSIVE lock; instead ADD CONSTRAINT ... CHECK "
                            f"({column} IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT, "
                            "then SET NOT NULL",
                        )
                    )
            elif subtype == _AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
                self._add_constraint(cmd.def_, table, key, found)
            elif subtype == _AT.AT_ValidateConstraint:
                columns = self.pending_not_null.pop((key, (cmd.name or "").lower()), set())
                self.proven_not_null |= {(key, column) for column in columns}
            elif subtype == _AT.AT_DropColumn:
                found.append(
                    (
                        DROP_COLUMN,
                        f"DROP COLUMN {cmd.name} on {table} breaks every deployed query that "
                        "still reads or writes it, and its data is gone; instead first deploy "
                        "code that no longer uses the column, then drop it in a later release "
                        "(or let a pgshift migration's contract phase drop it)",
                    )
                )
            elif subtype == _AT.AT_DetachPartition and isinstance(cmd.def_, ast.PartitionCmd):
                if cmd.def_.concurrent:
                    if self.in_transaction or self.in_do:
                        out.append(_in_transaction("ALTER TABLE ... DETACH PARTITION CONCURRENTLY"))
                else:
                    out.append(
                        (
                            DETACH_CONCURRENTLY,
                            f"DETACH PARTITION {_range_var_name(cmd.def_.name)} from {table} "
                            f"takes an ACCESS EXCLUSIVE lock on {table}, blocking reads and "
                            "writes of every partition; instead DETACH PARTITION ... "
                            "CONCURRENTLY (PostgreSQL 14+, outside a transaction block)",
                        )
                    )
            elif subtype in (
                _AT.AT_SetLogged,
                _AT.AT_SetUnLogged,
                _AT.AT_SetTableSpace,
                _AT.AT_SetAccessMethod,
            ):
                what = {
                    _AT.AT_SetLogged: "SET LOGGED",
                    _AT.AT_SetUnLogged: "SET UNLOGGED",
                    _AT.AT_SetTableSpace: "SET TABLESPACE",
                }.get(subtype, "SET ACCESS METHOD")
                found.append(
                    (
                        REWRITE_STORAGE,
                        f"ALTER TABLE {table} {what} copies the whole table under an ACCESS "
                        "EXCLUSIVE lock; instead copy it into a new table with a pgshift "
                        "`new_table` migration",
                    )
                )
            if not is_new:
                out.extend(found)
        if any(
            isinstance(cmd, ast.AlterTableCmd) and not _weak_lock(cmd) for cmd in node.cmds or ()
        ):
            self._lock(out, "ALTER TABLE", [rv])

    def _create_table(self, node: ast.CreateStmt, out: _Result) -> None:
        rv = node.relation
        table = _range_var_name(rv)
        self.new_tables.add_range_var(rv)
        primary: set[str] = set()
        referenced: list[ast.RangeVar] = []
        columns: list[ast.ColumnDef] = []
        for element in node.tableElts or ():
            if isinstance(element, ast.ColumnDef):
                columns.append(element)
                for con in element.constraints or ():
                    if not isinstance(con, ast.Constraint):
                        continue
                    if con.contype == _CON.CONSTR_PRIMARY:
                        primary.add((element.colname or "").lower())
                    elif con.contype == _CON.CONSTR_FOREIGN and con.pktable is not None:
                        referenced.append(con.pktable)
            elif isinstance(element, ast.Constraint):
                if element.contype == _CON.CONSTR_PRIMARY:
                    primary |= {k.lower() for k in _strings(element.keys or ())}
                elif element.contype == _CON.CONSTR_FOREIGN and element.pktable is not None:
                    referenced.append(element.pktable)
        for column in columns:
            self._column_types(column, table, (column.colname or "").lower() in primary, out)
        existing = [r for r in referenced if not self.new_tables.contains_range_var(r)]
        if existing:
            self._lock(out, f"CREATE TABLE {table} ... REFERENCES", existing, "SHARE ROW EXCLUSIVE")

    def _column_types(
        self, column: ast.ColumnDef, table: str, primary_key: bool, out: _Result
    ) -> None:
        """The column-design rules: bigint keys, identity over serial, jsonb, timestamptz."""
        name = column.colname or ""
        declared = _type(column.typeName)
        identity = any(
            isinstance(con, ast.Constraint) and con.contype == _CON.CONSTR_IDENTITY
            for con in column.constraints or ()
        )
        where = f"column {table}.{name}"
        if declared.name in _SERIAL_TYPES:
            out.append(
                (
                    PREFER_IDENTITY,
                    f"{where} is {declared.name}: its sequence is a separate object with its "
                    "own owner and grants, and copies of the table share it; instead declare "
                    f"it bigint GENERATED ALWAYS AS IDENTITY",
                )
            )
        if (
            (primary_key or identity)
            and not declared.dims
            and declared.name
            in (
                "int2",
                "int4",
                "smallint",
                "integer",
                "int",
                "serial",
                "serial2",
                "serial4",
                "smallserial",
            )
        ):
            out.append(
                (
                    PREFER_BIGINT,
                    f"{where} is a {declared.name} key: it runs out at 2^31 (or 2^15) rows, and "
                    "widening it later rewrites the table and every referencing one; instead "
                    "declare it bigint (GENERATED ALWAYS AS IDENTITY)",
                )
            )
        if declared.name == "json":
            out.append(
                (
                    PREFER_JSONB,
                    f"{where} is json: it is stored as text, re-parsed on every use, has no "
                    "equality operator (DISTINCT, GROUP BY, UNIQUE fail) and no GIN index; "
                    "instead declare it jsonb",
                )
            )
        if declared.name == "timestamp":
            out.append(
                (
                    PREFER_TIMESTAMPTZ,
                    f"{where} is timestamp without time zone: its values mean a different "
                    "instant for each session time zone; instead declare it timestamptz",
                )
            )

    def _add_column(self, column: ast.ColumnDef, table: str, key: str, out: _Result) -> None:
        name = column.colname or ""
        declared = _type(column.typeName)
        self.added_types[(key, name)] = declared
        primary = any(
            isinstance(con, ast.Constraint) and con.contype == _CON.CONSTR_PRIMARY
            for con in column.constraints or ()
        )
        self._column_types(column, table, primary, out)
        where = f"ADD COLUMN {name} on {table}"
        rewrite = "rewrites the whole table under an ACCESS EXCLUSIVE lock"
        if declared.name in _SERIAL_TYPES:
            out.append(
                (
                    VOLATILE_DEFAULT,
                    f"{where} as {declared.name} fills every row from a sequence and {rewrite}; "
                    "instead add a nullable column, backfill it in batches, "
                    "then SET DEFAULT nextval(...)",
                )
            )
        defaults: list[object] = [column.raw_default] if column.raw_default is not None else []
        for constraint in column.constraints or ():
            if not isinstance(constraint, ast.Constraint):
                continue
            kind = constraint.contype
            if kind == _CON.CONSTR_DEFAULT:
                defaults.append(constraint.raw_expr)
            elif kind == _CON.CONSTR_IDENTITY:
                out.append(
                    (
                        VOLATILE_DEFAULT,
                        f"{where} GENERATED AS IDENTITY numbers every row and {rewrite}; "
                        "instead add a nullable column, backfill it in batches, "
                        "then ALTER COLUMN ... ADD GENERATED AS IDENTITY",
                    )
                )
            elif (
                kind == _CON.CONSTR_GENERATED and getattr(constraint, "generated_kind", "s") != "v"
            ):
                out.append(
                    (
                        VOLATILE_DEFAULT,
                        f"{where} GENERATED ... STORED computes every row and {rewrite}; "
                        "instead add a plain column kept in step by a pgshift `columns` "
                        "migration (dual_write + backfill)",
                    )
                )
            elif kind in (_CON.CONSTR_CHECK, _CON.CONSTR_FOREIGN):
                what = "CHECK" if kind == _CON.CONSTR_CHECK else "REFERENCES"
                out.append(
                    (
                        CONSTRAINT_NOT_VALID,
                        f"{where} with an inline {what} checks every row under an ACCESS "
                        "EXCLUSIVE lock; instead add the column, then ADD CONSTRAINT ... "
                        "NOT VALID and VALIDATE CONSTRAINT in a separate transaction",
                    )
                )
            elif kind in (_CON.CONSTR_PRIMARY, _CON.CONSTR_UNIQUE):
                what = "PRIMARY KEY" if kind == _CON.CONSTR_PRIMARY else "UNIQUE"
                out.append(
                    (
                        CONSTRAINT_USING_INDEX,
                        f"{where} with an inline {what} builds its index under an ACCESS "
                        "EXCLUSIVE lock; instead add the column, CREATE UNIQUE INDEX "
                        f"CONCURRENTLY, then ADD CONSTRAINT ... {what} USING INDEX",
                    )
                )
        for default in defaults:
            function = _possibly_volatile_call(default)
            if function is None:
                continue
            why = (
                "is volatile"
                if function.rpartition(".")[2] in _VOLATILE
                else "may be volatile (not on pgshift's list of stable functions)"
            )
            out.append(
                (
                    VOLATILE_DEFAULT,
                    f"{where} with default {function}(), which {why}, {rewrite}; instead add "
                    "the column without a default, backfill it in batches, then SET DEFAULT",
                )
            )

    def _alter_type(
        self, name: str, column: ast.ColumnDef, table: str, key: str, out: _Result
    ) -> None:
        new = _type(column.typeName)
        if new.name in ("json", "timestamp"):
            self._column_types(
                ast.ColumnDef(colname=name, typeName=column.typeName), table, False, out
            )
        old = self.added_types.get((key, name))
        plain = column.raw_default is None and column.collClause is None
        if plain and old is not None and _binary_coercible(old, new):
            self.added_types[(key, name)] = new
            return
        shown = _type_text(column.typeName)
        out.append(
            (
                REWRITE_TYPE_CHANGE,
                f"ALTER COLUMN {name} TYPE {shown} on {table} rewrites the whole table (and its "
                "indexes) under an ACCESS EXCLUSIVE lock; instead use a pgshift `columns` "
                "migration (shadow column + backfill)",
            )
        )

    def _add_constraint(self, con: ast.Constraint, table: str, key: str, out: _Result) -> None:
        kind = con.contype
        validated = not con.skip_validation
        name = (con.conname or "").lower()
        if kind == _CON.CONSTR_CHECK:
            columns = _not_null_columns(con.raw_expr)
            if validated:
                self.proven_not_null |= {(key, column) for column in columns}
                out.append(
                    (
                        CONSTRAINT_NOT_VALID,
                        f"ADD CHECK on {table} checks every row under an ACCESS EXCLUSIVE lock; "
                        f"{_INSTEAD_NOT_VALID}",
                    )
                )
            elif columns:
                # Unnamed: PostgreSQL names it <table>_<first column>_check.
                name = name or f"{key}_{sorted(columns)[0]}_check"
                self.pending_not_null[(key, name)] = columns
        elif kind == _CON.CONSTR_NOTNULL:
            columns = set(_strings(con.keys or ()))
            if validated:
                self.proven_not_null |= {(key, column) for column in columns}
                out.append(
                    (
                        SET_NOT_NULL,
                        f"ADD CONSTRAINT ... NOT NULL on {table} scans the whole table under an "
                        f"ACCESS EXCLUSIVE lock; {_INSTEAD_NOT_VALID}",
                    )
                )
            elif name:
                self.pending_not_null[(key, name)] = columns
        elif kind == _CON.CONSTR_FOREIGN and validated:
            referenced = _range_var_name(con.pktable)
            out.append(
                (
                    CONSTRAINT_NOT_VALID,
                    f"ADD FOREIGN KEY on {table} checks every row while holding SHARE ROW "
                    f"EXCLUSIVE locks on {table} and {referenced}; {_INSTEAD_NOT_VALID}",
                )
            )
        elif kind in (_CON.CONSTR_PRIMARY, _CON.CONSTR_UNIQUE) and not con.indexname:
            what = "PRIMARY KEY" if kind == _CON.CONSTR_PRIMARY else "UNIQUE"
            out.append(
                (
                    CONSTRAINT_USING_INDEX,
                    f"ADD {what} on {table} builds its index under an ACCESS EXCLUSIVE lock; "
                    "instead CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... "
                    f"{what} USING INDEX",
                )
            )

    # indexes, drops, renames

    def _create_index(self, node: ast.IndexStmt, out: _Result) -> None:
        rv = node.relation
        if node.concurrent and (self.in_transaction or self.in_do):
            out.append(_in_transaction("CREATE INDEX CONCURRENTLY"))
        if self.new_tables.contains_range_var(rv):
            if node.idxname:
                self.new_indexes.add(node.idxname.lower())
            return
        if node.concurrent:
            return
        name = f"{node.idxname} " if node.idxname else ""
        out.append(
            (
                INDEX_CONCURRENTLY,
                f"CREATE INDEX {name}on {_range_var_name(rv)} without CONCURRENTLY blocks every "
                "write to the table (SHARE lock) for the whole build; instead CREATE INDEX "
                "CONCURRENTLY (outside a transaction block)",
            )
        )
        self._lock(out, "CREATE INDEX", [rv])

    def _drop(self, node: ast.DropStmt, out: _Result) -> None:
        objects = [_strings(o) for o in node.objects or () if isinstance(o, tuple)]
        if node.removeType == _OBJ.OBJECT_INDEX:
            if node.concurrent and (self.in_transaction or self.in_do):
                out.append(_in_transaction("DROP INDEX CONCURRENTLY"))
            if node.concurrent or all(o and o[-1].lower() in self.new_indexes for o in objects):
                return
            names = ", ".join(".".join(o) for o in objects)
            out.append(
                (
                    INDEX_CONCURRENTLY,
                    f"DROP INDEX {names} without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on "
                    "its table, blocking reads and writes; instead DROP INDEX CONCURRENTLY",
                )
            )
            self._lock(out, "DROP INDEX", [])
        elif node.removeType == _OBJ.OBJECT_TABLE:
            tables = [_range_var(o) for o in objects if o]
            live = [t for t in tables if not self.new_tables.contains_range_var(t)]
            if live:
                names = ", ".join(_range_var_name(t) for t in live)
                out.append(
                    (
                        DROP_TABLE,
                        f"DROP TABLE {names} breaks every deployed query that still uses it, "
                        "and its data is gone; instead first deploy code that no longer uses "
                        "it (rename it away or revoke access and wait), then drop it in a "
                        "later release",
                    )
                )
            self._lock(out, "DROP TABLE", tables)
        elif node.removeType in (_OBJ.OBJECT_VIEW, _OBJ.OBJECT_MATVIEW):
            views = [_range_var(o) for o in objects if o]
            what = "DROP VIEW" if node.removeType == _OBJ.OBJECT_VIEW else "DROP MATERIALIZED VIEW"
            self._lock(out, what, views, "ACCESS EXCLUSIVE")
        elif node.removeType == _OBJ.OBJECT_TRIGGER:
            tables = [_range_var(o[:-1]) for o in objects if len(o) > 1]
            self._lock(out, "DROP TRIGGER", tables)

    def _rename(self, node: ast.RenameStmt, out: _Result) -> None:
        rv = node.relation
        if node.renameType == _OBJ.OBJECT_TABLE:
            what = f"RENAME of table {_range_var_name(rv)} to {node.newname}"
        elif node.renameType == _OBJ.OBJECT_COLUMN and node.relationType == _OBJ.OBJECT_TABLE:
            what = f"RENAME COLUMN {_range_var_name(rv)}.{node.subname} to {node.newname}"
        else:
            return
        if self.new_tables.contains_range_var(rv):
            if node.renameType == _OBJ.OBJECT_TABLE and rv is not None and node.newname:
                self.new_tables.add(rv.schemaname, node.newname)
            return
        if not self.in_cutover:
            out.append((RENAME_LIVE, _rename_message(what)))
        self._lock(out, "ALTER TABLE", [rv])

    def _set_schema(self, node: ast.AlterObjectSchemaStmt, out: _Result) -> None:
        if node.objectType != _OBJ.OBJECT_TABLE:
            return
        rv = node.relation
        if self.new_tables.contains_range_var(rv):
            if rv is not None and rv.relname:
                self.new_tables.add(node.newschema, rv.relname)
            return
        if not self.in_cutover:
            what = f"SET SCHEMA {node.newschema} of table {_range_var_name(rv)}"
            out.append((RENAME_LIVE, _rename_message(what)))
        self._lock(out, "ALTER TABLE", [rv])

    def _maintenance(
        self, node: ast.VacuumStmt | ast.ClusterStmt | ast.ReindexStmt, out: _Result
    ) -> None:
        relations: list[ast.RangeVar | None]
        if isinstance(node, ast.VacuumStmt):
            if not _option_on(node.options, "full"):
                return
            label = "VACUUM FULL"
            relations = [r.relation for r in node.rels or () if isinstance(r, ast.VacuumRelation)]
            instead = "instead use pg_repack or pg_squeeze (online), or plain VACUUM"
        elif isinstance(node, ast.ClusterStmt):
            label = "CLUSTER"
            relations = [node.relation] if node.relation is not None else []
            instead = "instead use pg_repack --order-by (online)"
        else:
            if _option_on(node.params, "concurrently"):
                if self.in_transaction or self.in_do:
                    out.append(_in_transaction("REINDEX CONCURRENTLY"))
                return
            label = "REINDEX"
            relations = []
            rv = node.relation
            if node.kind == enums.ReindexObjectType.REINDEX_OBJECT_TABLE:
                relations = [rv]
            elif (
                node.kind == enums.ReindexObjectType.REINDEX_OBJECT_INDEX
                and rv is not None
                and (rv.relname or "").lower() in self.new_indexes
            ):
                return
            instead = "instead REINDEX (CONCURRENTLY) ... (outside a transaction block)"
        if relations and all(self.new_tables.contains_range_var(r) for r in relations):
            return
        target = ", ".join(_range_var_name(r) for r in relations) if relations else "its tables"
        hurts = (
            "blocks writes to the table and reads through the index"
            if label == "REINDEX"
            else "rewrites the table under an ACCESS EXCLUSIVE lock"
        )
        out.append((REWRITE_MAINTENANCE, f"{label} on {target} {hurts}; {instead}"))
        self._lock(out, label, relations)


def _weak_lock(cmd: ast.AlterTableCmd) -> bool:
    """ALTER TABLE commands that take SHARE UPDATE EXCLUSIVE: reads and writes go on."""
    if cmd.subtype == _AT.AT_ValidateConstraint:
        return True
    return (
        cmd.subtype == _AT.AT_DetachPartition
        and isinstance(cmd.def_, ast.PartitionCmd)
        and bool(cmd.def_.concurrent)
    )


def _in_transaction(what: str) -> tuple[Rule, str]:
    return (
        CONCURRENTLY_IN_TRANSACTION,
        f"{what} cannot run inside a transaction block (BEGIN ... COMMIT, a DO block, or a "
        "migration tool's per-file transaction): PostgreSQL rejects it; instead run it on its "
        "own, outside any transaction (COMMIT first, and turn off the tool's transaction for "
        "this migration)",
    )


def _range_var(parts: list[str]) -> ast.RangeVar:
    schema = parts[-2] if len(parts) > 1 else None
    return ast.RangeVar(schemaname=schema, relname=parts[-1])


def _rename_message(what: str) -> str:
    return (
        f"{what} breaks every running query and deployed application that uses the old name; "
        "instead let pgshift's cutover phase swap the names, or expose the new name "
        "through a view"
    )
