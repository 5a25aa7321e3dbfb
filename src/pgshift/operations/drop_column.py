"""drop_column: versions: the new version's view lacks the column from expand on; contract
drops it from the table (catalog only: no rewrite). rename: contract drops it, and clients
still naming it fail from then on. The point of no return: a dropped column is gone."""

from __future__ import annotations

from psycopg import sql

from pgshift.operations.base import BaseOperation, ClientEffect, Touch, ViewEffect, alter
from pgshift.phases.base import SqlStep


class DropColumn(BaseOperation):
    def validate(self) -> None:
        name = self.spec.column
        table = self.table
        self.column(name, "column")
        if table.primary_key and name in table.primary_key:
            raise self.ctx.error(
                f"{name} is part of the primary key of {table.display}: dropping the key is not"
                " an operation pgshift runs; change the key with the `columns` target first",
                "column",
            )
        for fk in table.referencing_fks:
            if name in fk.columns:
                raise self.ctx.error(
                    f"foreign key {fk.name} on {fk.referenced_table} references {name}: drop it"
                    " first (a sql phase before contract)",
                    "column",
                )
        for dependent in table.dependents:
            if dependent.kind in ("view", "materialized view", "rule", "policy") and (
                name in dependent.columns
            ):
                raise self.ctx.error(
                    f"{dependent.kind} {dependent.name} reads {name}: change or drop it first",
                    "column",
                )
        column = table.columns[name]
        if (
            self.ctx.versions
            and column.not_null
            and column.default is None
            and not column.identity
            and not column.generated
        ):
            raise self.ctx.error(
                f"{name} is NOT NULL without a default: the new version's inserts through its"
                " view could not fill it; drop its NOT NULL (or give it a default) in an"
                " earlier migration",
                "column",
            )

    def touches(self) -> list[Touch]:
        return [Touch(self.spec.column, "name")]

    def gone_with(self) -> list[str]:
        """The indexes and constraints PostgreSQL drops with the column."""
        name = self.spec.column
        indexes = [i.name for i in self.table.indexes if name in i.columns]
        constraints = [
            c.name
            for c in self.table.constraints
            if name in c.columns and c.type in ("c", "f") and c.name not in indexes
        ]
        return indexes + constraints

    def contract(self) -> list[SqlStep]:
        name = self.spec.column
        also = self.gone_with()
        return [
            SqlStep(
                description=f"drop column {name} (catalog only, no rewrite)"
                + (f"; {', '.join(also)} go with it" if also else ""),
                statements=(
                    alter(
                        self.table, sql.SQL("DROP COLUMN IF EXISTS {}").format(sql.Identifier(name))
                    ),
                ),
                lock="ACCESS EXCLUSIVE",
                hold="milliseconds (catalog only)",
            )
        ]

    def view(self) -> ViewEffect:
        return ViewEffect(dropped=frozenset({self.spec.column}))

    def clients(self) -> list[ClientEffect]:
        name = self.spec.column
        star = ClientEffect(
            "contract",
            "prepared statements that read the table with SELECT * or RETURNING *",
            "fail once with SQLSTATE 0A000 (a column is dropped)",
            "Name the columns in such statements.",
        )
        if self.ctx.versions:
            return [
                ClientEffect(
                    "contract",
                    f"sessions of the OLD version still connected that name column {name}",
                    "fail with SQLSTATE 42703 (undefined column)",
                    f"Stop the old version before contract; the new version's view has no {name}"
                    " from expand on.",
                ),
                star,
            ]
        return [
            ClientEffect(
                "contract",
                f"every client still naming column {name}",
                "fails with SQLSTATE 42703 (undefined column) from the drop on",
                f"Deploy a version that no longer reads or writes {name} before contract.",
            ),
            star,
        ]

    def describe(self) -> str:
        return f"drop column {self.spec.column}"
