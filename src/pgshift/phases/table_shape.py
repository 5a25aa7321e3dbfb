"""The `new_table` target worked out against the live table and the new one (as its `create`
DDL makes it): which new column is filled from which SQL over the live row, which old column
from which SQL over the new row, the keys on both sides, the sequences that must keep feeding
the key, the foreign keys to move, and the refusals for what cutover cannot carry over.

Every phase module reads this one object for the `new_table` target.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from pgshift.catalog import Column, Constraint, Table
from pgshift.db import TRIGGER_PREFIX, Query, derived_name, split_name
from pgshift.errors import PlanError
from pgshift.plan.model import Plan

OLD_SUFFIX = "_pgshift_old"


@dataclass(frozen=True)
class KeyFeed:
    """A live column whose values come from a sequence, and how the new column keeps taking
    them after cutover: the sequence's default and ownership move, or the new column's own
    identity sequence is moved past it."""

    column: str
    sequence: tuple[str, str] | None  # the live column's owned sequence (serial or identity)
    live_identity: bool
    new_identity: bool
    old_default: str | None  # the live column's default, put back on rollback
    widen_to: str | None  # the new column's integer type, when wider than the sequence's


@dataclass(frozen=True)
class TableShape:
    old: Table  # the live table as it was
    new: Table  # the new table, as `create` makes it
    old_name: str  # the live table's name after cutover
    key: tuple[str, ...]  # the live table's key, walked by backfill and verify
    new_key: tuple[str, ...]  # the new table's primary key: ON CONFLICT target
    forward: dict[str, str]  # new column -> SQL over the live row
    reverse: dict[str, str]  # live column -> SQL over the new row
    overriding: bool  # the new table has GENERATED ALWAYS identity columns we fill
    old_overriding: bool
    feeds: tuple[KeyFeed, ...]
    foreign_keys: tuple[Constraint, ...]  # in other tables, pointing at the live table
    views: tuple[str, ...]  # views reading the live table, re-created on the swapped one
    policies: tuple[str, ...]  # its row security policies and other tables' reading it
    forward_function: sql.Identifier
    reverse_function: sql.Identifier
    forward_trigger: str
    reverse_trigger: str

    @property
    def copies_key(self) -> bool:
        """Whether the new table's key is the live key copied as it is (the usual case): a
        copy is then found by the live row's own key."""
        return self.new_key == self.key and all(
            self.forward.get(c) == sql.Identifier(c).as_string() for c in self.key
        )

    def probes(self) -> list[tuple[str, Query]]:
        """Both copies over no row, for plan-time checks of the mappings."""
        return [
            (
                "columns",
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} WHERE false").format(
                    self.new.qualified,
                    self.forward_columns(),
                    self.forward_select(),
                    self.old.qualified,
                ),
            ),
            (
                "reverse",
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} WHERE false").format(
                    self.old.qualified,
                    sql.SQL(", ").join(sql.Identifier(c) for c in self.reverse),
                    sql.SQL(", ").join(sql.SQL(e) for e in self.reverse.values()),
                    self.new.qualified,
                ),
            ),
        ]

    def forward_select(self) -> sql.Composed:
        return sql.SQL(", ").join(sql.SQL(e) for e in self.forward.values())

    def forward_columns(self) -> sql.Composed:
        return sql.SQL(", ").join(sql.Identifier(c) for c in self.forward)


INTEGER_TYPES = ("smallint", "integer", "bigint")


def _plain(column: str) -> str:
    return sql.Identifier(column).as_string()


def _mapping(
    target: Table, source: Table, given: dict[str, str], what: str, path: str
) -> dict[str, str]:
    """Each target column's SQL over a source row: the plan's, else the same-named column;
    columns with a default, identity or NULLs allowed may be left out; generated ones must be."""
    unknown = sorted(set(given) - set(target.columns))
    if unknown:
        raise PlanError(
            f"{path}: {unknown[0]!r} is not a column of {target.display}", path=("new_table", path)
        )
    out: dict[str, str] = {}
    for name, column in target.columns.items():
        if column.generated:
            if name in given:
                raise PlanError(
                    f"{path}: {name!r} is a generated column of {target.display}; leave it out",
                    path=("new_table", path),
                )
            continue
        if name in given:
            out[name] = given[name]
        elif name in source.columns:
            out[name] = _plain(name)
        elif column.not_null and column.default is None and not column.identity:
            raise PlanError(
                f"{what} column {name!r} of {target.display} is NOT NULL and has no default:"
                f" give it an expression in new_table.{path}",
                path=("new_table", path),
            )
    return out


def build_table_shape(
    plan: Plan,
    old: Table,
    new: Table,
    view_schema: str,
    key: tuple[str, ...],
    tag: str | None = None,
) -> TableShape:
    """`tag` names the copy functions and triggers (the plan's name; one of several tables'
    adds the table's)."""
    assert plan.new_table is not None
    spec = plan.new_table
    if new.schema != old.schema:
        raise PlanError(
            f"the new table must be in the live table's schema {old.schema!r}, to take its"
            " name at cutover",
            path=("new_table", "name"),
        )
    if new.primary_key is None:
        raise PlanError(
            f"{new.display} needs a primary key: the dual-write trigger upserts on it",
            path=("new_table", "create"),
        )
    if old.primary_key is None:
        raise PlanError(
            f"{old.display} needs a primary key: after cutover the reverse trigger upserts on it",
            path=("table",),
        )
    _refuse_dependents(old)
    forward = _mapping(new, old, spec.columns, "new", "columns")
    reverse = _mapping(old, new, spec.reverse, "live", "reverse")
    for column in new.primary_key:
        if column not in forward:
            raise PlanError(
                f"key column {column!r} of {new.display} needs a value: map it in"
                " new_table.columns",
                path=("new_table", "columns"),
            )
    for column in old.primary_key:
        if column not in reverse:
            raise PlanError(
                f"key column {column!r} of {old.display} needs a value after cutover: map it"
                " in new_table.reverse",
                path=("new_table", "reverse"),
            )
    for fk in old.referencing_fks:
        if fk.referenced_table is not None and _same_table(fk.referenced_table, old):
            raise PlanError(
                f"{old.display} references itself through foreign key {fk.name}: pgshift does"
                " not move self-references yet; drop it before the migration and add it on the"
                " new table after cutover (NOT VALID, then VALIDATE), with sql phases",
                path=("table",),
            )
        if not any(set(fk.columns) == set(k) for k in (new.primary_key, *new.unique_keys)):
            raise PlanError(
                f"foreign key {fk.name} on {fk.referenced_table} references"
                f" ({', '.join(fk.columns)}), which is not unique in {new.display}: add a"
                " primary key or unique constraint on it to `create`",
                path=("new_table", "create"),
            )
    return TableShape(
        old=old,
        new=new,
        old_name=derived_name(old.name, OLD_SUFFIX),
        key=key,
        new_key=new.primary_key,
        forward=forward,
        reverse=reverse,
        overriding=any(new.columns[c].identity == "a" for c in forward),
        old_overriding=any(old.columns[c].identity == "a" for c in reverse),
        feeds=tuple(_feeds(old, new, forward)),
        foreign_keys=old.referencing_fks,
        views=tuple(
            d.name
            for d in old.dependents
            if d.kind == "view" and not d.name.startswith(view_schema + ".")
        ),
        policies=tuple(d.name for d in old.dependents if d.kind == "policy"),
        forward_function=sql.Identifier(view_schema, "copy_" + (tag or plan.name)),
        reverse_function=sql.Identifier(view_schema, "copy_back_" + (tag or plan.name)),
        forward_trigger=derived_name(TRIGGER_PREFIX, tag or plan.name),
        reverse_trigger=derived_name(TRIGGER_PREFIX + "back_", tag or plan.name),
    )


def _same_table(name: str, table: Table) -> bool:
    schema, relname = split_name(name)
    return relname == table.name and schema in (None, table.schema)


def _feeds(old: Table, new: Table, forward: dict[str, str]) -> list[KeyFeed]:
    feeds = []
    for name, column in old.columns.items():
        fed = column.identity or (column.default and "nextval(" in column.default)
        if not fed or name not in new.columns or forward.get(name) != _plain(name):
            continue
        target: Column = new.columns[name]
        if not column.identity and column.default_sequence != column.owned_sequence:
            raise PlanError(
                f"{old.display}.{name} takes its values from a sequence it does not own: run"
                f" ALTER SEQUENCE ... OWNED BY {old.display}.{name} first, so cutover can move it",
                path=("table",),
            )
        if column.identity and not target.identity:
            raise PlanError(
                f"{old.display}.{name} is an identity column: make {new.display}.{name} one too"
                " (GENERATED BY DEFAULT AS IDENTITY), so new keys keep coming after the old ones",
                path=("new_table", "create"),
            )
        if not target.identity and target.default is not None:
            raise PlanError(
                f"{new.display}.{name} has a default of its own; leave it out of `create`:"
                f" cutover moves {name}'s sequence over, so no key is ever reused",
                path=("new_table", "create"),
            )
        wider = (
            target.type in INTEGER_TYPES
            and column.sequence_type in INTEGER_TYPES
            and INTEGER_TYPES.index(target.type) > INTEGER_TYPES.index(column.sequence_type or "")
        )
        feeds.append(
            KeyFeed(
                column=name,
                sequence=column.owned_sequence,
                live_identity=bool(column.identity),
                new_identity=bool(target.identity),
                old_default=column.default,
                widen_to=target.type if wider and not target.identity else None,
            )
        )
    return feeds


def _refuse_dependents(old: Table) -> None:
    """What the table swap cannot carry over is refused before anything runs. Views and row
    security policies are carried (phases/repoint.py); foreign keys are moved (cutover)."""
    for dep in old.dependents:
        if dep.kind == "materialized view":
            raise PlanError(
                f"materialized view {dep.name} reads {old.display}: it cannot follow the table"
                " swap; drop it before cutover and create it again after, with sql phases",
                path=("table",),
            )
        if dep.kind == "rule":
            raise PlanError(
                f"a rule of table {dep.name} reads {old.display}: drop it before cutover and"
                " create it again after, with sql phases",
                path=("table",),
            )
        if dep.kind == "publication":
            raise PlanError(
                f"{old.display} is in publication {dep.name}, whose subscribers would not follow"
                " the swap: take it out of the publication before the migration; after"
                " cutover add it back and run ALTER SUBSCRIPTION ... REFRESH PUBLICATION WITH"
                " (copy_data = false) on each subscriber",
                path=("table",),
            )
