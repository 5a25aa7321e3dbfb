"""Which statements of a `new_table` plan's `create` run in expand and which indexes backfill
builds CONCURRENTLY after the copy: no database needed, `create` is only parsed here."""

from __future__ import annotations

from textwrap import indent

from pgshift.plan.check import DeferredIndex, deferred_indexes, expand_statements
from pgshift.plan.load import load_plan_text
from pgshift.plan.model import Plan

TABLE = "CREATE TABLE public.t2 (id bigint PRIMARY KEY, a int, b text, c text)"


def plan(create: str, phases: str = "[expand, dual_write, backfill, cutover]") -> Plan:
    text = (
        "version: 1\nname: split\ntable: public.t\nnew_table:\n  name: public.t2\n"
        f"  create: |\n{indent(create, '    ')}\nphases: {phases}\n"
    )
    return load_plan_text(text, "split.yaml").plan


def test_named_plain_indexes_wait_for_the_backfill() -> None:
    p = plan(
        f"{TABLE};\n"
        "CREATE UNIQUE INDEX t2_b_key ON public.t2 (b);\n"
        'CREATE INDEX "T2 a" ON public.t2 USING btree (a DESC) INCLUDE (b) WHERE a > 0;\n'
        "CREATE INDEX IF NOT EXISTS t2_lower_c ON t2 (lower(c)) WITH (fillfactor = 80);"
    )
    assert expand_statements(p) == [TABLE, "CREATE UNIQUE INDEX t2_b_key ON public.t2 (b)"]
    assert deferred_indexes(p) == [
        DeferredIndex(
            "T2 a",
            'CREATE INDEX CONCURRENTLY "T2 a" ON public.t2 (a DESC) INCLUDE (b) WHERE a > 0',
        ),
        DeferredIndex(
            "t2_lower_c",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS t2_lower_c ON t2 ((lower(c)))"
            " WITH (fillfactor = 80)",
        ),
    ]


def test_unnamed_indexes_and_named_ones_before_them_stay_in_expand() -> None:
    # `CREATE INDEX ON t2 (a)` gets its name from PostgreSQL: t2_a_idx1 in create's order.
    # Run while t2_a_idx did not exist yet, it would take t2_a_idx itself; so the named
    # indexes before an unnamed one stay in expand, and only those after it wait
    create = (
        f"{TABLE};\nCREATE INDEX t2_a_idx ON t2 (a);\nCREATE INDEX ON t2 (a);\n"
        "CREATE INDEX t2_b ON t2 (b);"
    )
    p = plan(create)
    assert expand_statements(p) == [
        TABLE,
        "CREATE INDEX t2_a_idx ON t2 (a)",
        "CREATE INDEX ON t2 (a)",
    ]
    assert [d.name for d in deferred_indexes(p)] == ["t2_b"]


def test_a_partitioned_new_table_keeps_every_index_in_expand() -> None:
    create = (
        "CREATE TABLE public.t2 (id bigint PRIMARY KEY, a int) PARTITION BY RANGE (id);\n"
        "CREATE TABLE public.t2_all PARTITION OF public.t2 DEFAULT;\n"
        "CREATE INDEX t2_a ON public.t2 (a);"
    )
    p = plan(create)
    assert deferred_indexes(p) == []
    assert len(expand_statements(p)) == 3


def test_without_a_backfill_phase_everything_runs_in_expand() -> None:
    p = plan(f"{TABLE};\nCREATE INDEX t2_a ON t2 (a);", phases="[expand, dual_write]")
    assert deferred_indexes(p) == []
    assert expand_statements(p) == [TABLE, "CREATE INDEX t2_a ON t2 (a)"]


def test_indexes_on_other_created_tables_stay_in_expand() -> None:
    create = (
        f"{TABLE};\nCREATE TABLE public.t2_child () INHERITS (public.t2);\n"
        "CREATE INDEX t2_child_a ON public.t2_child (a);"
    )
    p = plan(create)
    assert deferred_indexes(p) == []
