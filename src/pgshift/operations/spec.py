"""What a plan's `operations` entries say: one model per operation, shape only (names, types,
required keys). Checked against the table by each operation's module."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_NAME = 63  # PostgreSQL cuts longer names, and then nothing would find them again
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
# where an operation that the application's writes feel takes effect (docs/operations-target.md)
At = Literal["expand", "contract"]
Action = Literal["no action", "restrict", "cascade", "set null", "set default"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str


class RenameColumn(_Spec):
    kind: Literal["rename_column"]
    column: Name
    to: Name


class DropColumn(_Spec):
    kind: Literal["drop_column"]
    column: Name


class RenameTable(_Spec):
    kind: Literal["rename_table"]
    to: Name


class AddCheck(_Spec):
    kind: Literal["add_check"]
    name: Name
    check: str = Field(min_length=1)
    at: At = "contract"


class References(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str = Field(min_length=1)
    columns: list[Name] = Field(min_length=1)


class AddForeignKey(_Spec):
    kind: Literal["add_foreign_key"]
    name: Name
    columns: list[Name] = Field(min_length=1)
    references: References
    on_delete: Action = "no action"
    on_update: Action = "no action"
    at: At = "contract"


class AddUnique(_Spec):
    kind: Literal["add_unique"]
    name: Name
    columns: list[Name] = Field(min_length=1)


class AddPrimaryKey(_Spec):
    kind: Literal["add_primary_key"]
    name: Name | None = None
    columns: list[Name] = Field(min_length=1)


class SetNotNull(_Spec):
    kind: Literal["set_not_null"]
    column: Name
    at: At = "contract"


class DropNotNull(_Spec):
    kind: Literal["drop_not_null"]
    column: Name
    at: At = "contract"


class SetDefault(_Spec):
    kind: Literal["set_default"]
    column: Name
    default: str = Field(min_length=1)
    at: At = "contract"


class DropDefault(_Spec):
    kind: Literal["drop_default"]
    column: Name
    at: At = "contract"


class SetComment(_Spec):
    kind: Literal["set_comment"]
    column: Name | None = None  # the table's own comment when absent
    comment: str | None  # null removes it
    at: At = "contract"


class CreateIndex(_Spec):
    kind: Literal["create_index"]
    name: Name
    columns: list[Name] = Field(min_length=1)
    method: Literal["btree", "hash", "gin", "gist", "brin", "spgist"] = "btree"
    where: str | None = None


class DropIndex(_Spec):
    kind: Literal["drop_index"]
    name: Name


OperationSpec = Annotated[
    RenameColumn
    | DropColumn
    | RenameTable
    | AddCheck
    | AddForeignKey
    | AddUnique
    | AddPrimaryKey
    | SetNotNull
    | DropNotNull
    | SetDefault
    | DropDefault
    | SetComment
    | CreateIndex
    | DropIndex,
    Field(discriminator="kind"),
]


def normalize_operation(entry: Any) -> Any:
    """`{rename_column: {column: a, to: b}}` becomes `{kind: rename_column, column: a, to: b}`,
    so that error locations read operations.N.KIND.KEY like the file."""
    if isinstance(entry, dict) and len(entry) == 1:
        ((kind, options),) = entry.items()
        if isinstance(options, dict):
            return {"kind": kind, **options}
        raise ValueError(f"the keys of operation {kind!r} are a mapping ({kind}: {{key: value}})")
    if isinstance(entry, dict) and len(entry) > 1:
        keys = ", ".join(str(k) for k in entry)
        raise ValueError(
            f"an operation entry holds one kind, found {len(entry)} keys ({keys});"
            " indent its keys under the kind"
        )
    raise ValueError(
        "an operation is one kind with its keys ({rename_column: {column: ..., to: ...}})"
    )
