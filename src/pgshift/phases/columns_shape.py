"""The `columns` target worked out against the live table: for each column its shadow column,
types, `up`/`down` expressions, final nullability and default; the indexes that must be rebuilt
on shadow columns; and the refusals for what pgshift cannot carry over safely.

Every phase module of the `columns` target reads this one object, so names never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from pgshift.catalog import Index, Table
from pgshift.db import TRIGGER_PREFIX, Query, derived_name, prefixed_name, split_name
from pgshift.errors import PlanError
from pgshift.plan.model import ColumnChange, Plan

SHADOW_PREFIX = "_pgshift_"
OLD_SUFFIX = "_pgshift_old"


@dataclass(frozen=True)
class ShadowColumn:
    name: str  # the column's name in the new shape (its live name after cutover)
    shadow: str  # the column that holds the new shape until cutover
    old: str | None  # the old column's name after cutover; None for a new column
    type: str
    old_type: str | None
    up: str  # SQL over the live row -> new value
    down: str | None  # SQL over the new row -> old value (None for a new column)
    not_null: bool  # the new column ends NOT NULL
    default: str | None  # SQL default the new column takes at cutover
    old_default: str | None  # the old column's default, dropped at cutover and put back on rollback
    sequence: tuple[str, str] | None  # sequence owned by the old column, handed to the new one
    sequence_type: str | None
    check_name: str  # the CHECK (shadow IS NOT NULL) NOT VALID constraint, when not_null

    @property
    def is_new(self) -> bool:
        return self.old is None


@dataclass(frozen=True)
class RebuiltIndex:
    """An index over a changed column, rebuilt on the shadow columns."""

    original: Index
    shadow: str  # name of the copy on the shadow columns
    old: str  # name the original takes at cutover
    definition: Query  # CREATE INDEX CONCURRENTLY IF NOT EXISTS ... for the copy
    spare: Query | None  # for a constraint's index: a copy on the old columns

    @property
    def constraint(self) -> str | None:
        return self.original.constraint


@dataclass(frozen=True)
class MovedConstraint:
    """A CHECK or FOREIGN KEY over a changed column: one of the table's own, or another table's
    foreign key referencing it. It stays on the column by number, so the swap drops it and adds
    it again NOT VALID (its definition names columns, which then resolve to the columns holding
    the live names), and it is validated after the swap under a weak lock."""

    name: str
    # the table it belongs to: (schema, name), or (name,) as the catalog showed it (visible on
    # the search path, as for the foreign keys a new_table swap moves)
    table: tuple[str, ...]
    definition: str  # pg_get_constraintdef, without a trailing NOT VALID
    kind: str  # "c" (check) or "f" (foreign key)
    validated: bool  # one left NOT VALID by its owner stays so: it is not validated after

    @property
    def owner(self) -> sql.Identifier:
        return sql.Identifier(*self.table)

    @property
    def display(self) -> str:
        what = "check" if self.kind == "c" else "foreign key"
        return f"{what} {self.name} on {'.'.join(self.table)}"


@dataclass(frozen=True)
class ColumnsShape:
    columns: tuple[ShadowColumn, ...]
    indexes: tuple[RebuiltIndex, ...]
    key: tuple[str, ...]
    function: sql.Identifier  # the dual-write trigger function
    trigger: str
    moved: tuple[MovedConstraint, ...] = ()  # constraints the swap carries to the new columns

    def changed(self) -> tuple[ShadowColumn, ...]:
        return tuple(c for c in self.columns if not c.is_new)

    def new_shape(self, table: Table) -> list[tuple[str, str]]:
        """The new shape's columns as (name, the live table's column holding it): every live
        column in order, changed ones by their shadow, then the new columns."""
        by_name = {c.name: c for c in self.columns}
        shadows = {c.shadow for c in self.columns}
        out = [
            (name, by_name[name].shadow if name in by_name else name)
            for name in table.columns
            if name not in shadows
        ]
        return out + [(c.name, c.shadow) for c in self.columns if c.is_new]


def build_shape(
    plan: Plan, table: Table, view_schema: str, key: tuple[str, ...], tag: str | None = None
) -> ColumnsShape:
    """`tag` names the trigger and its function (the plan's name; one of several tables' adds
    the table's)."""
    assert plan.columns is not None
    columns = tuple(_column(name, spec, table) for name, spec in plan.columns.items())
    changed = {c.name: c for c in columns if not c.is_new}
    _refuse_unsafe(table, changed)
    moved = _moved_constraints(table, changed)
    indexes = tuple(
        _rebuilt(index, table, changed) for index in table.indexes if index.columns & changed.keys()
    )
    return ColumnsShape(
        columns=columns,
        indexes=indexes,
        key=key,
        function=sql.Identifier(view_schema, "sync_" + (tag or plan.name)),
        # BEFORE triggers fire in name order: ours last, so it sees the values other triggers set
        trigger=derived_name(TRIGGER_PREFIX, tag or plan.name),
        moved=moved,
    )


def _column(name: str, spec: ColumnChange, table: Table) -> ShadowColumn:
    shadow = prefixed_name(SHADOW_PREFIX, name)
    old = table.columns.get(name)
    taken = [n for n in (shadow, derived_name(name, OLD_SUFFIX)) if n in table.columns]
    if taken and old is not None:
        raise PlanError(
            f"column {name!r}: {taken[0]!r} already exists, left by an earlier migration or"
            " someone else's; drop or rename it first",
            path=("columns", name),
        )
    if shadow in table.columns and old is None:
        raise PlanError(
            f"column {name!r}: {shadow!r} already exists; it is pgshift's, or rename it",
            path=("columns", name),
        )
    if old is None:
        if spec.type is None:
            raise PlanError(
                f"column {name!r} does not exist yet: give it a `type` to add it",
                path=("columns", name),
            )
        if spec.up is None:
            raise PlanError(
                f"column {name!r} does not exist yet: give it `up`, the SQL that fills it",
                path=("columns", name),
            )
        if spec.down is not None:
            raise PlanError(
                f"column {name!r} is new: `down` has no old column to fill; remove it",
                path=("columns", name),
            )
        return ShadowColumn(
            name=name,
            shadow=shadow,
            old=None,
            type=spec.type,
            old_type=None,
            up=spec.up,
            down=None,
            not_null=spec.nullable is False,
            default=spec.default,
            old_default=None,
            sequence=None,
            sequence_type=None,
            check_name=derived_name(name, "_pgshift_nn"),
        )
    if old.identity:
        raise PlanError(
            f"column {name!r} is an identity column, which cannot move to a shadow column in place;"
            " use a `new_table` migration, or turn it into a sequence default first",
            path=("columns", name),
        )
    if old.generated:
        raise PlanError(
            f"column {name!r} is a generated column; change its expression with a sql phase",
            path=("columns", name),
        )
    if old.collation:
        raise PlanError(
            f"column {name!r} uses collation {old.collation}, which pgshift does not carry to"
            " the shadow column yet; change it with a `new_table` migration",
            path=("columns", name),
        )
    new_type = spec.type or old.type
    quoted = sql.Identifier(name).as_string()
    return ShadowColumn(
        name=name,
        shadow=shadow,
        old=derived_name(name, OLD_SUFFIX),
        type=new_type,
        old_type=old.type,
        up=spec.up or f"CAST({quoted} AS {new_type})",
        down=spec.down or f"CAST({quoted} AS {old.type})",
        not_null=(not spec.nullable) if spec.nullable is not None else old.not_null,
        default=spec.default if spec.default is not None else old.default,
        old_default=old.default,
        sequence=old.owned_sequence if old.default and "nextval(" in old.default else None,
        sequence_type=old.sequence_type,
        check_name=derived_name(name, "_pgshift_nn"),
    )


def _at(columns: set[str] | frozenset[str], message: str) -> PlanError:
    return PlanError(message, path=("columns", sorted(columns)[0]))


def _refuse_unsafe(table: Table, changed: dict[str, ShadowColumn]) -> None:
    """What a rename-based cutover would silently get wrong is refused here, with what to do."""
    for dep in table.dependents:
        hit = set(dep.columns) & changed.keys()
        # views and policies on changed columns are carried by cutover (phases/repoint.py)
        if dep.kind == "materialized view" and hit:
            raise _at(
                hit,
                f"materialized view {dep.name} reads column(s) {', '.join(sorted(hit))}: it"
                " cannot follow the swap; drop it before and create it again after, with sql"
                " phases",
            )
        if dep.kind == "rule" and hit:
            raise _at(
                hit,
                f"a rule of table {dep.name} reads column(s) {', '.join(sorted(hit))}: drop it"
                " before and create it again after, with sql phases",
            )
    for con in table.constraints:
        hit = set(con.columns) & changed.keys()
        if not hit:
            continue
        if con.type == "x":
            raise _at(hit, f"exclusion constraint {con.name} uses a changed column; not supported")
    for index in table.indexes:
        hit = set(index.columns & changed.keys())
        if not hit:
            continue
        if table.kind == "p":
            raise _at(
                hit,
                f"index {index.name} on partitioned table {table.display} uses a changed column,"
                " and PostgreSQL cannot build a partitioned index CONCURRENTLY; migrate each"
                " partition, or use a `new_table` migration",
            )
        if index.expression_columns & changed.keys():
            raise _at(
                hit,
                f"index {index.name} uses {', '.join(sorted(hit))} in an expression or predicate;"
                " drop it before the migration and rebuild it after, with sql phases",
            )
        if index.nondefault_opclass:
            raise _at(
                hit,
                f"index {index.name} uses a non-default operator class;"
                " rebuild it after the migration with a sql phase",
            )
        if not index.valid:
            raise _at(hit, f"index {index.name} is INVALID; drop or REINDEX it first")


INTEGER_FAMILY = {
    "smallint": "smallint",
    "int2": "smallint",
    "integer": "integer",
    "int": "integer",
    "int4": "integer",
    "bigint": "bigint",
    "int8": "bigint",
}


def _keeps_keys_comparable(column: ShadowColumn) -> bool:
    """Whether a foreign key over the column stays valid with the other side unchanged: the
    type stays, or moves within smallint/integer/bigint (one btree family, so a key of one
    references a key of another, as while the tables of a key are widened one by one)."""
    old = (column.old_type or "").strip().lower()
    new = column.type.strip().lower()
    return old == new or (old in INTEGER_FAMILY and new in INTEGER_FAMILY)


def _moved_constraints(
    table: Table, changed: dict[str, ShadowColumn]
) -> tuple[MovedConstraint, ...]:
    """The checks and foreign keys the swap moves onto the new columns: the table's own over a
    changed column, and other tables' foreign keys referencing one (refused when the new type
    could not be referenced by, or reference, the other side's)."""
    moved: list[MovedConstraint] = []
    own = [c for c in table.constraints if c.type in ("c", "f") and set(c.columns) & changed.keys()]
    mine = {c.name for c in own if c.type == "f"}
    theirs = [
        f
        for f in table.referencing_fks
        if set(f.columns) & changed.keys()
        # a self-referencing key over a changed column on both sides: moved once, as its own
        and not (f.name in mine and split_name(f.referenced_table or "")[1] == table.name)
    ]
    for con in [*own, *theirs]:
        hit = set(con.columns) & changed.keys()
        mismatched = sorted(c for c in hit if not _keeps_keys_comparable(changed[c]))
        if con.type == "f" and mismatched:
            where = "uses" if con in own else f"on {con.referenced_table} references"
            raise _at(
                hit,
                f"foreign key {con.name} {where} {', '.join(mismatched)}, whose type changes"
                f" from {changed[mismatched[0]].old_type} to {changed[mismatched[0]].type}:"
                " the other side would not match; drop it before the migration and add it"
                " back NOT VALID after, with sql phases",
            )
        if con in own:
            owner: tuple[str, ...] = (table.schema, table.name)
        else:
            assert con.referenced_table is not None  # for these, the table holding the key
            owner = tuple(p for p in split_name(con.referenced_table) if p)
        definition = con.definition.removesuffix(" NOT VALID")
        moved.append(MovedConstraint(con.name, owner, definition, con.type, con.validated))
    return tuple(moved)


def _rebuilt(index: Index, table: Table, changed: dict[str, ShadowColumn]) -> RebuiltIndex:
    def target(column: str) -> str:
        return changed[column].shadow if column in changed else column

    def definition(name: str, columns: dict[str, str]) -> Query:
        parts = [
            sql.SQL("{}{}{}").format(
                sql.Identifier(columns.get(p.column, p.column) if p.column else ""),
                sql.SQL(" DESC" if p.descending else ""),
                sql.SQL(
                    " NULLS FIRST"
                    if p.nulls_first and not p.descending
                    else " NULLS LAST"
                    if p.descending and not p.nulls_first
                    else ""
                ),
            )
            for p in index.parts
        ]
        include = (
            sql.SQL(" INCLUDE ({})").format(
                sql.SQL(", ").join(sql.Identifier(columns.get(c, c)) for c in index.include)
            )
            if index.include
            else sql.SQL("")
        )
        where = (
            sql.SQL(" WHERE {}").format(sql.SQL(index.predicate))
            if index.predicate
            else sql.SQL("")
        )
        # reloptions come from the catalog as `name=value` text, in valid SQL already
        storage = (
            sql.SQL(" WITH ({})").format(sql.SQL(", ").join(sql.SQL(o) for o in index.storage))
            if index.storage
            else sql.SQL("")
        )
        tablespace = (
            sql.SQL(" TABLESPACE {}").format(sql.Identifier(index.tablespace))
            if index.tablespace
            else sql.SQL("")
        )
        nulls = sql.SQL(" NULLS NOT DISTINCT") if index.nulls_not_distinct else sql.SQL("")
        return sql.SQL(
            "CREATE {unique}INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} USING {method}"
            " ({parts}){include}{nulls}{storage}{tablespace}{where}"
        ).format(
            nulls=nulls,
            storage=storage,
            tablespace=tablespace,
            unique=sql.SQL("UNIQUE " if index.unique else ""),
            name=sql.Identifier(name),
            table=table.qualified,
            method=sql.Identifier(index.method),
            parts=sql.SQL(", ").join(parts),
            include=include,
            where=where,
        )

    shadow_map = {c: target(c) for c in index.columns}
    old_name = derived_name(index.name, OLD_SUFFIX)
    return RebuiltIndex(
        original=index,
        shadow=prefixed_name(SHADOW_PREFIX, index.name),
        old=old_name,
        definition=definition(prefixed_name(SHADOW_PREFIX, index.name), shadow_map),
        spare=definition(old_name, {}) if index.constraint else None,
    )
