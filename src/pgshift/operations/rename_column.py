"""rename_column: the application moves from the old name to the new.

versions: the new version's view shows the new name from expand on; contract renames the
column of the table (the view reads it by number and stays valid). rename: contract renames
it, and clients naming the old name fail from then on."""

from __future__ import annotations

from psycopg import sql

from pgshift.operations.base import (
    BaseOperation,
    ClientEffect,
    Touch,
    ViewEffect,
    alter,
    renamed_query,
)
from pgshift.phases.base import SqlStep


class RenameColumn(BaseOperation):
    def validate(self) -> None:
        old, new = self.spec.column, self.spec.to
        self.column(old, "column")
        if new in self.table.columns:
            raise self.ctx.error(
                f"{self.table.display} already has a column {new!r}; rename to a free name", "to"
            )

    def touches(self) -> list[Touch]:
        return [Touch(self.spec.column, "name")]

    def contract(self) -> list[SqlStep]:
        old, new = self.spec.column, self.spec.to
        return [
            SqlStep(
                description=f"rename column {old} to {new}",
                statements=(
                    alter(
                        self.table,
                        sql.SQL("RENAME COLUMN {} TO {}").format(
                            sql.Identifier(old), sql.Identifier(new)
                        ),
                    ),
                ),
                lock="ACCESS EXCLUSIVE",
                done_if=renamed_query(self.table, old, new),
                hold="milliseconds (catalog only)",
            )
        ]

    def view(self) -> ViewEffect:
        return ViewEffect(renamed={self.spec.column: self.spec.to})

    def clients(self) -> list[ClientEffect]:
        old, new = self.spec.column, self.spec.to
        if self.ctx.versions:
            return [
                ClientEffect(
                    "contract",
                    f"sessions of the OLD version still connected that name column {old}",
                    "fail with SQLSTATE 42703 (undefined column)",
                    "Stop the old version before contract; the new version, through its view,"
                    f" names {new} from expand on and sees nothing.",
                )
            ]
        return [
            ClientEffect(
                "contract",
                f"every client naming column {old}",
                "fails with SQLSTATE 42703 (undefined column) from the rename on",
                f"Deploy the version naming {new} right at contract, or use application mode"
                " versions to run both names side by side.",
            )
        ]

    def describe(self) -> str:
        return f"rename column {self.spec.column} to {self.spec.to}"
