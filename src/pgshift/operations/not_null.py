"""set_not_null: CHECK (column IS NOT NULL) NOT VALID, VALIDATE in its own transaction (no
read or write waits), then SET NOT NULL, which the validated check spares its scan, and the
check dropped. Writes of NULL fail from the first step on: where `at` says, contract by
default. drop_not_null: catalog only; rolled back the same validated way (which fails, saying
so, if NULLs were written meanwhile)."""

from __future__ import annotations

from psycopg import sql

from pgshift.db import Query
from pgshift.operations.base import BaseOperation, ClientEffect, Touch, count_query
from pgshift.operations.constraints import drop_not_null, set_not_null
from pgshift.phases.base import SqlStep


class SetNotNull(BaseOperation):
    def validate(self) -> None:
        name = self.spec.column
        self.column(name, "column")
        if self.table.columns[name].not_null:
            raise self.ctx.error(f"{name} is NOT NULL already", "column")

    def touches(self) -> list[Touch]:
        return [Touch(self.spec.column, "null")]

    def _steps(self) -> list[SqlStep]:
        return set_not_null(self.table, self.spec.column)

    def expand(self) -> list[SqlStep]:
        return self._steps() if self.spec.at == "expand" else []

    def expand_rollback(self) -> list[SqlStep]:
        return [drop_not_null(self.table, self.spec.column)] if self.spec.at == "expand" else []

    def contract(self) -> list[SqlStep]:
        return self._steps() if self.spec.at == "contract" else []

    def violations(self) -> list[tuple[str, Query]]:
        name = self.spec.column
        return [
            (
                f"rows with {name} NULL",
                count_query(self.table, sql.SQL("{} IS NULL").format(sql.Identifier(name))),
            )
        ]

    def clients(self) -> list[ClientEffect]:
        return [
            ClientEffect(
                self.spec.at,
                f"writes of NULL into {self.spec.column}",
                "fail with SQLSTATE 23514 (the NOT VALID check), then 23502, from the step"
                " adding the check on",
                "Make the application always write a value before that step.",
            )
        ]

    def describe(self) -> str:
        return f"set NOT NULL on {self.spec.column} at {self.spec.at}"


class DropNotNull(BaseOperation):
    def validate(self) -> None:
        name = self.spec.column
        self.column(name, "column")
        column = self.table.columns[name]
        if not column.not_null:
            raise self.ctx.error(f"{name} allows NULL already", "column")
        if self.table.primary_key and name in self.table.primary_key:
            raise self.ctx.error(
                f"{name} is part of the primary key of {self.table.display}, which needs NOT NULL",
                "column",
            )
        if column.identity:
            raise self.ctx.error(f"{name} is an identity column, which needs NOT NULL", "column")

    def touches(self) -> list[Touch]:
        return [Touch(self.spec.column, "null")]

    def expand(self) -> list[SqlStep]:
        return [drop_not_null(self.table, self.spec.column)] if self.spec.at == "expand" else []

    def expand_rollback(self) -> list[SqlStep]:
        if self.spec.at != "expand":
            return []
        return set_not_null(self.table, self.spec.column)

    def contract(self) -> list[SqlStep]:
        if self.spec.at != "contract":
            return []
        return [drop_not_null(self.table, self.spec.column)]

    def describe(self) -> str:
        return f"drop NOT NULL on {self.spec.column} at {self.spec.at}"
