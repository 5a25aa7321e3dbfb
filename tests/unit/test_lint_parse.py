"""The linter's fast parse gives the very trees pglast's own parse_sql gives."""

from __future__ import annotations

from pathlib import Path

import pglast
import pytest
from pglast import ast
from pglast.parser import parse_sql

from pgshift.lint import collect_sql_files
from pgshift.lint.parse import parse

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "lint_corpus"

SHAPES = [
    "ALTER TABLE t ADD COLUMN x bigint GENERATED ALWAYS AS (a * 2) STORED NOT NULL DEFAULT 0",
    "CREATE TABLE t (a char(1) DEFAULT 'x', b bool DEFAULT true, c int[] CHECK (c <> '{}'))",
    "DROP INDEX CONCURRENTLY IF EXISTS a.b, c CASCADE",
    "VACUUM (FULL, ANALYZE false) t; REINDEX (CONCURRENTLY) TABLE t",
    "SELECT 1.5, 'a'::char, B'101', X'ff', true, NULL, $$x$$",
    "DO $$ BEGIN EXECUTE 'CREATE INDEX i ON t (a)'; END $$",
    "ALTER TYPE e ADD VALUE IF NOT EXISTS 'x' BEFORE 'y'; ALTER TYPE e RENAME VALUE 'a' TO 'b'",
]


@pytest.mark.parametrize("sql", SHAPES)
def test_fast_parse_equals_pglast_parse(sql: str) -> None:
    fast = parse(sql)
    assert fast == parse_sql(sql)
    assert all(isinstance(raw, ast.RawStmt) for raw in fast)


def test_checks_are_back_after_a_parse_and_after_a_failed_one() -> None:
    parse("SELECT 1")
    with pytest.raises(pglast.parser.ParseError):
        parse("SELECT FROM WHERE")
    with pytest.raises(ValueError):
        ast.RangeVar(relname=42)  # pglast's check of a hand-built node still runs


@pytest.mark.skipif(not CORPUS.is_dir(), reason="no lint corpus beside the checkout")
def test_fast_parse_equals_pglast_parse_over_the_corpus() -> None:
    for path in collect_sql_files([CORPUS]):
        text = path.read_text(encoding="utf-8")
        try:
            expected = parse_sql(text)
        except pglast.Error:
            continue
        assert parse(text) == expected, path.name
