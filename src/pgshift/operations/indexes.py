"""create_index: CREATE INDEX CONCURRENTLY in expand (an INVALID leftover of an interrupted
build dropped before a retry), dropped CONCURRENTLY by its rollback. drop_index: DROP INDEX
CONCURRENTLY in contract; its definition stays in the migration's snapshot. Neither blocks a
read or a write (SHARE UPDATE EXCLUSIVE)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgshift.operations.base import (
    BaseOperation,
    Touch,
    column_list,
    relation_free,
    try_sql,
    valid_index_query,
)
from pgshift.operations.expressions import expression_columns
from pgshift.phases.base import SqlStep, index_build, index_drop


class CreateIndex(BaseOperation):
    def validate(self) -> None:
        spec = self.spec
        self.name_free(spec.name, "name")
        for number, column in enumerate(spec.columns):
            self.column(column, "columns", number)
        if spec.where is not None:
            for column in sorted(expression_columns(spec.where, self.ctx.path("where"))):
                self.column(column, "where")
        if self.table.kind == "p":
            raise self.ctx.error(
                f"{self.table.display} is partitioned: PostgreSQL cannot build its index"
                " CONCURRENTLY; build one per partition in sql phases",
                "name",
            )

    def check(self, conn: psycopg.Connection[Any]) -> None:
        relation_free(conn, self.ctx, self.spec.name, "name")
        if self.spec.where is not None:
            try_sql(
                conn,
                self.ctx,
                [
                    sql.SQL("SELECT 1 FROM {} WHERE {} LIMIT 0").format(
                        self.table.qualified, sql.SQL(self.spec.where)
                    )
                ],
                "where",
                "where",
            )

    def touches(self) -> list[Touch]:
        return [Touch(c, "use") for c in self.spec.columns]

    def names(self) -> list[str]:
        return [self.spec.name]

    def expand(self) -> list[SqlStep]:
        spec, table = self.spec, self.table
        statement = sql.SQL(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING {} ({})"
        ).format(
            sql.Identifier(spec.name),
            table.qualified,
            sql.SQL(spec.method),  # one of the model's fixed methods
            column_list(spec.columns),
        )
        if spec.where is not None:
            statement += sql.SQL(" WHERE {}").format(sql.SQL(spec.where))  # parsed: one expression
        return [
            index_build(
                f"build the index {spec.name} CONCURRENTLY",
                statement,
                (table.schema, spec.name),
                done_if=valid_index_query(table.schema, spec.name),
            )
        ]

    def expand_rollback(self) -> list[SqlStep]:
        return [index_drop(f"drop the index {self.spec.name}", (self.table.schema, self.spec.name))]

    def describe(self) -> str:
        return f"create the index {self.spec.name} ({', '.join(self.spec.columns)})"


class DropIndex(BaseOperation):
    def validate(self) -> None:
        name = self.spec.name
        index = next((i for i in self.table.indexes if i.name == name), None)
        if index is None:
            names = ", ".join(i.name for i in self.table.indexes) or "none"
            raise self.ctx.error(
                f"{self.table.display} has no index {name!r} (its indexes: {names})", "name"
            )
        if index.constraint is not None:
            raise self.ctx.error(
                f"{name} backs the constraint {index.constraint}: an index that enforces a"
                " constraint is dropped with it (ALTER TABLE ... DROP CONSTRAINT in a sql phase)",
                "name",
            )

    def names(self) -> list[str]:
        return [self.spec.name]

    def contract(self) -> list[SqlStep]:
        return [
            index_drop(
                f"drop the index {self.spec.name} CONCURRENTLY", (self.table.schema, self.spec.name)
            )
        ]

    def describe(self) -> str:
        return f"drop the index {self.spec.name}"
