"""The `move` target without a database: its plan keys and refusals (exit 2 at file:line:col),
and the split of pg_dump's output into before and after the copy, with a done-check for every
statement built after it."""

from __future__ import annotations

from datetime import timedelta
from textwrap import dedent

import pytest

from pgshift.errors import ExitCode, PlanError
from pgshift.move.schema import done_query, split_schema
from pgshift.plan.load import load_plan_text

GOOD = """\
version: 1
name: move_accounts
move:
  tables: [public.accounts]
  schemas: [billing]
  hooks: {after_fence: ./flip.sh, timeout: 5s}
  fence_timeout: 10s
phases: [expand, dual_write, backfill, verify, {gate: {name: go}}, cutover, contract]
"""


def test_a_move_plan_needs_no_table() -> None:
    plan = load_plan_text(GOOD, "plan.yaml", env={}).plan
    assert plan.target == "move" and plan.table == ""
    assert plan.move is not None
    assert plan.move.tables == ["public.accounts"] and plan.move.schemas == ["billing"]
    assert plan.move.hooks.after_fence == "./flip.sh"
    assert plan.move.hooks.timeout == timedelta(seconds=5)
    assert plan.move.max_lag == timedelta(seconds=1)
    assert plan.move.fence_timeout == timedelta(seconds=10)


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (("  schemas: [billing]\n", ""), "", None),
        (
            ("  tables: [public.accounts]\n  schemas: [billing]\n", ""),
            "plan.yaml:3:1",
            "move: needs `tables`, `schemas` or `database: true`",
        ),
        (
            ("name: move_accounts\n", "name: move_accounts\ntable: public.accounts\n"),
            "plan.yaml:3:1",
            "a move plan names its tables under `move`: remove `table`",
        ),
        (
            ("verify, ", "verify, {sql: {up: 'SELECT 1', down: 'SELECT 1'}}, "),
            "plan.yaml:8:48",
            "phase 'sql' is not available in a move",
        ),
        (
            ("{gate: {name: go}}", "{gate: {name: go, require_verify: true}}"),
            "plan.yaml:8:48",
            "require_verify is not available in a move",
        ),
        (
            ("backfill, verify", "verify, backfill"),
            "plan.yaml:8:30",
            "phase 'verify' (entry 3) must come after 'backfill'",
        ),
        (("fence_timeout: 10s", "fence_timeout: soon"), "plan.yaml:7:18", "fence_timeout"),
    ],
)
def test_move_plan_errors(change: tuple[str, str], where: str, message: str | None) -> None:
    text = GOOD.replace(*change)
    if message is None:
        load_plan_text(text, "plan.yaml", env={})
        return
    with pytest.raises(PlanError) as caught:
        load_plan_text(text, "plan.yaml", env={})
    assert caught.value.exit_code == ExitCode.USAGE
    assert str(caught.value).startswith(where), str(caught.value)
    assert message in str(caught.value), str(caught.value)


PRE = dedent("""\
    SET statement_timeout = 0;
    SELECT pg_catalog.set_config('search_path', '', false);
    CREATE TABLE public.t (
        a integer NOT NULL,
        b text
    );
    ALTER TABLE ONLY public.t ALTER COLUMN a SET (pg_attver=26499352);
    ALTER TABLE ONLY public.t ALTER COLUMN b SET (n_distinct=10);
    ALTER TABLE public.t OWNER TO app;
    GRANT SELECT ON TABLE public.t TO reader;
    """)
POST = dedent("""\
    \\restrict abc
    SET default_tablespace = '';
    ALTER TABLE ONLY public.t
        ADD CONSTRAINT t_pkey PRIMARY KEY (a);
    CREATE UNIQUE INDEX t_b_idx ON public.t USING btree (b);
    ALTER TABLE ONLY public.u REPLICA IDENTITY USING INDEX u_key;
    CREATE UNIQUE INDEX u_key ON public.u USING btree (k);
    CREATE INDEX t_lower_b ON public.t USING btree (lower(b));
    ALTER TABLE ONLY public.t
        ADD CONSTRAINT t_b_fkey FOREIGN KEY (b) REFERENCES public.u(k);
    CREATE TRIGGER zz_pgshift_fence_m BEFORE INSERT ON public.t FOR EACH STATEMENT EXECUTE FUNCTION pgshift.f();
    CREATE TRIGGER audit AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.audit();
    COMMENT ON INDEX public.t_b_idx IS 'b';
    \\unrestrict abc
    """)


def test_split_before_and_after_the_copy() -> None:
    moved = split_schema(PRE, POST, ["public"])
    assert moved.schemas == ("public",)
    before = [" ".join(s.split()) for s in moved.before_copy]
    after = [" ".join(s.split()) for s in moved.after_copy]
    assert before == [
        "CREATE TABLE public.t ( a integer NOT NULL, b text )",
        "ALTER TABLE ONLY public.t ALTER COLUMN b SET (n_distinct=10)",  # a known option stays
        "ALTER TABLE public.t OWNER TO app",
        "GRANT SELECT ON TABLE public.t TO reader",
        "ALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (a)",
        # a table keyed by a REPLICA IDENTITY index gets it before rows come
        "ALTER TABLE ONLY public.u REPLICA IDENTITY USING INDEX u_key",
        "CREATE UNIQUE INDEX u_key ON public.u USING btree (k)",
    ]
    assert after == [
        "CREATE UNIQUE INDEX t_b_idx ON public.t USING btree (b)",
        "CREATE INDEX t_lower_b ON public.t USING btree (lower(b))",
        "ALTER TABLE ONLY public.t ADD CONSTRAINT t_b_fkey FOREIGN KEY (b) REFERENCES public.u(k)",
        # pgshift's own fence trigger is never carried
        "CREATE TRIGGER audit AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION "
        "public.audit()",
        "COMMENT ON INDEX public.t_b_idx IS 'b'",
    ]


def test_every_named_post_copy_object_has_a_done_check() -> None:
    moved = split_schema(PRE, POST, ["public"])
    checks = {s.split()[0] + " " + s.split()[1]: done_query(s) for s in moved.after_copy}
    rendered = {k: v.as_string() if v is not None else None for k, v in checks.items()}
    assert rendered["CREATE UNIQUE"] == """SELECT to_regclass('"public"."t_b_idx"') IS NOT NULL"""
    assert rendered["CREATE INDEX"] == """SELECT to_regclass('"public"."t_lower_b"') IS NOT NULL"""
    assert "pg_constraint" in str(rendered["ALTER TABLE"])
    assert "'t_b_fkey'" in str(rendered["ALTER TABLE"])
    assert "pg_trigger" in str(rendered["CREATE TRIGGER"])
    assert rendered["COMMENT ON"] is None  # runs again harmlessly
