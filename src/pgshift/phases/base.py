"""The compiled form of a plan: phases of concrete steps, each with its rollback.

`migrate plan`, `migrate runbook` and the executor all read these objects, so what the preview
shows is exactly what runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

from psycopg import sql

from pgshift.catalog import Table
from pgshift.db import Query
from pgshift.plan.model import Plan

# PostgreSQL's table lock levels, weakest first; "none" for steps that lock no table.
LockLevel = Literal[
    "none",
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
]

LOCK_ORDER: tuple[LockLevel, ...] = LockLevel.__args__  # type: ignore[attr-defined]

Server = Literal["source", "destination"]

# Which lock levels block the application's reads or writes while held or queued.
BLOCKS_WRITES = {"SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"}
BLOCKS_READS = {"ACCESS EXCLUSIVE"}


@dataclass(frozen=True)
class SqlStep:
    """Statements run together: in one transaction under lock_timeout (retried on lock timeout
    and deadlock), or one by one outside a transaction when `transactional` is false (the
    CONCURRENTLY forms). `done_if` is a query returning one boolean: true means the step's effect
    is already in place (a crash after commit), and the statements are skipped."""

    description: str
    statements: tuple[Query, ...]
    lock: LockLevel
    scans: bool = False
    rewrites: bool = False
    transactional: bool = True
    done_if: Query | None = None
    # (schema, index) built CONCURRENTLY here: an INVALID leftover is dropped before a retry
    builds_index: tuple[str, str] | None = None
    hold: str = "milliseconds"  # expected time the lock is held, for plan and runbook
    # When this step fails: statements taking back what the phase's earlier steps left in
    # force (a NOT VALID check that would reject writes), after which the phase starts over.
    undo_on_failure: tuple[Query, ...] = ()
    # Where it runs: a `move` has steps on both servers (the state stays on the source);
    # every other target's steps run on its one database.
    server: Server = "source"


@dataclass(frozen=True)
class ViolationCheck(SqlStep):
    """Counts, read only, of the existing rows each new constraint would reject (an
    `operations` plan's verify phase); any found fails the phase (before contract, so the
    migration can still be rolled back). `checks` pairs each count query with what it counts;
    `statements` holds the same queries, for `migrate plan`."""

    checks: tuple[tuple[str, Query], ...] = ()


def index_build(
    description: str,
    definition: Query,
    index: tuple[str, str],
    done_if: Query | None = None,
    hold: str = "the index build (writes continue)",
) -> SqlStep:
    """A CREATE INDEX CONCURRENTLY step: outside a transaction, an INVALID leftover of an
    interrupted build dropped before each attempt."""
    return SqlStep(
        description=description,
        statements=(definition,),
        lock="SHARE UPDATE EXCLUSIVE",
        scans=True,
        transactional=False,
        builds_index=index,
        done_if=done_if,
        hold=hold,
    )


def index_drop(description: str, index: tuple[str, str]) -> SqlStep:
    """A DROP INDEX CONCURRENTLY IF EXISTS step, outside a transaction."""
    return SqlStep(
        description=description,
        statements=(
            sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(*index)),
        ),
        lock="SHARE UPDATE EXCLUSIVE",
        transactional=False,
    )


class KeyRanges:
    """Key ranges (lower, upper] over a table's key, for the steps that walk it in keyset
    batches (backfill, the data check)."""

    key_columns: Query  # (k1, k2)
    key_types: tuple[str, ...]

    def condition(self, lower: Query | None, upper: Query | None) -> Query:
        """The key range (lower, upper], either end open (None)."""
        parts = []
        if lower is not None:
            parts.append(sql.SQL("{} > {}").format(self.key_columns, lower))
        if upper is not None:
            parts.append(sql.SQL("{} <= {}").format(self.key_columns, upper))
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")

    def key_value(self, values: list[str]) -> Query:
        """A key as typed literals, `('42'::integer)`. Batches carry their bounds as literals,
        not parameters: the plan's expressions in the statement may hold a `%` (modulo) that
        parameter parsing would take for a placeholder."""
        return sql.SQL("({})").format(
            sql.SQL(", ").join(
                sql.SQL("{}::{}").format(sql.Literal(v), sql.SQL(t))
                for v, t in zip(values, self.key_types, strict=True)
            )
        )


@dataclass(frozen=True)
class BackfillStep(KeyRanges):
    """Fill the new shape for rows that existed before dual-write, batch by batch in key order.
    The runner finds each batch's upper key with `bounds`, then runs `statement` over the key
    range (previous last key, upper key]."""

    def batch(self, lower: Query | None, upper: Query | None) -> Query:
        """The batch statement over the key range (lower, upper], either end open (None)."""
        return self.statement(self.condition(lower, upper))

    description: str
    table: sql.Identifier
    key: tuple[str, ...]
    statement: Callable[[Query], Query]  # the batch, given its key condition
    key_columns: Query  # (k1, k2)
    key_params: Query  # (%s::type1, %s::type2), for the bounds queries
    key_types: tuple[str, ...]
    bounds: Query  # parameters: last key..., offset -> the batch's upper key as text
    first_bounds: Query  # parameters: offset -> the first batch's upper key as text
    session_settings: tuple[tuple[str, str], ...] = ()
    lock: LockLevel = "ROW EXCLUSIVE"
    scans: bool = True
    rewrites: bool = False
    hold: str = "one batch (batch_time)"


@dataclass(frozen=True)
class GateStep:
    """A stop for rollout: passes only when approved (if `approval`), once `wait` has passed
    since the previous phase ended, and (with `require_verify`) after a fresh verify finds no
    difference. Takes no lock and changes nothing."""

    description: str
    gate: str
    approval: bool
    wait: timedelta | None
    require_verify: bool
    require_no_old_sessions: bool = False
    lock: LockLevel = "none"
    scans: bool = False
    rewrites: bool = False
    hold: str = "nothing"


@dataclass(frozen=True)
class VerifyStep:
    """Row-hash comparison of the new shape against the plan's expressions; fails
    the phase on any difference."""

    description: str
    chunk_size: int
    lock: LockLevel = "ACCESS SHARE"
    scans: bool = True
    rewrites: bool = False
    hold: str = "one chunk's snapshot (writes continue)"


@dataclass(frozen=True)
class ShadowReadStep:
    """Each query against the old shape and against the new one (the view schema first on
    search_path), in one snapshot; results compared as ordered lists when the query sorts,
    as multisets otherwise."""

    description: str
    view_schema: str
    queries: tuple[str, ...]
    max_mismatches: int
    params_query: str | None
    lock: LockLevel = "ACCESS SHARE"
    scans: bool = False
    rewrites: bool = False
    hold: str = "the queries' own time (writes continue)"


@dataclass(frozen=True)
class DataCheckStep(KeyRanges):
    """Every existing row's new values computed and assigned to the new column types as the
    trigger will assign them (typmod included; NULL into a new table's NOT NULL column fails
    too), read only, in keyset batches like a backfill: dual_write's first step, so a plan
    whose expressions fail on some rows stops before a trigger can fail the application's
    writes of those rows. `statement` checks the columns at the given positions over a key
    condition and leaves the number of rows it read in the setting `rows_setting`."""

    def check(self, lower: Query | None, upper: Query | None, only: tuple[int, ...] = ()) -> Query:
        """The check over the key range (lower, upper]: every column, or those at `only`."""
        return self.statement(self.condition(lower, upper), only or tuple(range(len(self.columns))))

    description: str
    what: str  # what the plan calls the expressions: "up", "new_table.columns"
    table: sql.Identifier
    key: tuple[str, ...]
    columns: tuple[str, ...]  # the columns whose values are checked, in the plan's order
    statement: Callable[[Query, tuple[int, ...]], Query]
    rows_setting: str
    count: Callable[[Query], Query]  # count(*) over a key condition (no plan SQL in it)
    key_columns: Query
    key_types: tuple[str, ...]
    bounds: Query  # as BackfillStep's
    first_bounds: Query
    lock: LockLevel = "ACCESS SHARE"
    scans: bool = True
    rewrites: bool = False
    hold: str = "one batch's snapshot (writes continue)"


Step = SqlStep | BackfillStep | DataCheckStep | GateStep | VerifyStep | ShadowReadStep


@dataclass(frozen=True)
class Phase:
    index: int
    kind: str
    name: str
    forward: tuple[Step, ...]
    rollback: tuple[SqlStep, ...]
    reversible: bool = True
    summary: str = ""
    estimate_seconds: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


class PhaseCompiler(Protocol):
    """What every module of `pgshift.phases` provides for its kind."""

    def __call__(self, ctx: CompileContext, index: int, spec: Any) -> Phase: ...


@dataclass(frozen=True)
class CompileContext:
    plan: Plan
    table: Table
    state_schema: str
    # set by the columns target: the derived names and expressions every phase shares
    shape: Any = None
    # one of several tables of a plan: names its objects apart (see compile.py), and its rows
    # in row errors, whose keys it prefixes ("public.transfers (id)=(42)")
    tag: str | None = None
    label: str = ""

    @property
    def view_schema(self) -> str:
        return self.plan.view_schema

    @property
    def versions(self) -> bool:
        return self.plan.versions


def exists_query(query: str, *params: Any) -> Query:
    """`SELECT EXISTS (query)` with literal parameters, for `done_if` checks."""
    return sql.SQL("SELECT EXISTS (" + query + ")").format(*(sql.Literal(p) for p in params))
