"""set_comment: COMMENT ON TABLE or COLUMN (catalog only), where `at` says; rolled back (from
expand) to the comment there was when the migration started, read from the snapshot."""

from __future__ import annotations

from psycopg import sql

from pgshift.operations.base import BaseOperation, Touch
from pgshift.phases.base import SqlStep


class SetComment(BaseOperation):
    def validate(self) -> None:
        if self.spec.column is not None:
            self.column(self.spec.column, "column")

    def touches(self) -> list[Touch]:
        return [] if self.spec.column is None else [Touch(self.spec.column, "comment")]

    def old(self) -> str | None:
        properties = self.table.properties
        if self.spec.column is None:
            return properties.comment
        return dict(properties.column_comments).get(self.spec.column)

    def _comment(self, text: str | None, description: str) -> SqlStep:
        table = self.table
        target = (
            sql.SQL("TABLE {}").format(table.qualified)
            if self.spec.column is None
            else sql.SQL("COLUMN {}").format(
                sql.Identifier(table.schema, table.name, self.spec.column)
            )
        )
        return SqlStep(
            description=description,
            statements=(
                sql.SQL("COMMENT ON {} IS {}").format(
                    target, sql.SQL("NULL") if text is None else sql.Literal(text)
                ),
            ),
            lock="SHARE UPDATE EXCLUSIVE",
        )

    def _what(self) -> str:
        return "the table" if self.spec.column is None else f"column {self.spec.column}"

    def expand(self) -> list[SqlStep]:
        if self.spec.at != "expand":
            return []
        return [self._comment(self.spec.comment, f"set the comment of {self._what()}")]

    def expand_rollback(self) -> list[SqlStep]:
        if self.spec.at != "expand":
            return []
        return [self._comment(self.old(), f"restore the comment of {self._what()}")]

    def contract(self) -> list[SqlStep]:
        if self.spec.at != "contract":
            return []
        return [self._comment(self.spec.comment, f"set the comment of {self._what()}")]

    def describe(self) -> str:
        return f"set the comment of {self._what()} at {self.spec.at}"
