"""add_check: ADD CONSTRAINT ... CHECK (...) NOT VALID, then VALIDATE CONSTRAINT in its own
transaction (SHARE UPDATE EXCLUSIVE: no read or write waits while the rows are scanned). The
NOT VALID constraint rejects new writes that break it at once, so it is added where `at` says:
contract by default, the application's writes keep working until then."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgshift.db import Query
from pgshift.operations.base import (
    ClientEffect,
    Touch,
    count_query,
    try_sql,
)
from pgshift.operations.constraints import ConstraintAddedWhereAtSays, validated_constraint
from pgshift.operations.expressions import expression_columns
from pgshift.phases.base import SqlStep


class AddCheck(ConstraintAddedWhereAtSays):
    kind = "CHECK"

    def columns(self) -> set[str]:
        return expression_columns(self.spec.check, self.ctx.path("check"))

    def validate(self) -> None:
        self.name_free(self.spec.name, "name")
        for name in sorted(self.columns()):
            self.column(name, "check")

    def check(self, conn: psycopg.Connection[Any]) -> None:
        try_sql(
            conn,
            self.ctx,
            [
                sql.SQL("SELECT ({})::boolean FROM {} LIMIT 0").format(
                    sql.SQL(self.spec.check), self.table.qualified
                )
            ],
            "check",
            "check",
        )

    def touches(self) -> list[Touch]:
        return [Touch(c, "use") for c in self.columns()]

    def names(self) -> list[str]:
        return [self.spec.name]

    def _steps(self) -> list[SqlStep]:
        return validated_constraint(
            self.table,
            self.spec.name,
            sql.SQL("CHECK ({})").format(sql.SQL(self.spec.check)),  # parsed: one expression
            f"CHECK {self.spec.name}",
        )

    def violations(self) -> list[tuple[str, Query]]:
        return [
            (
                f"rows breaking CHECK {self.spec.name}",
                count_query(self.table, sql.SQL("NOT ({})").format(sql.SQL(self.spec.check))),
            )
        ]

    def clients(self) -> list[ClientEffect]:
        return [
            ClientEffect(
                self.spec.at,
                f"writes that break CHECK {self.spec.name} ({self.spec.check})",
                "fail with SQLSTATE 23514 (check_violation) from the step adding it NOT VALID",
                "Make the application write only values that pass it before that step.",
            )
        ]

    def describe(self) -> str:
        return f"add CHECK {self.spec.name} ({self.spec.check}) at {self.spec.at}"
