"""rename_table: versions: the new version's view carries the new name from expand on;
contract renames the table (the view reads it by OID and stays valid). rename: contract
renames it, and clients naming the old name fail from then on. Runs last in contract, after
every other operation on the table."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgshift.operations.base import BaseOperation, ClientEffect, ViewEffect, relation_free
from pgshift.phases.base import SqlStep, exists_query


class RenameTable(BaseOperation):
    def validate(self) -> None:
        if self.spec.to == self.table.name:
            raise self.ctx.error(f"{self.table.display} has that name already", "to")

    def check(self, conn: psycopg.Connection[Any]) -> None:
        relation_free(conn, self.ctx, self.spec.to, "to")

    def contract(self) -> list[SqlStep]:
        table = self.table
        new = sql.Identifier(table.schema, self.spec.to)
        return [
            SqlStep(
                description=f"rename table {table.display} to {self.spec.to}",
                statements=(
                    sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                        table.qualified, sql.Identifier(self.spec.to)
                    ),
                ),
                lock="ACCESS EXCLUSIVE",
                done_if=exists_query(
                    "SELECT 1 WHERE to_regclass({}) IS NULL AND to_regclass({}) IS NOT NULL",
                    table.regclass,
                    new.as_string(),
                ),
                hold="milliseconds (catalog only)",
            )
        ]

    def view(self) -> ViewEffect:
        return ViewEffect(table_name=self.spec.to)

    def clients(self) -> list[ClientEffect]:
        old, new = self.table.name, self.spec.to
        if self.ctx.versions:
            return [
                ClientEffect(
                    "contract",
                    f"sessions of the OLD version still connected that name table {old}",
                    "fail with SQLSTATE 42P01 (undefined table)",
                    f"Stop the old version before contract; the new version names {new} through"
                    " its view from expand on.",
                )
            ]
        return [
            ClientEffect(
                "contract",
                f"every client naming table {old}",
                "fails with SQLSTATE 42P01 (undefined table) from the rename on",
                f"Deploy the version naming {new} right at contract, or use application mode"
                " versions.",
            )
        ]

    def describe(self) -> str:
        return f"rename table {self.table.name} to {self.spec.to}"
