"""What every operation module provides, and the pieces they share.

An operation is built from its plan entry and the table as the migration knows it (the live
catalog when it starts, the stored snapshot afterwards: what rollback restores, an old default
or comment, is read from there). `validate` needs no database; `check` tries on the live
database what only it can tell (an expression compiles, a referenced table matches).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg import sql

from pgshift.catalog import Table
from pgshift.db import Query
from pgshift.errors import PlanError
from pgshift.phases.base import SqlStep, exists_query

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class OperationContext:
    """What an operation compiles against: the table, where its entry sits in the plan, and
    how the application moves (versions mode serves the new names through a view)."""

    table: Table
    index: int  # position in `operations`
    kind: str
    versions: bool
    view_schema: str

    def path(self, *keys: str | int) -> Path:
        return ("operations", self.index, self.kind, *keys)

    def error(self, message: str, *keys: str | int) -> PlanError:
        return PlanError(message, path=self.path(*keys))


@dataclass(frozen=True)
class ClientEffect:
    """What the application sees because of one operation, for `migrate plan` and the
    runbook: at `phase` (or from its end on with `after`, at its rollback with `on_rollback`)."""

    phase: str
    who: str
    error: str
    action: str
    on_rollback: bool = False
    after: bool = False


@dataclass(frozen=True)
class Touch:
    """What an operation changes of a column: its name or existence ("name"), its nullability,
    default or comment. Two operations touching one column's same aspect, or one renaming or
    dropping a column another touches, conflict."""

    column: str
    aspect: str  # name | null | default | comment | use


@dataclass(frozen=True)
class ViewEffect:
    """How the new version's view differs from the table (versions mode)."""

    renamed: dict[str, str] = field(default_factory=dict)  # old column -> new name
    dropped: frozenset[str] = frozenset()
    table_name: str | None = None
    defaults: dict[str, str | None] = field(default_factory=dict)  # column -> new default


class Operation(Protocol):
    """One module of `pgshift.operations` per kind implements this."""

    ctx: OperationContext
    spec: Any

    def validate(self) -> None:
        """Refuse, with the plan path at fault, what the table cannot take (no database)."""

    def check(self, conn: psycopg.Connection[Any]) -> None:
        """Try on the live database what the catalog alone cannot tell (nothing is kept)."""

    def touches(self) -> list[Touch]: ...

    def names(self) -> list[str]:
        """The constraint or index names it creates (unique across the plan)."""

    def expand(self) -> list[SqlStep]: ...

    def expand_rollback(self) -> list[SqlStep]:
        """Taking back what `expand` did, in the order to run it."""

    def contract(self) -> list[SqlStep]: ...

    def violations(self) -> list[tuple[str, Query]]:
        """(what, `SELECT count(*) ...`) of the existing rows the operation would reject."""

    def view(self) -> ViewEffect: ...

    def clients(self) -> list[ClientEffect]: ...

    def describe(self) -> str: ...


# ---------------------------------------------------------------- shared SQL


def alter(table: Table, action: Query) -> Query:
    return sql.SQL("ALTER TABLE {} ").format(table.qualified) + action


def renamed_query(table: Table, old: str, new: str) -> Query:
    """True once `old` is gone and `new` is there."""
    return exists_query(
        "SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid ="
        " to_regclass({}) AND attname = {} AND NOT attisdropped) AND EXISTS (SELECT 1 FROM"
        " pg_attribute WHERE attrelid = to_regclass({}) AND attname = {} AND NOT attisdropped)",
        table.regclass,
        old,
        table.regclass,
        new,
    )


def constraint_query(table: Table, name: str, validated: bool = False) -> Query:
    """True once the constraint exists (and, with `validated`, is validated)."""
    return exists_query(
        "SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass({}) AND conname = {}"
        + (" AND convalidated" if validated else ""),
        table.regclass,
        name,
    )


def valid_index_query(schema: str, name: str) -> Query:
    return exists_query(
        "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = {} AND c.relname = {} AND i.indisvalid",
        schema,
        name,
    )


def not_null_query(table: Table, column: str, not_null: bool = True) -> Query:
    return exists_query(
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass({}) AND attname = {}"
        " AND attnotnull = {}",
        table.regclass,
        column,
        not_null,
    )


def drop_constraint(table: Table, name: str) -> Query:
    return alter(table, sql.SQL("DROP CONSTRAINT IF EXISTS {}").format(sql.Identifier(name)))


def count_query(table: Table, condition: Query) -> Query:
    return sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table.qualified, condition)


def column_list(columns: list[str] | tuple[str, ...]) -> Query:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


class BaseOperation:
    """Defaults for what an operation does not do; each module overrides what it does."""

    def __init__(self, spec: Any, ctx: OperationContext) -> None:
        self.spec = spec
        self.ctx = ctx

    @property
    def table(self) -> Table:
        return self.ctx.table

    def validate(self) -> None:
        return None

    def check(self, conn: psycopg.Connection[Any]) -> None:
        return None

    def touches(self) -> list[Touch]:
        return []

    def names(self) -> list[str]:
        return []

    def expand(self) -> list[SqlStep]:
        return []

    def expand_rollback(self) -> list[SqlStep]:
        return []

    def contract(self) -> list[SqlStep]:
        return []

    def violations(self) -> list[tuple[str, Query]]:
        return []

    def view(self) -> ViewEffect:
        return ViewEffect()

    def clients(self) -> list[ClientEffect]:
        return []

    def describe(self) -> str:
        return self.ctx.kind

    # helpers for the modules

    def column(self, name: str, *keys: str | int) -> None:
        """Refuse a column the table does not have."""
        if name not in self.table.columns:
            raise self.ctx.error(
                f"{self.table.display} has no column {name!r}"
                f" (its columns: {', '.join(self.table.columns)})",
                *keys,
            )

    def name_free(self, name: str, *keys: str | int) -> None:
        """Refuse a constraint or index name the table already uses."""
        taken = {c.name for c in self.table.constraints} | {i.name for i in self.table.indexes}
        if name in taken:
            raise self.ctx.error(
                f"{self.table.display} already has a constraint or index named {name!r}; name it otherwise",
                *keys,
            )


def relation_free(
    conn: psycopg.Connection[Any], ctx: OperationContext, name: str, *keys: str | int
) -> None:
    """Refuse a name another relation of the table's schema (an index, a table) has."""
    row = conn.execute(
        "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (ctx.table.schema, name),
    ).fetchone()
    if row is not None:
        kinds = {
            "r": "a table",
            "p": "a table",
            "i": "an index",
            "I": "an index",
            "v": "a view",
            "m": "a materialized view",
            "S": "a sequence",
            "f": "a foreign table",
        }
        raise ctx.error(
            f"{ctx.table.schema}.{name} is already {kinds.get(row[0], 'a relation')}; name it"
            " otherwise",
            *keys,
        )


def try_sql(
    conn: psycopg.Connection[Any],
    ctx: OperationContext,
    queries: list[Query],
    what: str,
    *keys: str | int,
) -> None:
    """Run `queries` in a transaction that is always rolled back; a failure names the key."""
    try:
        with conn.transaction(force_rollback=True):
            for query in queries:
                conn.execute(query)
    except psycopg.Error as error:
        detail = error.diag.message_primary or str(error).splitlines()[0]
        raise ctx.error(f"{what} does not work on {ctx.table.display}: {detail}", *keys) from error
