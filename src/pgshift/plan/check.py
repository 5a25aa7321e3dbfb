"""Check a plan against the live database before anything runs: the key, the columns, the types
and every SQL expression, each tried in a transaction that is always rolled back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pglast
import psycopg
from pglast.stream import RawStream
from psycopg import sql

from pgshift.catalog import Table, load_table, resolve_table
from pgshift.db import Query, split_name
from pgshift.errors import PlanError
from pgshift.phases.repoint import TriggerMove, capture_query, closure_query
from pgshift.plan.model import Plan


def resolve_key(plan: Plan, table: Table) -> tuple[str, ...]:
    """The key backfill and verify walk: the plan's, else the primary key. Unique and NOT NULL.
    An `operations` plan walks no rows: its key is the primary key, if any."""
    if plan.operations is not None:
        return table.primary_key or ()
    if plan.key is None:
        if table.primary_key is None:
            raise PlanError(
                f"{table.display} has no primary key: name a unique, NOT NULL `key`",
                path=("table",),
            )
        return table.primary_key
    key = tuple(plan.key)
    missing = [k for k in key if k not in table.columns]
    if missing:
        raise PlanError(
            f"key column {missing[0]!r} is not a column of {table.display}", path=("key",)
        )
    if not table.has_unique_not_null(key):
        raise PlanError(
            f"key ({', '.join(key)}) of {table.display} must be unique and NOT NULL:"
            " add a unique index and NOT NULL, or use the primary key",
            path=("key",),
        )
    return key


def parse_expression(text: str, path: tuple[str | int, ...]) -> None:
    """One SQL expression, nothing more: a second statement can never ride along."""
    try:
        statements = pglast.parse_sql(f"SELECT ({text})")
    except pglast.parser.ParseError as error:
        raise PlanError(f"not a SQL expression: {error}", path=path) from error
    node: Any = statements[0].stmt if len(statements) == 1 else None
    if node is None or type(node).__name__ != "SelectStmt" or len(node.targetList or ()) != 1:
        raise PlanError("must be one SQL expression, not a statement", path=path)
    if node.fromClause or node.whereClause:
        raise PlanError("must be one SQL expression, not a statement", path=path)


def parse_type(text: str, path: tuple[str | int, ...]) -> None:
    try:
        statements = pglast.parse_sql(f"SELECT NULL::{text}")
    except pglast.parser.ParseError as error:
        raise PlanError(f"{text!r} is not a type: {error}", path=path) from error
    stmt: Any = statements[0].stmt if len(statements) == 1 else None
    target = stmt.targetList if stmt is not None else None
    if not target or len(target) != 1 or type(target[0].val).__name__ != "TypeCast":
        raise PlanError(f"{text!r} is not a type", path=path)


def _try(
    conn: psycopg.Connection[Any],
    queries: list[Query],
    path: tuple[str | int, ...],
    what: str,
) -> None:
    """Run `queries` in a transaction that is always rolled back; a failure names `path`."""
    try:
        with conn.transaction(force_rollback=True):
            for query in queries:
                conn.execute(query)
    except psycopg.Error as error:
        detail = error.diag.message_primary or str(error).splitlines()[0]
        raise PlanError(f"{what} does not work on this table: {detail}", path=path) from error


def _assigns(target_type: str, select: Query) -> list[Query]:
    """Check `select` the way the trigger and the backfill use it: assigned to a column of
    `target_type` (assignment casts, not explicit ones), planned but never executed."""
    return [
        sql.SQL("CREATE TEMP TABLE pgshift_check (v {}) ON COMMIT DROP").format(
            sql.SQL(target_type)
        ),
        sql.SQL("INSERT INTO pgshift_check (v) {} LIMIT 0").format(select),
    ]


def parse_columns(plan: Plan) -> None:
    """The checks that need no database: every type and expression parses as one."""
    assert plan.columns is not None
    for name, spec in plan.columns.items():
        base: tuple[str | int, ...] = ("columns", name)
        if spec.type is not None:
            parse_type(spec.type, (*base, "type"))
        for field in ("up", "down", "default"):
            text = getattr(spec, field)
            if text is not None:
                parse_expression(text, (*base, field))


def check_columns(conn: psycopg.Connection[Any], plan: Plan, table: Table) -> None:
    assert plan.columns is not None
    parse_columns(plan)
    new_shape: list[sql.Composable] = []
    for name in table.columns:
        spec = plan.columns.get(name)
        if spec is not None and spec.type:
            new_shape.append(
                sql.SQL("NULL::{} AS {}").format(sql.SQL(spec.type), sql.Identifier(name))
            )
        else:
            new_shape.append(sql.Identifier(name))
    for name, spec in plan.columns.items():
        if name not in table.columns and spec.type:
            new_shape.append(
                sql.SQL("NULL::{} AS {}").format(sql.SQL(spec.type), sql.Identifier(name))
            )
    for name, spec in plan.columns.items():
        base: tuple[str | int, ...] = ("columns", name)
        old = table.columns.get(name)
        new_type = spec.type or (old.type if old else None)
        if spec.type is not None:
            _try(
                conn,
                [sql.SQL("SELECT NULL::{}").format(sql.SQL(spec.type))],
                (*base, "type"),
                "type",
            )
        if new_type is not None:
            up = spec.up or (
                f"CAST({sql.Identifier(name).as_string()} AS {new_type})" if old else None
            )
            if up is not None:
                select = sql.SQL("SELECT ({}) FROM {}").format(sql.SQL(up), table.qualified)
                _try(conn, _assigns(new_type, select), (*base, "up"), f"up of {name!r}")
            if spec.default is not None:
                select = sql.SQL("SELECT ({})").format(sql.SQL(spec.default))
                _try(conn, _assigns(new_type, select), (*base, "default"), f"default of {name!r}")
        if old is not None:
            down = spec.down or f"CAST({sql.Identifier(name).as_string()} AS {old.type})"
            select = sql.SQL("SELECT ({}) FROM (SELECT {} FROM {} LIMIT 0) AS r").format(
                sql.SQL(down), sql.SQL(", ").join(new_shape), table.qualified
            )
            _try(conn, _assigns(old.type, select), (*base, "down"), f"down of {name!r}")


def create_statements(plan: Plan) -> list[str]:
    """Every statement of `create`, as written: what the probe runs, so the new table's
    snapshot lists all its indexes."""
    return [s.text for s in _create(plan).statements]


def created_tables(plan: Plan) -> list[str]:
    """The tables `create` makes: the new table and its partitions."""
    return _create(plan).tables


@dataclass(frozen=True)
class DeferredIndex:
    """A plain index of `create` on the new table, built after the backfill has filled it."""

    name: str  # as PostgreSQL stores it (unquoted names folded to lower case)
    definition: str  # the statement as written, deparsed with CONCURRENTLY


def expand_statements(plan: Plan) -> list[str]:
    """The statements of `create` that expand runs: all of them but the deferred indexes."""
    deferred = _deferred_positions(plan)
    return [s.text for i, s in enumerate(_create(plan).statements) if i not in deferred]


def deferred_indexes(plan: Plan) -> list[DeferredIndex]:
    """The plain indexes of `create` that backfill builds CONCURRENTLY once the rows are in,
    in `create`'s order: one sorted build each, where built in expand every copied row would
    be inserted into each of them one by one. See `_deferred_positions` for which ones."""
    statements = _create(plan).statements
    return [d for i in sorted(_deferred_positions(plan)) if (d := statements[i].deferrable)]


def _deferred_positions(plan: Plan) -> set[int]:
    """Which statements of `create` wait for the end of the backfill: named, non-unique
    CREATE INDEX on the new table itself. Everything else runs in expand, as written:

    - the CREATE TABLE statements, and every UNIQUE index: uniqueness must hold while the
      rows arrive, so a row that breaks it fails the batch (or the write) at once rather than
      an index build after the copy;
    - all of them when the new table is partitioned: PostgreSQL cannot build an index
      CONCURRENTLY on a partitioned table (building each partition's index, then the parent's
      ON ONLY and attaching, is not done here), and a plain build would lock out the copy;
    - all of them when the plan has no backfill phase to build them in;
    - an index without a name. PostgreSQL picks that name when the index is created; a
      build after the copy must know it beforehand, because the step has to be idempotent: it
      finds (and drops) the INVALID leftover of an interrupted build, and recognises a finished
      one, by name. Working the name out again (PostgreSQL's ChooseIndexName rules), or
      carrying the one the probe saw through the snapshot to every later compile, is machinery
      that can drift from what the server does; an index left unnamed is built in expand, as
      before, under exactly the name PostgreSQL gives it. Naming an index in `create` is how
      to have it built after the copy;
    - an index followed in `create` by any statement that lets PostgreSQL choose a name (an
      unnamed index, a CREATE TABLE with its constraint names): that choice avoided the
      deferred index's name in `create`'s order, and might take it if the index were not
      there yet. Deferring only after the last such statement keeps every name as `create`
      makes it.
    """
    ddl = _create(plan)
    if ddl.partitioned or not any(p.kind == "backfill" for p in plan.phases):
        return set()
    last_chooser = max((i for i, s in enumerate(ddl.statements) if s.chooses_names), default=-1)
    return {
        i for i, s in enumerate(ddl.statements) if s.deferrable is not None and i > last_chooser
    }


@dataclass(frozen=True)
class _Statement:
    text: str  # as written in `create`
    chooses_names: bool  # PostgreSQL names something it creates (an index, a constraint)
    deferrable: DeferredIndex | None  # a named, non-unique index on the new table itself


@dataclass(frozen=True)
class _CreateDDL:
    statements: list[_Statement]
    tables: list[str]  # the new table and its partitions, in order
    partitioned: bool  # the new table is PARTITION BY


def _create(plan: Plan) -> _CreateDDL:
    """The `create` DDL, statement by statement, refused unless it only creates the new table
    (its partitions too) and indexes on what it creates: rollback drops the new table, so
    nothing else may be made there."""
    assert plan.new_table is not None
    path: tuple[str | int, ...] = ("new_table", "create")
    try:
        parsed = pglast.parse_sql(plan.new_table.create)
    except pglast.parser.ParseError as error:
        raise PlanError(f"create does not parse: {error}", path=path) from error
    schema, name = split_name(plan.new_table.name)
    created: set[str] = set()
    order: list[str] = []
    statements: list[_Statement] = []
    partitioned = False
    text = plan.new_table.create
    for raw in parsed:
        node: Any = raw.stmt
        kind = type(node).__name__
        location = raw.stmt_location or 0
        length = raw.stmt_len or len(text) - location
        statement = text[location : location + length].strip()
        deferrable: DeferredIndex | None = None
        if kind == "CreateStmt":
            target = node.relation.relname
            parents = {p.relname for p in (node.inhRelations or ())}
            if target != name and not (parents & (created | {name})):
                raise PlanError(
                    f"create may only create {plan.new_table.name} (and its partitions), not"
                    f" {target}",
                    path=path,
                )
            if node.relation.schemaname not in (None, schema) and schema is not None:
                raise PlanError("create names another schema than new_table.name", path=path)
            if target == name and node.partspec is not None:
                partitioned = True
            created.add(target)
            order.append(target)
            chooses_names = True
        elif kind == "IndexStmt":
            if node.relation.relname not in created:
                raise PlanError(
                    f"create may only index the tables it creates, not {node.relation.relname}",
                    path=path,
                )
            chooses_names = not node.idxname
            if node.idxname and not node.unique and node.relation.relname == name:
                node.concurrent = True
                deferrable = DeferredIndex(node.idxname, RawStream()(node))
        else:
            raise PlanError(
                "create may hold only CREATE TABLE and CREATE INDEX statements for the new"
                " table; use a sql phase for anything else",
                path=path,
            )
        statements.append(_Statement(statement, chooses_names, deferrable))
    if name not in created:
        raise PlanError(f"create does not create {plan.new_table.name}", path=path)
    return _CreateDDL(statements, [t for t in order if t in created], partitioned)


def probe_new_table(conn: psycopg.Connection[Any], plan: Plan, table: Table) -> Table:
    """Run `create` in a transaction that is rolled back, and read what it made."""
    assert plan.new_table is not None
    statements = create_statements(plan)
    if resolve_table(conn, plan.new_table.name) is not None:
        raise PlanError(
            f"{plan.new_table.name} exists already: drop it, or name another new table",
            path=("new_table", "name"),
        )
    try:
        with conn.transaction(force_rollback=True):
            for statement in statements:
                conn.execute(sql.SQL(statement))
            return load_table(conn, plan.new_table.name)
    except psycopg.Error as error:
        detail = error.diag.message_primary or str(error).splitlines()[0]
        raise PlanError(f"create fails: {detail}", path=("new_table", "create")) from error


def parse_mappings(plan: Plan) -> None:
    """new_table.columns and new_table.reverse: one SQL expression each."""
    assert plan.new_table is not None
    for field in ("columns", "reverse"):
        for column, expression in getattr(plan.new_table, field).items():
            parse_expression(expression, ("new_table", field, column))


def check_copy(conn: psycopg.Connection[Any], plan: Plan, probes: list[tuple[str, Query]]) -> None:
    """Run each (mapping, statement) probe, a copy that selects no row, with the new table
    created in a transaction that is rolled back: every mapping must assign to its column's
    type, as the triggers will."""
    assert plan.new_table is not None
    parse_mappings(plan)
    for direction, probe in probes:
        try:
            with conn.transaction(force_rollback=True):
                for statement in create_statements(plan):
                    conn.execute(sql.SQL(statement))
                conn.execute(probe)
        except psycopg.Error as error:
            detail = error.diag.message_primary or str(error).splitlines()[0]
            raise PlanError(
                f"new_table.{direction} does not work: {detail}", path=("new_table", direction)
            ) from error


def check_plan(conn: psycopg.Connection[Any], plan: Plan, table: Table) -> tuple[str, ...]:
    """Raise PlanError (with the plan path at fault) on the first problem; return the key."""
    key = resolve_key(plan, table)
    if plan.operations is not None:
        from pgshift.operations.check import check_operations  # it builds on this module

        check_operations(conn, plan, table)
    if plan.columns is not None:
        check_columns(conn, plan, table)
    check_version_schema(conn, plan)
    return key


def check_version_schema(conn: psycopg.Connection[Any], plan: Plan) -> None:
    """Versions mode needs views that run with the caller's rights (PostgreSQL 15 or newer),
    and a version schema that is pgshift's to create and, on rollback, to drop."""
    if not plan.versions:
        return
    if conn.info.server_version < 150000:
        raise PlanError(
            "application mode versions needs PostgreSQL 15 or newer (its views run with the"
            " caller's rights, security_invoker); use mode rename on this server",
            path=("application", "mode"),
        )
    row = conn.execute(
        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (plan.view_schema,)
    ).fetchone()
    if row is not None:
        raise PlanError(
            f"schema {plan.view_schema} already exists; pgshift creates the version schema"
            " (and drops it on rollback): name another, or drop it if an earlier migration"
            " left it",
            path=("application", "schema") if plan.application.version_schema else ("name",),
        )


def check_carried(
    conn: psycopg.Connection[Any],
    table: Table,
    *,
    setup: Sequence[Query],
    stand_in: Sequence[Query],
    shape: str,
    view_schema: str,
    columns: tuple[str, ...] | None = None,
    triggers: bool = False,
    path: tuple[str | int, ...],
    constraint_probes: Sequence[tuple[str, Query]] = (),
) -> None:
    """Try now what cutover will carry over: in a transaction that is rolled back (after
    `setup`), the views reading the live table (or, with `columns`, those columns), the views
    reading those, and the table's row security policies are created as temporary objects over
    a temporary table with the live name and the new shape (`stand_in` makes it). A view the
    new shape cannot hold is refused here, not discovered inside the swap. Other tables'
    policies are carried too but not tried: that would lock their tables."""
    own_triggers = triggers and bool(table.own_triggers)
    carried = any(d.kind in ("view", "policy") for d in table.dependents)
    if not own_triggers and not carried and not constraint_probes:
        return
    failing = ""
    try:
        with conn.transaction(force_rollback=True):
            for statement in setup:
                conn.execute(statement)
            # names visible on this path are written unqualified, so the temporary objects
            # made below stand in for them
            conn.execute(
                sql.SQL(
                    "SELECT set_config('search_path', string_agg(quote_ident(s), ', '"
                    " ORDER BY o), true) FROM (SELECT {} AS s, 0 AS o UNION SELECT n.nspname, 1"
                    " FROM ({}) c JOIN pg_class v ON v.oid = c.oid"
                    " JOIN pg_namespace n ON n.oid = v.relnamespace) paths"
                ).format(sql.Literal(table.schema), closure_query(table.qualified, columns))
            )
            move = TriggerMove(table.qualified, drop=False) if triggers else None
            captured = conn.execute(
                capture_query(table.qualified, view_schema, True, columns, move)
            ).fetchall()
            refused = [row[2] for row in captured if row[2]]
            if refused:
                raise PlanError(refused[0], path=("table",))
            for statement in stand_in:
                conn.execute(statement)
            # constraints the swap adds again, tried on the new shape
            for constraint, probe in constraint_probes:
                failing = constraint
                conn.execute(probe)
            for name, _depth, _refuse, _drop, _create, probes in sorted(
                captured, key=lambda r: r[1]
            ):
                failing = name
                for probe in probes or ():
                    conn.execute(sql.SQL(probe))
    except psycopg.Error as error:
        detail = error.diag.message_primary or str(error).splitlines()[0]
        raise PlanError(
            f"{failing} would not work on {shape} after cutover: {detail}; change it before the"
            " migration, or drop it and create it again after cutover with sql phases",
            path=path,
        ) from error


def new_table_stand_in(plan: Plan, old: Table, new: Table) -> dict[str, Any]:
    """check_carried's arguments for a `new_table` plan: the new table as `create` makes it."""
    return {
        "setup": [sql.SQL(s) for s in create_statements(plan)],
        "stand_in": [
            sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {})").format(
                sql.Identifier(old.name), new.qualified
            )
        ],
        "shape": new.display,
        "triggers": True,
        "path": ("new_table", "create"),
    }


def columns_stand_in(table: Table, changes: Sequence[tuple[str, str, bool]]) -> dict[str, Any]:
    """check_carried's arguments for a `columns` plan: the live table with each planned
    (column, type, is new) changed or added, as an empty temporary copy (nothing to rewrite)."""
    temp = sql.Identifier(table.name)
    stand_in: list[Query] = [
        sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {})").format(temp, table.qualified)
    ]
    for name, type_, is_new in changes:
        action = "ADD COLUMN {} {}" if is_new else "ALTER COLUMN {} TYPE {} USING NULL"
        stand_in.append(
            sql.SQL("ALTER TABLE {} ").format(temp)
            + sql.SQL(action).format(sql.Identifier(name), sql.SQL(type_))
        )
    changed = {name for name, _type, is_new in changes if not is_new}
    constraint_probes = [
        (
            f"check {c.name}",
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                temp, sql.Identifier(c.name), sql.SQL(c.definition)
            ),
        )
        for c in table.constraints
        if c.type == "c" and changed & set(c.columns)
    ]
    return {
        "setup": [],
        "stand_in": stand_in,
        "constraint_probes": constraint_probes,
        "shape": f"the new columns of {table.display}",
        "columns": tuple(name for name, _type, is_new in changes if not is_new),
        "path": ("columns", changes[0][0]),
    }
