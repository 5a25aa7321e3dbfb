"""add_foreign_key: ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID (SHARE ROW EXCLUSIVE on both
tables, briefly), then VALIDATE CONSTRAINT in its own transaction (SHARE UPDATE EXCLUSIVE on
the table, ROW SHARE on the referenced one: no read or write waits). The NOT VALID key
checks new writes at once (here, and deletes of referenced rows there), so it is added where
`at` says: contract by default."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgshift.catalog import Table, load_table
from pgshift.db import Query, split_name
from pgshift.errors import PlanError
from pgshift.operations.base import (
    ClientEffect,
    Touch,
    column_list,
)
from pgshift.operations.constraints import ConstraintAddedWhereAtSays, validated_constraint
from pgshift.phases.base import SqlStep


class AddForeignKey(ConstraintAddedWhereAtSays):
    kind = "FOREIGN KEY"
    drop_lock = "SHARE ROW EXCLUSIVE"
    referenced: Table | None = None  # read by `check`; the SQL names it as written

    def validate(self) -> None:
        spec = self.spec
        self.name_free(spec.name, "name")
        for number, name in enumerate(spec.columns):
            self.column(name, "columns", number)
        if len(spec.columns) != len(spec.references.columns):
            raise self.ctx.error(
                f"{len(spec.columns)} column(s) cannot reference"
                f" {len(spec.references.columns)}: name as many on each side",
                "references",
                "columns",
            )
        if len(set(spec.columns)) != len(spec.columns):
            raise self.ctx.error("a column is named twice", "columns")
        if self.table.kind == "p":
            raise self.ctx.error(
                f"{self.table.display} is partitioned: PostgreSQL cannot add a foreign key NOT"
                " VALID to it, and adding one valid would block writes while it scans; add it"
                " per partition in sql phases",
                "columns",
            )

    def check(self, conn: psycopg.Connection[Any]) -> None:
        spec = self.spec
        try:
            target = load_table(conn, spec.references.table)
        except PlanError as error:
            raise self.ctx.error(
                f"the referenced table {spec.references.table!r} does not exist",
                "references",
                "table",
            ) from error
        for number, (mine, theirs) in enumerate(
            zip(spec.columns, spec.references.columns, strict=True)
        ):
            where = ("references", "columns", number)
            if theirs not in target.columns:
                raise self.ctx.error(f"{target.display} has no column {theirs!r}", *where)
            ours, other = self.table.columns[mine].type, target.columns[theirs].type
            if ours != other:
                raise self.ctx.error(
                    f"{mine} is {ours} but {target.display}.{theirs} is {other}: a foreign key"
                    " needs the same type on both sides (change one first)",
                    *where,
                )
        wanted = set(spec.references.columns)
        keys = [set(k) for k in target.unique_keys]
        if target.primary_key:
            keys.append(set(target.primary_key))
        if wanted not in keys:
            raise self.ctx.error(
                f"({', '.join(spec.references.columns)}) of {target.display} is neither its"
                " primary key nor unique: a foreign key must reference one",
                "references",
                "columns",
            )

    def touches(self) -> list[Touch]:
        return [Touch(c, "use") for c in self.spec.columns]

    def names(self) -> list[str]:
        return [self.spec.name]

    def _target(self) -> sql.Composable:
        schema, name = split_name(self.spec.references.table)
        return sql.Identifier(schema, name) if schema else sql.Identifier(name)

    def _steps(self) -> list[SqlStep]:
        spec = self.spec
        definition = sql.SQL(
            "FOREIGN KEY ({}) REFERENCES {} ({}) ON DELETE {} ON UPDATE {}"
        ).format(
            column_list(spec.columns),
            self._target(),
            column_list(spec.references.columns),
            sql.SQL(spec.on_delete.upper()),  # one of the model's fixed actions
            sql.SQL(spec.on_update.upper()),
        )
        return validated_constraint(
            self.table,
            spec.name,
            definition,
            f"FOREIGN KEY {spec.name}",
            lock="SHARE ROW EXCLUSIVE",
        )

    def violations(self) -> list[tuple[str, Query]]:
        spec = self.spec
        matches = sql.SQL(" AND ").join(
            sql.SQL("r.{} = t.{}").format(sql.Identifier(theirs), sql.Identifier(mine))
            for mine, theirs in zip(spec.columns, spec.references.columns, strict=True)
        )
        filled = sql.SQL(" AND ").join(
            sql.SQL("t.{} IS NOT NULL").format(sql.Identifier(c)) for c in spec.columns
        )
        condition = sql.SQL("{} AND NOT EXISTS (SELECT 1 FROM {} r WHERE {})").format(
            filled, self._target(), matches
        )
        query = sql.SQL("SELECT count(*) FROM {} t WHERE {}").format(
            self.table.qualified, condition
        )
        return [(f"rows without a match for FOREIGN KEY {spec.name}", query)]

    def clients(self) -> list[ClientEffect]:
        spec = self.spec
        return [
            ClientEffect(
                spec.at,
                f"writes of ({', '.join(spec.columns)}) without a row in"
                f" {spec.references.table}, and deletes there of rows still referenced",
                "fail with SQLSTATE 23503 (foreign_key_violation) from the step adding it"
                " NOT VALID",
                "Make the application keep the reference before that step.",
            )
        ]

    def describe(self) -> str:
        spec = self.spec
        return (
            f"add FOREIGN KEY {spec.name} ({', '.join(spec.columns)}) REFERENCES"
            f" {spec.references.table} ({', '.join(spec.references.columns)}) at {spec.at}"
        )
