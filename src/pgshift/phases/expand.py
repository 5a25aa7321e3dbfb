"""expand: add the new shape beside the old one, without blocking the application.

`columns`: shadow columns (no default, so the ALTER is catalog-only), their indexes built
CONCURRENTLY, and the view schema `pgshift_<name>` whose view shows the new shape.
Rollback drops all of it.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from pgshift.catalog import Table
from pgshift.db import Query
from pgshift.phases.base import CompileContext, Phase, SqlStep, exists_query, index_drop
from pgshift.phases.columns_shape import ColumnsShape
from pgshift.phases.table_shape import TableShape
from pgshift.plan.check import created_tables, expand_statements


def view_schema_step(
    ctx: CompileContext,
    columns: list[sql.Composable],
    source: sql.Identifier,
    defaults: list[tuple[str, str]] | None = None,
) -> SqlStep:
    """The schema `pgshift_<name>` (or the plan's version schema) with a view named like the
    live table showing the new shape: what shadow reads put first on search_path. In versions
    mode it is the new application version's table: it runs with the caller's rights
    (security_invoker, so grants and row security of the table apply through it), carries the
    table's owner and grants, and the new shape's column `defaults`."""
    view = sql.Identifier(ctx.view_schema, ctx.table.name)
    statements: list[Query] = [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(ctx.view_schema)),
        sql.SQL("CREATE OR REPLACE VIEW {}{} AS SELECT {} FROM {}").format(
            view,
            sql.SQL(" WITH (security_invoker = true)" if ctx.versions else ""),
            sql.SQL(", ").join(columns),
            source,
        ),
    ]
    if ctx.versions:
        statements += _version_access(ctx, view, defaults or [])
    return SqlStep(
        description=f"create the view schema {ctx.view_schema} showing the new shape"
        + (" (the new version's table: owner, grants, defaults)" if ctx.versions else ""),
        statements=tuple(statements),
        lock="ACCESS SHARE",
    )


# the privileges a view can pass on to its callers
VIEW_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


def _version_access(
    ctx: CompileContext, view: sql.Identifier, defaults: list[tuple[str, str]]
) -> list[Query]:
    """The version view belongs to the table's owner and is granted what the table is, so a
    role reaches exactly as much through it as through the table."""
    table = ctx.table
    # column privileges pass to the view's column showing that column (renamed or not)
    shown = _shown_as(ctx)
    column_grants = [
        (shown[c], g, p, o)
        for c, g, p, o in table.column_grants
        if c in shown and p in VIEW_PRIVILEGES
    ]
    grantees = sorted(
        {g for g, privilege, _ in table.grants if privilege in VIEW_PRIVILEGES}
        | {g for _c, g, _p, _o in column_grants}
    )
    out: list[Query] = [
        sql.SQL("ALTER VIEW {} ALTER COLUMN {} SET DEFAULT {}").format(
            view, sql.Identifier(column), sql.SQL(default)
        )
        for column, default in defaults
    ]
    if table.owner:
        out.append(sql.SQL("ALTER VIEW {} OWNER TO {}").format(view, sql.Identifier(table.owner)))
    out += [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
            sql.Identifier(ctx.view_schema), _grantee(grantee)
        )
        for grantee in grantees
    ]
    out += [
        sql.SQL("GRANT {} ON {} TO {}{}").format(
            sql.SQL(privilege),  # a privilege keyword from aclexplode
            view,
            _grantee(grantee),
            sql.SQL(" WITH GRANT OPTION" if grantable else ""),
        )
        for grantee, privilege, grantable in table.grants
        if privilege in VIEW_PRIVILEGES
    ]
    out += [
        sql.SQL("GRANT {} ({}) ON {} TO {}{}").format(
            sql.SQL(privilege),  # a privilege keyword from aclexplode
            sql.Identifier(column),
            view,
            _grantee(grantee),
            sql.SQL(" WITH GRANT OPTION" if grantable else ""),
        )
        for column, grantee, privilege, grantable in column_grants
    ]
    return out


def _shown_as(ctx: CompileContext) -> dict[str, str]:
    """Each live column the version view shows, with the view's name for it: the same name
    (`columns`: the shadow column shows under it; `new_table`: the new table's column of that
    name), or its new name (`operations` renames)."""
    if ctx.plan.target == "new_table":
        return {c: c for c in ctx.shape.new.columns if c in ctx.table.columns}
    # (name in the view, the table's column it reads): ColumnsShape and the operations' shape
    pairs: list[tuple[str, str]] = ctx.shape.new_shape(ctx.table)
    shown = {source: name for name, source in pairs if source in ctx.table.columns}
    for name, _source in pairs:  # a changed column shows through its shadow, under its name
        if name in ctx.table.columns and name not in shown:
            shown[name] = name
    return shown


def column_grants_to(table: Table, columns: dict[str, str]) -> list[Query]:
    """The column privileges of `columns` (name -> the column taking them) granted on the
    column taking them: a shadow column becomes the live one at the swap and must let every
    role do what it let it do before."""
    return [
        sql.SQL("GRANT {} ({}) ON {} TO {}{}").format(
            sql.SQL(privilege),  # a privilege keyword from aclexplode
            sql.Identifier(columns[column]),
            table.qualified,
            _grantee(grantee),
            sql.SQL(" WITH GRANT OPTION" if grantable else ""),
        )
        for column, grantee, privilege, grantable in table.column_grants
        if column in columns
    ]


def _grantee(name: str) -> sql.Composable:
    return sql.SQL("PUBLIC") if name == "PUBLIC" else sql.Identifier(name)


def drop_view_schema_step(ctx: CompileContext) -> SqlStep:
    return SqlStep(
        description=f"drop the view schema {ctx.view_schema}",
        statements=(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(ctx.view_schema)),
        ),
        lock="ACCESS SHARE",
    )


def compile_expand(ctx: CompileContext, index: int, spec: Any) -> Phase:
    if ctx.plan.target == "new_table":
        return _compile_create(ctx, index)
    shape: ColumnsShape = ctx.shape
    table = ctx.table
    granted = column_grants_to(table, {c.name: c.shadow for c in shape.changed()})
    forward: list[SqlStep] = [
        SqlStep(
            description="add shadow columns (catalog only: no default, no rewrite)"
            + (", with the column privileges of the columns they replace" if granted else ""),
            statements=(
                sql.SQL("ALTER TABLE {} {}").format(
                    table.qualified,
                    sql.SQL(", ").join(
                        sql.SQL("ADD COLUMN IF NOT EXISTS {} {}").format(
                            sql.Identifier(c.shadow), sql.SQL(c.type)
                        )
                        for c in shape.columns
                    ),
                ),
                *granted,
            ),
            lock="ACCESS EXCLUSIVE",
        )
    ]
    # The index copies on the shadow columns are built at the end of backfill, not here: built
    # now, every backfilled row would update them one by one (and could never be a HOT update).
    forward.append(
        view_schema_step(
            ctx,
            _new_shape_columns(ctx),
            table.qualified,
            _new_shape_defaults(ctx),
        )
    )
    rollback: list[SqlStep] = [drop_view_schema_step(ctx)]
    for rebuilt in shape.indexes:
        rollback.append(
            index_drop(f"drop the index copy {rebuilt.shadow}", (table.schema, rebuilt.shadow))
        )
    rollback.append(
        SqlStep(
            description="drop the shadow columns",
            statements=(
                sql.SQL("ALTER TABLE {} {}").format(
                    table.qualified,
                    sql.SQL(", ").join(
                        sql.SQL("DROP COLUMN IF EXISTS {}").format(sql.Identifier(c.shadow))
                        for c in shape.columns
                    ),
                ),
            ),
            lock="ACCESS EXCLUSIVE",
        )
    )
    return Phase(
        index=index,
        kind="expand",
        name="expand",
        forward=tuple(forward),
        rollback=tuple(rollback),
        summary=f"add {len(shape.columns)} shadow column(s), create view schema {ctx.view_schema}",
    )


def _new_shape_columns(ctx: CompileContext) -> list[sql.Composable]:
    """Every live column in order, changed ones replaced by their shadow, then new columns."""
    return [
        sql.Identifier(name)
        if source == name
        else sql.SQL("{} AS {}").format(sql.Identifier(source), sql.Identifier(name))
        for name, source in ctx.shape.new_shape(ctx.table)
    ]


def _new_shape_defaults(ctx: CompileContext) -> list[tuple[str, str]]:
    """Every column default of the new shape, for the view: `SET col = DEFAULT` through a view
    takes the view's default, not the table's."""
    shape: ColumnsShape = ctx.shape
    changed = {c.name: c for c in shape.columns}
    out = []
    for name, source in shape.new_shape(ctx.table):
        if name in changed:
            default = changed[name].default
        else:
            column = ctx.table.columns[source]
            # a generated column's "default" is its generation expression
            default = None if column.generated else column.default
        if default is not None:
            out.append((name, default))
    return out


def _properties(old: Table, new: Table) -> list[Query]:
    """What the live table was tuned with, for the new table: storage options (fillfactor,
    autovacuum settings) that `create` did not set itself, comments and statistics targets of
    the columns it keeps, and a FULL or NOTHING replica identity. The options are not set on a
    partitioned new table, which takes none (its partitions get them from `create`)."""
    own = {option.split("=", 1)[0] for option in new.properties.options}
    options = [
        option.split("=", 1)
        for option in old.properties.options
        if option.split("=", 1)[0] not in own
    ]
    out: list[Query] = []
    if options and new.kind != "p":
        out.append(
            sql.SQL("ALTER TABLE {} SET ({})").format(
                new.qualified,
                sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(name), sql.Literal(value))
                    for name, value in options
                ),
            )
        )
    if old.properties.comment is not None:
        out.append(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(
                new.qualified, sql.Literal(old.properties.comment)
            )
        )
    out += [
        sql.SQL("COMMENT ON COLUMN {} IS {}").format(
            sql.Identifier(new.schema, new.name, column), sql.Literal(text)
        )
        for column, text in old.properties.column_comments
        if column in new.columns
    ]
    out += [
        sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET STATISTICS {}").format(
            new.qualified, sql.Identifier(column), sql.Literal(target)
        )
        for column, target in old.properties.statistics
        if column in new.columns
    ]
    identity = {"f": "FULL", "n": "NOTHING"}.get(old.properties.replica_identity)
    if identity is not None:
        out.append(
            sql.SQL("ALTER TABLE {} REPLICA IDENTITY {}").format(new.qualified, sql.SQL(identity))
        )
    return out


def _compile_create(ctx: CompileContext, index: int) -> Phase:
    """new_table: run the plan's `create`, give the new table the live table's owner and
    grants, and create the view schema showing it. The plain indexes `create` names on the new
    table are left to the end of backfill (plan.check.deferred_indexes); rollback drops them
    with the table."""
    shape: TableShape = ctx.shape
    new, old = shape.new, shape.old
    assert ctx.plan.new_table is not None
    access: list[Query] = []
    for name in created_tables(ctx.plan):  # the new table and its partitions alike
        table = sql.Identifier(new.schema, name)
        access.append(
            sql.SQL("ALTER TABLE {} OWNER TO {}").format(table, sql.Identifier(old.owner))
        )
        access += [
            sql.SQL("GRANT {} ON {} TO {}{}").format(
                sql.SQL(privilege),  # a privilege keyword from aclexplode, e.g. SELECT
                table,
                _grantee(grantee),
                sql.SQL(" WITH GRANT OPTION" if grantable else ""),
            )
            for grantee, privilege, grantable in old.grants
        ]
    # column privileges, for the columns the new table has under the same name (a column it
    # drops or renames takes its grants with it: `migrate plan` warns)
    access += [
        sql.SQL("GRANT {} ({}) ON {} TO {}{}").format(
            sql.SQL(privilege),  # a privilege keyword from aclexplode
            sql.Identifier(column),
            new.qualified,
            _grantee(grantee),
            sql.SQL(" WITH GRANT OPTION" if grantable else ""),
        )
        for column, grantee, privilege, grantable in old.column_grants
        if column in new.columns
    ]
    access += _properties(old, new)
    forward = [
        SqlStep(
            description=f"create {new.display}",
            statements=tuple(sql.SQL(s) for s in expand_statements(ctx.plan)),
            lock="none",
            done_if=exists_query("SELECT 1 WHERE to_regclass({}) IS NOT NULL", new.regclass),
        ),
        SqlStep(
            description=f"give {new.display} the owner, grants, storage options, comments and"
            f" statistics targets of {old.display}",
            statements=tuple(access),
            lock="ACCESS EXCLUSIVE",
            hold="milliseconds (on the new table only)",
        ),
        view_schema_step(
            ctx,
            [sql.Identifier(c) for c in new.columns],
            new.qualified,
            [
                (name, c.default)
                for name, c in new.columns.items()
                if c.default is not None and not c.generated
            ],
        ),
    ]
    rollback = [
        drop_view_schema_step(ctx),
        SqlStep(
            description=f"drop {new.display}",
            statements=(sql.SQL("DROP TABLE IF EXISTS {}").format(new.qualified),),
            lock="ACCESS EXCLUSIVE",
            hold="milliseconds (on the new table only)",
        ),
    ]
    return Phase(
        index=index,
        kind="expand",
        name="expand",
        forward=tuple(forward),
        rollback=tuple(rollback),
        summary=f"create {new.display} and view schema {ctx.view_schema}",
    )
