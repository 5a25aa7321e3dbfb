"""The DDL linter (SPEC §6): each rule, its safe rewrite, allow comments and positions."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from pgshift.lint import RULES, SYNTAX_ERROR, Finding, format_finding, lint_file, lint_sql
from pgshift.lint import source as lint

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = "SET lock_timeout = '1s';\n"


def rules(text: str, **kwargs: Any) -> list[str]:
    """The rules that fire on `text` and are not allowed."""
    return [f.rule for f in lint_sql(text, **kwargs) if not f.allowed]


# --- each rule: a statement that breaks it, and its safe rewrite --------------------------------

CASES = [
    pytest.param(
        "PGS001",
        "ALTER TABLE accounts ALTER COLUMN balance TYPE bigint;",
        "ALTER TABLE accounts ADD COLUMN _pgshift_balance bigint;",
        id="PGS001-type-change",
    ),
    pytest.param(
        "PGS002",
        "ALTER TABLE accounts ADD COLUMN token uuid DEFAULT gen_random_uuid();",
        "ALTER TABLE accounts ADD COLUMN token uuid;\n"
        "ALTER TABLE accounts ALTER COLUMN token SET DEFAULT gen_random_uuid();",
        id="PGS002-volatile-default",
    ),
    pytest.param(
        "PGS003",
        "ALTER TABLE accounts ALTER COLUMN email SET NOT NULL;",
        "ALTER TABLE accounts ADD CONSTRAINT email_nn CHECK (email IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE accounts VALIDATE CONSTRAINT email_nn;\n"
        "ALTER TABLE accounts ALTER COLUMN email SET NOT NULL;",
        id="PGS003-set-not-null",
    ),
    pytest.param(
        "PGS004",
        "ALTER TABLE accounts ADD CONSTRAINT fk FOREIGN KEY (owner_id) REFERENCES users (id);",
        "ALTER TABLE accounts ADD CONSTRAINT fk FOREIGN KEY (owner_id) REFERENCES users (id)"
        " NOT VALID;\nALTER TABLE accounts VALIDATE CONSTRAINT fk;",
        id="PGS004-foreign-key",
    ),
    pytest.param(
        "PGS004",
        "ALTER TABLE accounts ADD CONSTRAINT positive CHECK (balance >= 0);",
        "ALTER TABLE accounts ADD CONSTRAINT positive CHECK (balance >= 0) NOT VALID;\n"
        "ALTER TABLE accounts VALIDATE CONSTRAINT positive;",
        id="PGS004-check",
    ),
    pytest.param(
        "PGS005",
        "CREATE INDEX accounts_email ON accounts (email);",
        "CREATE INDEX CONCURRENTLY accounts_email ON accounts (email);",
        id="PGS005-create-index",
    ),
    pytest.param(
        "PGS005",
        "DROP INDEX accounts_email;",
        "DROP INDEX CONCURRENTLY accounts_email;",
        id="PGS005-drop-index",
    ),
    pytest.param(
        "PGS006",
        "ALTER TABLE accounts ADD PRIMARY KEY (id);",
        "CREATE UNIQUE INDEX CONCURRENTLY accounts_pkey ON accounts (id);\n"
        "ALTER TABLE accounts ADD CONSTRAINT accounts_pkey PRIMARY KEY USING INDEX accounts_pkey;",
        id="PGS006-primary-key",
    ),
    pytest.param(
        "PGS006",
        "ALTER TABLE accounts ADD CONSTRAINT email_key UNIQUE (email);",
        "CREATE UNIQUE INDEX CONCURRENTLY email_key ON accounts (email);\n"
        "ALTER TABLE accounts ADD CONSTRAINT email_key UNIQUE USING INDEX email_key;",
        id="PGS006-unique",
    ),
    pytest.param(
        "PGS007",
        "ALTER TABLE accounts RENAME COLUMN email TO mail;",
        "CREATE VIEW accounts_renamed AS SELECT id, email AS mail FROM accounts;",
        id="PGS007-rename-column",
    ),
    pytest.param(
        "PGS007",
        "ALTER TABLE accounts RENAME TO customer_accounts;",
        "CREATE VIEW customer_accounts AS SELECT * FROM accounts;",
        id="PGS007-rename-table",
    ),
    pytest.param(
        "PGS009",
        "VACUUM FULL accounts;",
        "VACUUM (ANALYZE) accounts;",
        id="PGS009-vacuum-full",
    ),
    pytest.param(
        "PGS009",
        "REINDEX TABLE accounts;",
        "REINDEX TABLE CONCURRENTLY accounts;",
        id="PGS009-reindex",
    ),
    pytest.param(
        "PGS010",
        "ALTER TABLE accounts SET UNLOGGED;",
        "CREATE UNLOGGED TABLE accounts_v2 (LIKE accounts INCLUDING ALL);",
        id="PGS010-set-unlogged",
    ),
]


@pytest.mark.parametrize(("rule", "bad", "good"), CASES)
def test_rule_fires_and_safe_rewrite_passes(rule: str, bad: str, good: str) -> None:
    assert rule in rules(TIMEOUT + bad)
    assert lint_sql(TIMEOUT + good) == []


def test_missing_lock_timeout_fires_and_set_lock_timeout_passes() -> None:
    bad = "ALTER TABLE accounts ADD COLUMN note text;"
    assert rules(bad) == ["PGS008"]
    assert rules(TIMEOUT + bad) == []
    assert rules("SET LOCAL lock_timeout TO '500ms';\n" + bad) == []


@pytest.mark.parametrize(("rule", "bad", "good"), CASES)
def test_every_message_is_one_line_and_names_the_alternative(
    rule: str, bad: str, good: str
) -> None:
    for finding in lint_sql(bad):
        assert "\n" not in finding.message
        assert "; instead " in finding.message
        assert finding.message.rsplit("; instead ", 1)[1].strip()


def test_cluster_is_flagged() -> None:
    assert rules(TIMEOUT + "CLUSTER accounts USING accounts_pkey;") == ["PGS009"]


def test_set_logged_tablespace_access_method_are_flagged() -> None:
    for clause in ("SET LOGGED", "SET TABLESPACE fast", "SET ACCESS METHOD heap2"):
        assert rules(f"{TIMEOUT}ALTER TABLE accounts {clause};") == ["PGS010"]


def test_set_schema_is_a_rename() -> None:
    assert rules(TIMEOUT + "ALTER TABLE accounts SET SCHEMA archive;") == ["PGS007"]


# --- rule details ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "default",
    [
        "now()",
        "pg_catalog.now()",
        "CURRENT_TIMESTAMP",
        "0",
        "'pending'",
        "'{}'::jsonb",
        "lower('X')",
        "(now() AT TIME ZONE 'utc')",
    ],
)
def test_stable_defaults_pass(default: str) -> None:
    assert rules(f"{TIMEOUT}ALTER TABLE accounts ADD COLUMN c text DEFAULT {default};") == []


@pytest.mark.parametrize(
    ("column", "volatile"),
    [
        ("c float8 DEFAULT random()", True),
        ("c timestamptz DEFAULT clock_timestamp()", True),
        ("c uuid DEFAULT uuid_generate_v4()", True),
        ("c bigint DEFAULT nextval('accounts_c_seq')", True),
        ("c int DEFAULT my_func()", False),
        ("c int DEFAULT app.next_number()", False),
    ],
)
def test_volatile_or_unknown_defaults_fire(column: str, volatile: bool) -> None:
    [finding] = lint_sql(f"{TIMEOUT}ALTER TABLE accounts ADD COLUMN {column};")
    assert finding.rule == "PGS002"
    assert ("which is volatile" in finding.message) is volatile
    assert ("may be volatile" in finding.message) is not volatile


@pytest.mark.parametrize(
    ("column", "warnings"),
    [
        ("c bigserial", ["PGS014"]),  # prefer-identity
        ("c int GENERATED ALWAYS AS IDENTITY", ["PGS013"]),  # prefer-bigint
        ("c bigint GENERATED ALWAYS AS IDENTITY", []),
        ("c int GENERATED ALWAYS AS (balance * 2) STORED", []),
    ],
)
def test_columns_filled_per_row_fire(column: str, warnings: list[str]) -> None:
    found = lint_sql(f"{TIMEOUT}ALTER TABLE accounts ADD COLUMN {column};")
    assert [f.rule for f in found if f.severity == "error"] == ["PGS002"]
    assert [f.rule for f in found if f.severity == "warning"] == warnings


def test_virtual_generated_column_passes() -> None:
    sql = f"{TIMEOUT}ALTER TABLE accounts ADD COLUMN c int GENERATED ALWAYS AS (balance * 2);"
    assert rules(sql) == []


def test_inline_constraints_on_add_column_fire() -> None:
    assert rules(f"{TIMEOUT}ALTER TABLE accounts ADD COLUMN u int REFERENCES users (id);") == [
        "PGS004"
    ]
    assert rules(f"{TIMEOUT}ALTER TABLE accounts ADD COLUMN c int CHECK (c > 0);") == ["PGS004"]
    assert rules(f"{TIMEOUT}ALTER TABLE accounts ADD COLUMN c int UNIQUE;") == ["PGS006"]


@pytest.mark.parametrize(
    ("declared", "target", "fires"),
    [
        ("varchar(10)", "varchar(20)", False),
        ("varchar(10)", "varchar", False),
        ("varchar(10)", "text", False),
        ("character varying(10)", "character varying(10)", False),
        ("numeric(10, 2)", "numeric(12, 2)", False),
        ("numeric(10, 2)", "numeric", False),
        ("varchar(20)", "varchar(10)", True),
        ("numeric(10, 2)", "numeric(12, 3)", True),
        ("integer", "bigint", True),
        ("text", "integer", True),
        ("varchar(10)[]", "text[]", True),
    ],
)
def test_type_change_of_a_column_declared_in_the_text(
    declared: str, target: str, fires: bool
) -> None:
    sql = (
        f"{TIMEOUT}ALTER TABLE accounts ADD COLUMN code {declared};\n"
        f"ALTER TABLE accounts ALTER COLUMN code TYPE {target};"
    )
    assert rules(sql) == (["PGS001"] if fires else [])


def test_type_change_with_unknown_source_type_or_using_fires() -> None:
    assert rules(TIMEOUT + "ALTER TABLE accounts ALTER COLUMN code TYPE text;") == ["PGS001"]
    sql = (
        f"{TIMEOUT}ALTER TABLE accounts ADD COLUMN code varchar(10);\n"
        "ALTER TABLE accounts ALTER COLUMN code TYPE text USING upper(code);"
    )
    assert rules(sql) == ["PGS001"]


def test_type_change_message_shows_the_type_as_written() -> None:
    [finding] = lint_sql(TIMEOUT + "ALTER TABLE public.accounts ALTER balance TYPE bigint;")
    assert "ALTER COLUMN balance TYPE bigint on public.accounts" in finding.message
    assert "pgshift `columns` migration" in finding.message


def test_set_not_null_needs_the_check_validated_first() -> None:
    not_validated = (
        f"{TIMEOUT}ALTER TABLE accounts ADD CONSTRAINT nn CHECK (email IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE accounts ALTER COLUMN email SET NOT NULL;"
    )
    assert rules(not_validated) == ["PGS003"]
    other_column = (
        f"{TIMEOUT}ALTER TABLE accounts ADD CONSTRAINT nn CHECK (email IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE accounts VALIDATE CONSTRAINT nn;\n"
        "ALTER TABLE accounts ALTER COLUMN name SET NOT NULL;"
    )
    assert rules(other_column) == ["PGS003"]


def test_set_not_null_after_unnamed_or_combined_checks() -> None:
    unnamed = (
        f"{TIMEOUT}ALTER TABLE accounts ADD CHECK (email IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE accounts VALIDATE CONSTRAINT accounts_email_check;\n"
        "ALTER TABLE accounts ALTER COLUMN email SET NOT NULL;"
    )
    assert rules(unnamed) == []
    combined = (
        f"{TIMEOUT}ALTER TABLE accounts ADD CONSTRAINT nn"
        " CHECK (email IS NOT NULL AND name IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE accounts VALIDATE CONSTRAINT nn;\n"
        "ALTER TABLE accounts ALTER COLUMN email SET NOT NULL, ALTER COLUMN name SET NOT NULL;"
    )
    assert rules(combined) == []


def test_set_not_null_after_a_check_validated_at_once() -> None:
    sql = (
        f"{TIMEOUT}ALTER TABLE accounts ADD CONSTRAINT nn CHECK (email IS NOT NULL);\n"
        "ALTER TABLE accounts ALTER COLUMN email SET NOT NULL;"
    )
    assert rules(sql) == ["PGS004"]  # the CHECK itself, not the SET NOT NULL


def test_not_null_constraint_not_valid_then_validate() -> None:
    assert rules(f"{TIMEOUT}ALTER TABLE accounts ADD CONSTRAINT nn NOT NULL email;") == ["PGS003"]
    sql = (
        f"{TIMEOUT}ALTER TABLE accounts ADD CONSTRAINT nn NOT NULL email NOT VALID;\n"
        "ALTER TABLE accounts VALIDATE CONSTRAINT nn;\n"
        "ALTER TABLE accounts ALTER COLUMN email SET NOT NULL;"
    )
    assert rules(sql) == []


def test_lock_taking_statements_need_lock_timeout() -> None:
    for statement in (
        "DROP TABLE accounts; -- pgshift:allow drop-table",
        "DROP VIEW accounts_v; -- pgshift:allow drop-view",
        "CREATE TABLE notes (id bigint, account_id bigint REFERENCES accounts (id));",
        "CREATE TABLE notes (id bigint, account_id bigint, FOREIGN KEY (account_id)"
        " REFERENCES accounts (id));",
        "TRUNCATE accounts;",
        "LOCK TABLE accounts IN SHARE MODE;",
        "CREATE TRIGGER t BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION f();",
        "DROP TRIGGER t ON accounts;",
    ):
        assert rules(statement) == ["PGS008"], statement
        assert rules(TIMEOUT + statement) == [], statement


def test_statements_without_table_locks_need_no_lock_timeout() -> None:
    sql = (
        "SELECT 1;\nINSERT INTO accounts (id) VALUES (1);\n"
        "CREATE INDEX CONCURRENTLY i ON accounts (id);\nDROP INDEX CONCURRENTLY i;\n"
        "REINDEX TABLE CONCURRENTLY accounts;\nVACUUM accounts;\nCREATE TABLE t (id int);\n"
        "ALTER TABLE accounts VALIDATE CONSTRAINT c;\n"  # SHARE UPDATE EXCLUSIVE
        "CREATE TABLE u (id bigint, t_id int REFERENCES t (id));\n"  # t is new
        "ALTER TABLE events DETACH PARTITION events_2020 CONCURRENTLY;"
    )
    assert rules(sql) == []


def test_lock_timeout_zero_reset_and_transaction_end() -> None:
    alter = "ALTER TABLE accounts ADD COLUMN note text;"
    assert rules(f"SET lock_timeout = 0;\n{alter}") == ["PGS008"]
    assert rules(f"SET lock_timeout = '0';\n{alter}") == ["PGS008"]
    assert rules(f"{TIMEOUT}RESET lock_timeout;\n{alter}") == ["PGS008"]
    assert rules(f"{TIMEOUT}SET lock_timeout TO DEFAULT;\n{alter}") == ["PGS008"]
    assert rules(f"{TIMEOUT}RESET ALL;\n{alter}") == ["PGS008"]
    local = f"BEGIN;\nSET LOCAL lock_timeout = '1s';\n{alter}\nCOMMIT;\n{alter}"
    findings = lint_sql(local)
    assert [(f.rule, f.line) for f in findings] == [("PGS008", 5)]
    # A session setting outlives transactions.
    assert rules(f"{TIMEOUT}BEGIN;\n{alter}\nCOMMIT;\n{alter}") == []


def test_require_lock_timeout_false_turns_the_rule_off() -> None:
    sql = "ALTER TABLE accounts ADD COLUMN note text;\nTRUNCATE old_accounts;"
    assert rules(sql, require_lock_timeout=False) == []
    assert rules("CREATE INDEX i ON accounts (id);", require_lock_timeout=False) == ["PGS005"]


# --- new tables --------------------------------------------------------------------------------

NEW_TABLE_DDL = (
    "ALTER TABLE {t} ALTER COLUMN balance TYPE bigint;\n"
    "ALTER TABLE {t} ADD COLUMN token uuid DEFAULT gen_random_uuid();\n"
    "ALTER TABLE {t} ALTER COLUMN email SET NOT NULL;\n"
    "ALTER TABLE {t} ADD CONSTRAINT owner_fk FOREIGN KEY (owner_id) REFERENCES users (id);\n"
    "ALTER TABLE {t} ADD CONSTRAINT positive CHECK (balance >= 0);\n"
    "ALTER TABLE {t} ADD PRIMARY KEY (id);\n"
    "CREATE INDEX accounts_v2_email ON {t} (email);\n"
    "DROP INDEX accounts_v2_email;\n"
    "ALTER TABLE {t} RENAME COLUMN email TO mail;\n"
    "TRUNCATE {t};\n"
    "REINDEX TABLE {t};\n"
    "VACUUM FULL {t};\n"
    "ALTER TABLE {t} SET LOGGED;\n"
)


def test_tables_created_in_the_text_are_exempt() -> None:
    created = (
        "CREATE TABLE public.accounts_v2 (id bigint, balance int, email text, owner_id int);\n"
    )
    for name in ("public.accounts_v2", "accounts_v2", "PUBLIC.Accounts_V2"):
        assert rules(created + NEW_TABLE_DDL.format(t=name)) == [], name
    as_select = "CREATE TABLE accounts_v2 AS SELECT * FROM accounts;\n"
    assert rules(as_select + NEW_TABLE_DDL.format(t="accounts_v2")) == []


@pytest.mark.parametrize(
    ("listed", "written"),
    [
        ({"public.accounts_v2", "accounts_v2"}, "public.accounts_v2"),
        ({"public.accounts_v2", "accounts_v2"}, "accounts_v2"),
        ({"public.accounts_v2"}, "accounts_v2"),
        ({"accounts_v2"}, "public.accounts_v2"),
    ],
)
def test_new_tables_are_exempt(listed: set[str], written: str) -> None:
    assert rules(NEW_TABLE_DDL.format(t=written), new_tables=frozenset(listed)) == []


def test_new_tables_do_not_exempt_a_table_in_another_schema() -> None:
    found = rules(
        "CREATE INDEX i ON archive.accounts_v2 (email);",
        new_tables=frozenset({"public.accounts_v2"}),
    )
    assert found == ["PGS005", "PGS008"]


def test_a_renamed_new_table_stays_new() -> None:
    sql = (
        "CREATE TABLE accounts_tmp (id int);\n"
        "ALTER TABLE accounts_tmp RENAME TO accounts_v2;\n"
        "CREATE INDEX i ON accounts_v2 (id);"
    )
    assert rules(sql) == []


def test_existing_tables_next_to_new_ones_still_fire() -> None:
    sql = "CREATE TABLE accounts_v2 (id int);\nCREATE INDEX i ON accounts (id);"
    assert rules(sql) == ["PGS005", "PGS008"]


# --- cutover -----------------------------------------------------------------------------------


def test_in_cutover_renames_pass_and_other_rules_still_fire() -> None:
    renames = (
        f"{TIMEOUT}ALTER TABLE accounts RENAME TO accounts_pgshift_old;\n"
        "ALTER TABLE accounts_v2 RENAME TO accounts;\n"
        "ALTER TABLE accounts RENAME COLUMN balance TO balance_pgshift_old;"
    )
    assert rules(renames, in_cutover=True) == []
    assert rules(renames) == ["PGS007", "PGS007", "PGS007"]
    other = TIMEOUT + "ALTER TABLE accounts ALTER COLUMN balance TYPE bigint;"
    assert rules(other, in_cutover=True) == ["PGS001"]


# --- allow comments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "comment",
    [
        "-- pgshift:allow PGS005",
        "-- pgshift:allow pgs005",
        "-- pgshift:allow index-concurrently",
        "-- pgshift:allow PGS001, PGS005",
        "-- reviewed: tiny table. pgshift:allow PGS005",
        "/* pgshift:allow PGS005 */",
    ],
)
def test_allow_comment_on_the_statement_line(comment: str) -> None:
    [finding] = lint_sql(f"{TIMEOUT}CREATE INDEX i ON accounts (id); {comment}")
    assert finding.rule == "PGS005"
    assert finding.allowed


def test_allow_comment_names_only_the_rules_it_lists() -> None:
    findings = lint_sql("CREATE INDEX i ON accounts (id); -- pgshift:allow PGS005")
    assert [(f.rule, f.allowed) for f in findings] == [("PGS005", True), ("PGS008", False)]
    both = lint_sql("CREATE INDEX i ON accounts (id); -- pgshift:allow PGS005,lock-timeout")
    assert all(f.allowed for f in both)


def test_allow_comment_on_any_line_of_a_multi_line_statement() -> None:
    sql = (
        f"{TIMEOUT}ALTER TABLE accounts\n"
        "  ALTER COLUMN balance TYPE bigint  -- pgshift:allow rewrite-type-change\n"
        "  , ADD COLUMN note text;\n"
    )
    [finding] = lint_sql(sql)
    assert (finding.rule, finding.allowed, finding.line) == ("PGS001", True, 2)


def test_allow_comment_on_the_line_before_the_statement() -> None:
    sql = (
        f"{TIMEOUT}-- accounts is 2 kB: pgshift:allow PGS005\n"
        "CREATE INDEX i ON accounts (id);\n"
        "CREATE INDEX j ON accounts (email);\n"
    )
    findings = lint_sql(sql)
    assert [(f.rule, f.line, f.allowed) for f in findings] == [
        ("PGS005", 3, True),
        ("PGS005", 4, False),
    ]


def test_allow_comment_does_not_leak_to_the_next_statement() -> None:
    sql = (
        "ALTER TABLE accounts ADD COLUMN note text; -- pgshift:allow PGS008\n"
        "CREATE INDEX i ON accounts (id);\n"
    )
    findings = lint_sql(sql)
    assert [(f.rule, f.allowed) for f in findings] == [
        ("PGS008", True),
        ("PGS005", False),
        ("PGS008", False),
    ]


def test_allow_text_inside_a_string_is_not_a_comment() -> None:
    sql = "CREATE INDEX i ON accounts (id) WHERE note <> '-- pgshift:allow PGS005 PGS008';"
    assert rules(sql) == ["PGS005", "PGS008"]


# --- syntax errors -----------------------------------------------------------------------------


def test_syntax_error_is_a_finding_with_its_line() -> None:
    sql = "-- héllo ✓ ünïcode\nSELECT 1;\n\n  ALTER TABLE accounts ADD COLUMN;\n"
    [finding] = lint_sql(sql, first_line=20)
    assert finding.rule == SYNTAX_ERROR
    assert (finding.line, finding.column) == (23, 34)
    assert finding.statement == "ALTER TABLE accounts ADD COLUMN"
    assert "syntax error" in finding.message
    assert "; instead " in finding.message
    assert not finding.allowed


def test_syntax_error_at_end_of_input() -> None:
    [finding] = lint_sql("SELECT 1;\nSELECT (1 +\n")
    assert finding.rule == SYNTAX_ERROR
    assert finding.line == 2
    assert "end of input" in finding.message


@pytest.mark.parametrize("text", ["\\c mydb", "SELECT 'unterminated", "$$", "ALTER TABLE;"])
def test_garbage_never_raises(text: str) -> None:
    [finding] = lint_sql(text)
    assert finding.rule == SYNTAX_ERROR


def test_empty_text_and_comments_only() -> None:
    assert lint_sql("") == []
    assert lint_sql("-- nothing here\n/* or here */\n") == []


# --- positions ---------------------------------------------------------------------------------


def test_lines_and_columns_after_non_ascii_text() -> None:
    sql = (
        "-- Änderung: Spalte verbreitern ✓ 🚀\n"  # line 1: multi-byte characters
        "/* 多字节\n   注释 */\n"  # lines 2-3
        "SELECT 'ñandú';  CREATE INDEX i ON accounts (id);\n"  # line 4
        "\n"
        "ALTER TABLE accounts\n"  # line 6
        "    ALTER COLUMN balance TYPE bigint;\n"
    )
    findings = lint_sql(sql, require_lock_timeout=False)
    assert [(f.rule, f.line, f.column) for f in findings] == [("PGS005", 4, 18), ("PGS001", 6, 1)]
    shifted = lint_sql(sql, first_line=41, require_lock_timeout=False)
    assert [(f.line, f.column) for f in shifted] == [(44, 18), (46, 1)]


def test_statement_text_is_trimmed_without_semicolon() -> None:
    [finding] = lint_sql(
        "  -- note\n  ALTER TABLE accounts\n    ALTER balance TYPE bigint ;  \n",
        require_lock_timeout=False,
    )
    assert finding.statement == "ALTER TABLE accounts\n    ALTER balance TYPE bigint"
    assert (finding.line, finding.column) == (2, 3)


def test_last_statement_without_semicolon() -> None:
    [finding] = lint_sql("SELECT 'é';\nDROP INDEX i -- trailing ✓", require_lock_timeout=False)
    assert (finding.rule, finding.line, finding.statement) == ("PGS005", 2, "DROP INDEX i")


def test_byte_offsets_are_converted_when_pglast_reports_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lint, "_locations_are_bytes", lambda: True)
    source = lint.Source("-- é✓\nSELECT 1", 1)
    byte_offset = len("-- é✓\n".encode())
    assert source.index(byte_offset) == len("-- é✓\n")
    assert source.line(source.index(byte_offset)) == 2


def test_pglast_locations_are_str_indices_here() -> None:
    # If this changes, _Source.index converts; the line tests above must pass either way.
    assert lint._locations_are_bytes() is False


# --- API ---------------------------------------------------------------------------------------


def test_format_finding() -> None:
    finding = Finding("PGS005", "CREATE INDEX ...; instead ...", 3, 7, "CREATE INDEX", False)
    assert format_finding(finding, "m.sql") == "m.sql:3:7: PGS005 CREATE INDEX ...; instead ..."
    allowed = dataclasses.replace(finding, allowed=True)
    assert format_finding(allowed, "m.sql").endswith("(allowed)")


def test_finding_is_frozen() -> None:
    finding = Finding("PGS005", "m", 1, 1, "s", False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.line = 2  # type: ignore[misc]


def test_lint_file(tmp_path: Path) -> None:
    path = tmp_path / "m.sql"
    path.write_text("-- größe\nCREATE INDEX i ON accounts (id);\n", encoding="utf-8")
    assert [(f.rule, f.line) for f in lint_file(path)] == [("PGS005", 2), ("PGS008", 2)]
    bad = tmp_path / "latin1.sql"
    bad.write_bytes("-- größe\nSELECT 1;\n".encode("latin-1"))
    [finding] = lint_file(bad)
    assert finding.rule == SYNTAX_ERROR


def test_rule_ids_and_slugs_are_unique_and_documented() -> None:
    assert len({r.id for r in RULES}) == len(RULES) == len({r.slug for r in RULES})
    docs = (REPO / "docs" / "lint.md").read_text(encoding="utf-8")
    for rule in RULES:
        assert rule.id in docs and rule.slug in docs, rule.id
