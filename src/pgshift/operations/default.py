"""set_default and drop_default: catalog only, a brief ACCESS EXCLUSIVE lock, where `at` says
(contract by default). Rolled back (from expand) to the default the column had when the
migration started, read from the table's snapshot. In versions mode the new version's view
carries the new default from expand on."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgshift.operations.base import BaseOperation, Touch, ViewEffect, alter, try_sql
from pgshift.operations.expressions import expression_columns
from pgshift.phases.base import SqlStep


class SetDefault(BaseOperation):
    def new_default(self) -> str | None:
        return str(self.spec.default)

    def validate(self) -> None:
        name = self.spec.column
        self.column(name, "column")
        column = self.table.columns[name]
        if column.identity or column.generated:
            kind = "an identity" if column.identity else "a generated"
            raise self.ctx.error(f"{name} is {kind} column: it has no default to set", "column")
        if self.new_default() is not None:
            expression_columns(self.spec.default, self.ctx.path("default"))

    def check(self, conn: psycopg.Connection[Any]) -> None:
        column = self.table.columns[self.spec.column]
        try_sql(
            conn,
            self.ctx,
            [
                sql.SQL("CREATE TEMP TABLE pgshift_check (v {}) ON COMMIT DROP").format(
                    sql.SQL(column.type)
                ),
                sql.SQL("INSERT INTO pgshift_check (v) SELECT ({}) LIMIT 0").format(
                    sql.SQL(self.spec.default)
                ),
            ],
            "default",
            "default",
        )

    def touches(self) -> list[Touch]:
        return [Touch(self.spec.column, "default")]

    def _set(self, default: str | None, description: str) -> SqlStep:
        column = sql.Identifier(self.spec.column)
        action = (
            sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(column)
            if default is None
            else sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(column, sql.SQL(default))
        )
        # setting it again sets the same: a re-run is harmless
        return SqlStep(
            description=description,
            statements=(alter(self.table, action),),
            lock="ACCESS EXCLUSIVE",
            hold="milliseconds (catalog only)",
        )

    def _forward(self) -> SqlStep:
        default = self.new_default()
        what = "drop the default" if default is None else f"set the default {default}"
        return self._set(default, f"{what} of {self.spec.column} (catalog only)")

    def expand(self) -> list[SqlStep]:
        return [self._forward()] if self.spec.at == "expand" else []

    def expand_rollback(self) -> list[SqlStep]:
        if self.spec.at != "expand":
            return []
        old = self.table.columns[self.spec.column].default  # from the snapshot: as at the start
        what = "drop the default" if old is None else f"restore the default {old}"
        return [self._set(old, f"{what} of {self.spec.column}")]

    def contract(self) -> list[SqlStep]:
        return [self._forward()] if self.spec.at == "contract" else []

    def view(self) -> ViewEffect:
        return ViewEffect(defaults={self.spec.column: self.new_default()})

    def describe(self) -> str:
        default = self.new_default()
        what = "drop the default" if default is None else f"set the default {default}"
        return f"{what} of {self.spec.column} at {self.spec.at}"


class DropDefault(SetDefault):
    def new_default(self) -> str | None:
        return None

    def validate(self) -> None:
        super().validate()
        if self.table.columns[self.spec.column].default is None:
            raise self.ctx.error(f"{self.spec.column} has no default to drop", "column")

    def check(self, conn: psycopg.Connection[Any]) -> None:
        return None
