"""The rules PGS019-PGS025, each from real migrations' statement shapes, and the rule modules'
layout. Rules off by default are checked with a config that turns them on."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

import pytest

import pgshift.lint.rules as rules_package
from pgshift.lint import RULES, LintConfig, LintContext, collect_sql_files, lint_file, lint_sql

TIMEOUT = "SET lock_timeout = '1s';\n"
REPO = Path(__file__).resolve().parents[2]


def rules(text: str, **kwargs: Any) -> list[str]:
    return [f.rule for f in lint_sql(text, **kwargs) if not f.allowed]


def turned_on(*ids: str) -> LintConfig:
    return LintConfig(dict.fromkeys(ids, "warning"))


def turned_off(*ids: str) -> LintConfig:
    return LintConfig(dict.fromkeys(ids, "off"))


# --- PGS019 add-column-not-null ----------------------------------------------------------------


def test_not_null_column_without_default_on_a_live_table() -> None:
    sql = TIMEOUT + "alter table auth.mfa_amr_claims\n  add column if not exists id uuid not null;"
    [finding] = lint_sql(sql)
    assert (finding.rule, finding.line, finding.severity) == ("PGS019", 2, "error")
    assert "fails as soon as the table has a row" in finding.message
    assert "DEFAULT" in finding.message.split("; instead ", 1)[1]


@pytest.mark.parametrize(
    "column",
    [
        "require_application boolean NOT NULL DEFAULT FALSE",
        "hide_media boolean DEFAULT FALSE NOT NULL",
        "subscribers_local bigint NOT NULL DEFAULT 0",
        "note text",  # nullable
        "note text NULL",
    ],
)
def test_not_null_with_a_default_or_nullable_passes(column: str) -> None:
    assert rules(TIMEOUT + f"ALTER TABLE site ADD COLUMN {column};") == []


@pytest.mark.parametrize(
    "column",
    [
        "id bigint GENERATED ALWAYS AS IDENTITY NOT NULL",
        "total numeric NOT NULL GENERATED ALWAYS AS (price * qty) STORED",
        "n bigserial NOT NULL",
    ],
)
def test_columns_filled_by_postgresql_are_not_pgs019(column: str) -> None:
    found = rules(TIMEOUT + f"ALTER TABLE orders ADD COLUMN {column};")
    assert "PGS019" not in found and "PGS002" in found  # a rewrite instead, its own rule


def test_not_null_column_on_a_new_table_passes() -> None:
    sql = "CREATE TABLE one_time_tokens (id uuid);\nALTER TABLE one_time_tokens ADD COLUMN user_id uuid NOT NULL;"
    assert rules(sql) == []


# --- PGS020 statement-timeout ------------------------------------------------------------------


def test_statement_timeout_rule_is_off_by_default() -> None:
    assert rules(TIMEOUT + "CREATE INDEX idx_post_published ON post (published);") == ["PGS005"]


def test_statement_timeout_follows_a_blocking_scan_when_turned_on() -> None:
    sql = (
        TIMEOUT + "-- pgshift-lint: ignore PGS005 the table has 200 rows\n"
        "CREATE INDEX webhooks_url ON webhooks (url);"
    )
    found = lint_sql(sql, config=turned_on("PGS020"))
    assert [(f.rule, f.allowed, f.severity) for f in found] == [
        ("PGS005", True, "error"),
        ("PGS020", False, "warning"),
    ]
    assert "PGS005" in found[1].message
    bounded = sql.replace(TIMEOUT, TIMEOUT + "SET statement_timeout = '5s';\n")
    assert rules(bounded, config=turned_on("PGS020")) == []
    local = f"BEGIN;\nSET LOCAL statement_timeout = '5s';\n{sql}\nCOMMIT;\n{sql}"
    assert rules(local, config=turned_on("PGS020")) == ["PGS020"]  # only after COMMIT


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE INDEX CONCURRENTLY idx_post_published ON post (published);",
        "ALTER TABLE sessions VALIDATE CONSTRAINT sessions_user_id_fkey;",
        "ALTER TABLE post ADD COLUMN featured boolean;",
    ],
)
def test_statements_that_block_nothing_for_long_need_no_statement_timeout(statement: str) -> None:
    assert rules(TIMEOUT + statement, config=turned_on("PGS020")) == []


def test_statement_timeout_is_not_asked_in_a_plan() -> None:
    sql = "ALTER TABLE accounts ALTER COLUMN balance TYPE bigint;"
    assert rules(sql, require_lock_timeout=False, config=turned_on("PGS020")) == ["PGS001"]


# --- PGS021 enum-value-used-too-soon -----------------------------------------------------------


def test_enum_value_used_in_the_file_that_added_it() -> None:
    sql = (
        "ALTER TYPE post_listing_mode_enum ADD VALUE 'Suggested';\n"
        "UPDATE local_user SET default_post_listing_mode = 'Suggested'\n"
        "  WHERE default_post_listing_mode = 'List';"
    )
    [finding] = lint_sql(sql)
    assert (finding.rule, finding.line, finding.severity) == ("PGS021", 2, "error")
    assert "'Suggested' was added to post_listing_mode_enum" in finding.message


def test_enum_value_after_a_commit_or_in_the_next_file_passes() -> None:
    add = "ALTER TYPE post_listing_mode_enum ADD VALUE 'Suggested';\n"
    use = "UPDATE local_user SET default_post_listing_mode = 'Suggested';"
    assert rules("BEGIN;\n" + add + "COMMIT;\n" + use) == []
    context = LintContext()
    assert rules(add, context=context) == []
    assert rules(use, context=context) == []
    assert rules(add) == []  # adding alone blocks nothing


def test_enum_value_added_in_a_do_block_and_used_after_it() -> None:
    sql = (
        "do $$ begin\n"
        "    alter type auth.factor_type add value 'phone';\n"
        "exception\n"
        "    when duplicate_object then null;\n"
        "end $$;\n"
        "insert into auth.mfa_factors (id, factor_type) values (gen_random_uuid(), 'phone');\n"
    )
    [finding] = lint_sql(sql)
    assert (finding.rule, finding.line) == ("PGS021", 6)


# --- PGS022 enum-rename-value ------------------------------------------------------------------


def test_renaming_a_live_enum_value() -> None:
    sql = "ALTER TYPE community_visibility RENAME VALUE 'LocalOnly' TO 'LocalOnlyPrivate';"
    [finding] = lint_sql(sql)
    assert finding.rule == "PGS022" and finding.fails
    assert "ADD VALUE 'LocalOnlyPrivate'" in finding.message


def test_renaming_a_value_of_an_enum_created_in_the_run_passes() -> None:
    sql = (
        "CREATE TYPE community_visibility AS enum ('Public', 'LocalOnly');\n"
        "ALTER TYPE community_visibility RENAME VALUE 'LocalOnly' TO 'LocalOnlyPrivate';"
    )
    assert rules(sql) == []


# --- PGS023 exclusion-constraint ---------------------------------------------------------------

EXCLUDE = (
    "ALTER TABLE bookings ADD CONSTRAINT bookings_no_overlap\n"
    "  EXCLUDE USING gist (room_id WITH =, during WITH &&);"
)


def test_exclusion_constraint_on_a_live_table() -> None:
    [finding] = lint_sql(TIMEOUT + EXCLUDE)
    assert (finding.rule, finding.line) == ("PGS023", 2)
    assert "neither NOT VALID nor USING INDEX" in finding.message
    assert "new_table" in finding.message
    assert rules(EXCLUDE) == ["PGS023", "PGS008"]


def test_exclusion_constraint_on_a_new_table_passes() -> None:
    create = "CREATE TABLE bookings (room_id bigint, during tstzrange);\n"
    assert rules(create + EXCLUDE) == []
    inline = (
        "CREATE TABLE bookings (room_id bigint, during tstzrange,\n"
        "  EXCLUDE USING gist (room_id WITH =, during WITH &&));"
    )
    assert rules(inline) == []


# --- PGS024 drop-view, PGS025 drop-constraint (warnings) ----------------------------------------


def test_drop_view_when_turned_on() -> None:
    sql = TIMEOUT + "DROP VIEW community_view;"
    [finding] = lint_sql(sql)
    assert (finding.rule, finding.severity, finding.fails) == ("PGS024", "warning", False)
    assert lint_sql(sql, config=turned_off("PGS024")) == []
    [finding] = lint_sql(sql, config=turned_on("PGS024"))
    assert (finding.rule, finding.severity) == ("PGS024", "warning")
    assert "does not create it again" in finding.message
    created = TIMEOUT + "CREATE VIEW community_view AS SELECT 1 AS id;\nDROP VIEW community_view;"
    assert rules(created, config=turned_on("PGS024")) == []
    # dropped to be created again with other columns, in the same migration: not reported
    recreated = sql + "\nCREATE VIEW community_view AS SELECT id, name, nsfw FROM community;"
    assert rules(recreated, config=turned_on("PGS024")) == []
    matview = TIMEOUT + "DROP MATERIALIZED VIEW post_aggregates_mview;"
    assert rules(matview, config=turned_on("PGS024")) == ["PGS024"]


def test_drop_constraint_when_turned_on() -> None:
    sql = TIMEOUT + "ALTER TABLE notification_policy DROP CONSTRAINT unique_project_id;"
    assert rules(sql) == ["PGS025"] and not lint_sql(sql)[0].fails
    assert lint_sql(sql, config=turned_off("PGS025")) == []
    [finding] = lint_sql(sql, config=turned_on("PGS025"))
    assert finding.rule == "PGS025" and "ON CONFLICT" in finding.message
    new = "CREATE TABLE notification_policy (id bigint);\n" + sql
    assert rules(new, config=turned_on("PGS025")) == []


# --- lock facts the issue named ----------------------------------------------------------------


def test_lock_facts() -> None:
    # CREATE TABLE ... REFERENCES an existing table: SHARE ROW EXCLUSIVE on it
    [finding] = lint_sql(
        "CREATE TABLE notes (id bigint, account_id bigint REFERENCES accounts (id));"
    )
    assert finding.rule == "PGS008" and "SHARE ROW EXCLUSIVE" in finding.message
    # DROP VIEW: ACCESS EXCLUSIVE on the view
    [finding] = lint_sql("DROP VIEW accounts_v;", config=turned_off("PGS024"))
    assert finding.rule == "PGS008" and "ACCESS EXCLUSIVE" in finding.message
    # VALIDATE CONSTRAINT: SHARE UPDATE EXCLUSIVE, blocks neither reads nor writes
    assert rules("ALTER TABLE accounts VALIDATE CONSTRAINT accounts_owner_fk;") == []


# --- one module per rule -----------------------------------------------------------------------


def test_one_module_per_rule_with_its_docstring() -> None:
    modules = [
        importlib.import_module(f"pgshift.lint.rules.{info.name}")
        for info in pkgutil.iter_modules(rules_package.__path__)
    ]
    assert len(modules) == len(RULES) == 25
    for module in modules:
        rule = module.RULE
        assert (
            module.__name__.rsplit(".", 1)[1] == f"{rule.id.lower()}_{rule.slug.replace('-', '_')}"
        )
        assert module.__doc__ and module.__doc__.startswith(f"{rule.id} {rule.slug}: ")
        assert rule.severity in ("error", "warning", "off")


def test_every_rule_has_a_docs_section_with_bad_and_good_sql() -> None:
    docs = (REPO / "docs" / "lint.md").read_text(encoding="utf-8")
    for rule in RULES:
        heading = f"### {rule.id} `{rule.slug}`"
        assert heading in docs, rule.id
        section = docs.split(heading, 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        assert "```sql" in section and f"-- {rule.id}" in section, rule.id


CORPUS = REPO.parent / "shared" / "lint_corpus"


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the lint corpus is not next to the repository")
def test_every_corpus_file_alone_with_every_rule_on() -> None:
    every_rule = LintConfig(dict.fromkeys((rule.id for rule in RULES), "warning"))
    fired: set[str] = set()
    for path in collect_sql_files([CORPUS]):
        for finding in lint_file(path, config=every_rule):
            assert finding.rule != "syntax-error", (path, finding)
            assert "\n" not in finding.message and "; instead " in finding.message
            fired.add(finding.rule)
    # the new rules meet their real shapes there; every view dropped there is created again
    # in the same file, which PGS024 lets pass
    assert {"PGS019", "PGS020", "PGS025"} <= fired
    assert "PGS024" not in fired
