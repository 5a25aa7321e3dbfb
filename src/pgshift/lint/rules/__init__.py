"""The DDL safety rules, one module each (docs/lint.md): its `RULE` (code, slug, summary,
default severity), `NODES` (the statement types it looks at) and `check(unit, state)`, which
yields one message per hazard, each naming the safe way."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import import_module
from types import ModuleType

from pgshift.lint.model import Rule
from pgshift.lint.state import State, Unit

Check = Callable[[Unit, State], Iterator[str]]
# A rule's check, and the statement types (or AlterCommand) it looks at: the engine calls each
# check only on those.
Checked = tuple[Rule, Check, tuple[type, ...]]

_NAMES = (
    "pgs001_rewrite_type_change",
    "pgs002_volatile_default",
    "pgs003_set_not_null",
    "pgs004_constraint_not_valid",
    "pgs005_index_concurrently",
    "pgs006_constraint_using_index",
    "pgs007_rename_live",
    "pgs008_lock_timeout",
    "pgs009_rewrite_maintenance",
    "pgs010_rewrite_storage",
    "pgs011_drop_column",
    "pgs012_drop_table",
    "pgs013_prefer_bigint",
    "pgs014_prefer_identity",
    "pgs015_concurrently_in_transaction",
    "pgs016_detach_partition_concurrently",
    "pgs017_prefer_jsonb",
    "pgs018_prefer_timestamptz",
    "pgs019_add_column_not_null",
    "pgs020_statement_timeout",
    "pgs021_enum_value_used_too_soon",
    "pgs022_enum_rename_value",
    "pgs023_exclusion_constraint",
    "pgs024_drop_view",
    "pgs025_drop_constraint",
)
_MODULES: tuple[ModuleType, ...] = tuple(import_module(f"{__name__}.{n}") for n in _NAMES)

RULES: tuple[Rule, ...] = tuple(module.RULE for module in _MODULES)
RULE_BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}

# What each statement is checked with, in order. The lock_timeout rule comes after the rest:
# it is about the statement as a whole. PGS020 has no check of its own: it follows up on the
# others' findings (pgs020_statement_timeout.follow_up).
CHECKS: tuple[Checked, ...] = tuple(
    (module.RULE, module.check, module.NODES)
    for module in sorted(_MODULES, key=lambda m: m.RULE.id == "PGS008")
    if hasattr(module, "check")
)
_statement_timeout = _MODULES[_NAMES.index("pgs020_statement_timeout")]
follow_up = _statement_timeout.follow_up
STATEMENT_TIMEOUT: Rule = _statement_timeout.RULE
