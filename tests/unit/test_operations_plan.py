"""The `operations` target's shape rules, checked without a database: each malformed plan is
one PlanError at the `file:line` of the entry at fault."""

from __future__ import annotations

import pytest

from pgshift.errors import PlanError
from pgshift.plan.load import load_plan_text

HEAD = "version: 1\nname: ops\ntable: public.accounts\n"
GOOD_OPERATIONS = "operations:\n  - rename_column: {column: status, to: state}\n"


def _error(text: str) -> PlanError:
    with pytest.raises(PlanError) as caught:
        load_plan_text(text, "plan.yaml")
    return caught.value


def _line(text: str, fragment: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


BAD = [
    (
        "unknown_kind",
        "operations:\n  - rename_colum: {column: status, to: state}\nphases: [expand, contract]\n",
        "rename_colum",
        "rename_colum",
    ),
    (
        "missing_key",
        "operations:\n  - rename_column: {column: status}\nphases: [expand, contract]\n",
        "rename_column",
        "to",
    ),
    (
        "unknown_key",
        "operations:\n  - drop_column: {column: status, cascade: true}\nphases: [expand, contract]\n",
        "drop_column",
        "cascade",
    ),
    (
        "two_kinds_in_one_entry",
        "operations:\n  - drop_column: {column: a}\n    drop_index: {name: b}\nphases: [expand, contract]\n",
        "drop_column",
        "holds one kind",
    ),
    (
        "bad_at",
        "operations:\n  - add_check: {name: c, check: 'a > 0', at: cutover}\nphases: [expand, contract]\n",
        "add_check",
        "expand",
    ),
    (
        "backfill_phase",
        GOOD_OPERATIONS + "phases: [expand, backfill, contract]\n",
        "phases",
        "not available with `operations`",
    ),
    (
        "no_contract",
        GOOD_OPERATIONS + "phases: [expand, verify]\n",
        "phases",
        "needs an 'contract' phase",
    ),
    (
        "verify_after_contract",
        GOOD_OPERATIONS + "phases:\n  - expand\n  - contract\n  - verify\n",
        "- verify",
        "point of no return",
    ),
    (
        "versions_without_gate",
        "application: {mode: versions}\n" + GOOD_OPERATIONS + "phases: [expand, contract]\n",
        "phases",
        "needs a gate between expand and contract",
    ),
    (
        "two_targets",
        GOOD_OPERATIONS + "columns:\n  balance: {type: bigint}\nphases: [expand, contract]\n",
        "operations",
        "exactly one of",
    ),
    (
        "key",
        "key: [id]\n" + GOOD_OPERATIONS + "phases: [expand, contract]\n",
        "key:",
        "walks no rows",
    ),
    (
        "name_too_long",
        f"operations:\n  - create_index: {{name: {'x' * 64}, columns: [a]}}\nphases: [expand, contract]\n",
        "create_index",
        "63",
    ),
]


@pytest.mark.parametrize(("case", "body", "at", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_malformed_operations(case: str, body: str, at: str, fragment: str) -> None:
    text = HEAD + body
    error = _error(text)
    assert error.where is not None, case
    file, line, _column = error.where.split(":")
    assert (file, int(line)) == ("plan.yaml", _line(text, at)), str(error)
    assert fragment in error.message, str(error)
    assert "\n" not in str(error)


def test_a_good_plan_loads_with_its_operations_in_order() -> None:
    text = (
        HEAD
        + "application: {mode: versions, schema: app_v2}\n"
        + GOOD_OPERATIONS
        + "  - set_not_null: {column: email}\n"
        + "  - add_foreign_key:\n      name: fk\n      columns: [owner_id]\n"
        + "      references: {table: owners, columns: [id]}\n"
        + "phases: [expand, verify, {gate: {name: old_gone}}, contract, {sql: {up: 'SELECT 1', down: 'SELECT 1'}}]\n"
    )
    plan = load_plan_text(text, "plan.yaml").plan
    assert plan.target == "operations"
    assert plan.operations is not None
    assert [o.kind for o in plan.operations] == ["rename_column", "set_not_null", "add_foreign_key"]
    assert plan.operations[1].at == "contract"  # type: ignore[union-attr]
    assert plan.phase_names() == ["expand", "verify", "old_gone", "contract", "sql"]
