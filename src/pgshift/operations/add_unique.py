"""add_unique and add_primary_key: the unique index is built CONCURRENTLY in expand (an
INVALID leftover of an interrupted build dropped before a retry; rollback drops it
CONCURRENTLY), then attached in contract with ADD CONSTRAINT ... USING INDEX (catalog only).
The index enforces uniqueness from its build on. A primary key's columns are made NOT NULL
first, through validated checks, so attaching it scans nothing."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgshift.db import Query, derived_name
from pgshift.operations.base import (
    BaseOperation,
    ClientEffect,
    Touch,
    alter,
    column_list,
    constraint_query,
    count_query,
    relation_free,
    valid_index_query,
)
from pgshift.operations.constraints import set_not_null
from pgshift.phases.base import SqlStep, index_build, index_drop


class AddUnique(BaseOperation):
    primary = False

    @property
    def name(self) -> str:
        return str(self.spec.name)

    def validate(self) -> None:
        self.name_free(self.name, "name")
        for number, column in enumerate(self.spec.columns):
            self.column(column, "columns", number)
        if len(set(self.spec.columns)) != len(self.spec.columns):
            raise self.ctx.error("a column is named twice", "columns")
        if self.table.kind == "p":
            raise self.ctx.error(
                f"{self.table.display} is partitioned: PostgreSQL cannot build its index"
                " CONCURRENTLY; build one per partition in sql phases",
                "columns",
            )

    def check(self, conn: psycopg.Connection[Any]) -> None:
        relation_free(conn, self.ctx, self.name, "name")

    def touches(self) -> list[Touch]:
        return [Touch(c, "use") for c in self.spec.columns]

    def names(self) -> list[str]:
        return [self.name]

    def expand(self) -> list[SqlStep]:
        table = self.table
        return [
            index_build(
                f"build the unique index {self.name} CONCURRENTLY (from here on, writes that"
                " duplicate a value fail)",
                sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})").format(
                    sql.Identifier(self.name), table.qualified, column_list(self.spec.columns)
                ),
                (table.schema, self.name),
                done_if=valid_index_query(table.schema, self.name),
            )
        ]

    def expand_rollback(self) -> list[SqlStep]:
        return [index_drop(f"drop the index {self.name}", (self.table.schema, self.name))]

    def contract(self) -> list[SqlStep]:
        word = "PRIMARY KEY" if self.primary else "UNIQUE"
        return [
            SqlStep(
                description=f"attach {self.name} as the table's {word} (catalog only)",
                statements=(
                    alter(
                        self.table,
                        sql.SQL("ADD CONSTRAINT {} {} USING INDEX {}").format(
                            sql.Identifier(self.name), sql.SQL(word), sql.Identifier(self.name)
                        ),
                    ),
                ),
                lock="ACCESS EXCLUSIVE",
                done_if=constraint_query(self.table, self.name),
                hold="milliseconds (catalog only)",
            )
        ]

    def clients(self) -> list[ClientEffect]:
        return [
            ClientEffect(
                "expand",
                f"writes that duplicate a ({', '.join(self.spec.columns)}) already there",
                "fail with SQLSTATE 23505 (unique_violation) from the index build on; a"
                " duplicate already in the table fails the build, and expand rolls back",
                "Remove duplicates and make the application write unique values first.",
            )
        ]

    def describe(self) -> str:
        return f"add UNIQUE {self.name} ({', '.join(self.spec.columns)})"


class AddPrimaryKey(AddUnique):
    primary = True

    @property
    def name(self) -> str:
        return str(self.spec.name or derived_name(self.table.name, "_pkey"))

    def validate(self) -> None:
        if self.table.primary_key is not None:
            raise self.ctx.error(
                f"{self.table.display} has a primary key already"
                f" ({', '.join(self.table.primary_key)}): changing a table's key is not an"
                " operation pgshift runs (the `columns` target widens one)",
                "columns",
            )
        super().validate()

    def nullable(self) -> list[str]:
        return [c for c in self.spec.columns if not self.table.columns[c].not_null]

    def touches(self) -> list[Touch]:
        return [*super().touches(), *(Touch(c, "null") for c in self.nullable())]

    def contract(self) -> list[SqlStep]:
        steps = [s for column in self.nullable() for s in set_not_null(self.table, column)]
        return steps + super().contract()

    def violations(self) -> list[tuple[str, Query]]:
        return [
            (
                f"rows with {column} NULL (the primary key needs NOT NULL)",
                count_query(self.table, sql.SQL("{} IS NULL").format(sql.Identifier(column))),
            )
            for column in self.nullable()
        ]

    def describe(self) -> str:
        return f"add PRIMARY KEY {self.name} ({', '.join(self.spec.columns)})"
