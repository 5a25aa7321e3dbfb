"""The operations of a plan, built against the table and checked together: what `compile`
turns into phases, like the `columns` and `new_table` shapes. Pure: no database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from pgshift.catalog import Table
from pgshift.operations.add_check import AddCheck
from pgshift.operations.add_foreign_key import AddForeignKey
from pgshift.operations.add_unique import AddPrimaryKey, AddUnique
from pgshift.operations.base import ClientEffect, Operation, OperationContext
from pgshift.operations.comment import SetComment
from pgshift.operations.default import DropDefault, SetDefault
from pgshift.operations.drop_column import DropColumn
from pgshift.operations.indexes import CreateIndex, DropIndex
from pgshift.operations.not_null import DropNotNull, SetNotNull
from pgshift.operations.rename_column import RenameColumn
from pgshift.operations.rename_table import RenameTable
from pgshift.plan.model import Plan

MODULES: dict[str, Any] = {
    "rename_column": RenameColumn,
    "drop_column": DropColumn,
    "rename_table": RenameTable,
    "add_check": AddCheck,
    "add_foreign_key": AddForeignKey,
    "add_unique": AddUnique,
    "add_primary_key": AddPrimaryKey,
    "set_not_null": SetNotNull,
    "drop_not_null": DropNotNull,
    "set_default": SetDefault,
    "drop_default": DropDefault,
    "set_comment": SetComment,
    "create_index": CreateIndex,
    "drop_index": DropIndex,
}

# contract runs constraints and the rest first (their SQL names the columns as they are),
# then renames and drops of columns, then the table's rename (every step before names it)
_CONTRACT_ORDER = {"rename_column": 1, "drop_column": 1, "rename_table": 2}


@dataclass(frozen=True)
class OperationsShape:
    table: Table
    operations: tuple[Operation, ...]

    def in_contract_order(self) -> list[Operation]:
        return sorted(self.operations, key=lambda o: _CONTRACT_ORDER.get(o.ctx.kind, 0))

    @property
    def view_name(self) -> str:
        """The name the new version's view has: the table's, or the one it is renamed to."""
        renamed = [o.view().table_name for o in self.operations]
        return next((name for name in renamed if name), self.table.name)

    def new_shape(self, table: Table) -> list[tuple[str, str]]:
        """Every column the new version sees, in order: (its new name, the table's column)."""
        renamed: dict[str, str] = {}
        dropped: set[str] = set()
        for operation in self.operations:
            renamed.update(operation.view().renamed)
            dropped |= operation.view().dropped
        return [(renamed.get(name, name), name) for name in table.columns if name not in dropped]

    def view_columns(self) -> list[sql.Composable]:
        """The view's select list: each column under its new name."""
        return [
            sql.Identifier(name)
            if new == name
            else sql.SQL("{} AS {}").format(sql.Identifier(name), sql.Identifier(new))
            for new, name in self.new_shape(self.table)
        ]

    def view_defaults(self) -> list[tuple[str, str]]:
        """The new shape's column defaults, for the view (an UPDATE's SET col = DEFAULT through
        a view takes the view's)."""
        renamed: dict[str, str] = {}
        dropped: set[str] = set()
        defaults: dict[str, str | None] = {}
        for operation in self.operations:
            effect = operation.view()
            renamed.update(effect.renamed)
            dropped |= effect.dropped
            defaults.update(effect.defaults)
        out = []
        for name, column in self.table.columns.items():
            if name in dropped or column.generated:
                continue
            default = defaults.get(name, column.default)
            if default is not None:
                out.append((renamed.get(name, name), default))
        return out

    def clients(self) -> list[ClientEffect]:
        return [c for o in self.operations for c in o.clients()]


def build_operations_shape(plan: Plan, table: Table, view_schema: str) -> OperationsShape:
    """Every operation built and validated against `table`, then checked against the others."""
    assert plan.operations is not None
    built: list[Operation] = []
    for index, spec in enumerate(plan.operations):
        ctx = OperationContext(
            table=table,
            index=index,
            kind=spec.kind,
            versions=plan.versions,
            view_schema=view_schema,
        )
        operation: Operation = MODULES[spec.kind](spec, ctx)
        operation.validate()
        built.append(operation)
    _no_conflicts(built)
    return OperationsShape(table=table, operations=tuple(built))


def _no_conflicts(operations: list[Operation]) -> None:
    """Refused, at the later operation: a column renamed or dropped that another operation
    also touches, one aspect of a column (its nullability, default, comment) changed twice, one
    constraint or index name created twice, two columns renamed to one name, two table renames."""
    touched: dict[tuple[str, str], int] = {}
    names: dict[str, int] = {}
    new_columns: dict[str, int] = {}
    table_renamed: int | None = None
    for operation in operations:
        ctx = operation.ctx
        number = ctx.index + 1
        for touch in operation.touches():
            for (column, aspect), earlier in touched.items():
                if column != touch.column:
                    continue
                if "name" in (aspect, touch.aspect) or (aspect == touch.aspect and aspect != "use"):
                    raise ctx.error(
                        f"operation {earlier} already changes column {column} in a way this one"
                        " conflicts with; do one of them in a later migration",
                        "column",
                    )
        for touch in operation.touches():
            touched.setdefault((touch.column, touch.aspect), number)
        for name in operation.names():
            if name in names:
                raise ctx.error(
                    f"operation {names[name]} uses the name {name!r} too; one operation per name",
                    "name",
                )
            names[name] = number
        if ctx.kind == "rename_column":
            to = operation.spec.to
            if to in new_columns:
                raise ctx.error(f"operation {new_columns[to]} renames a column to {to!r} too", "to")
            new_columns[to] = number
        if ctx.kind == "rename_table":
            if table_renamed is not None:
                raise ctx.error(f"operation {table_renamed} renames the table already", "to")
            table_renamed = number
