"""Resolve, check and compile a plan with `tables`: one part per table, merged into one set of
phases. Before anything is applied, from the live catalog (and `with_references` looked up
there); once started, from the migration's snapshot, so the plan keeps meaning what it meant
when it started (cutover renames columns; the referencing columns found then stay the ones)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgshift.catalog import Table, load_table, table_from_snapshot, table_to_snapshot
from pgshift.compile import CompiledPlan, compile_plan
from pgshift.db import split_name
from pgshift.errors import PlanError, PlanErrors, UsageError
from pgshift.plan.check import (
    check_carried,
    check_copy,
    check_plan,
    columns_stand_in,
    new_table_stand_in,
    parse_columns,
    parse_mappings,
    probe_new_table,
    resolve_key,
)
from pgshift.plan.model import ColumnChange, Plan, TableEntry
from pgshift.tableset.merge import merge_parts
from pgshift.tableset.references import Added, find_references

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Part:
    """One table of the plan: its one-table plan, where its errors show in the plan file, and
    its tables."""

    plan: Plan
    at: Path
    table: Table
    new_table: Table | None = None


@contextmanager
def located(at: Path, inner: bool = True) -> Iterator[None]:
    """A plan error of one table's plan, shown at that table's entry of `tables` (`inner`:
    inside it, at the key the error names)."""
    try:
        yield
    except PlanErrors as errors:
        raise PlanErrors([_moved(e, at, inner) for e in errors.errors]) from errors
    except PlanError as error:
        raise _moved(error, at, inner) from error


def _moved(error: PlanError, at: Path, inner: bool) -> PlanError:
    if error.where is not None:
        return error
    path = (*at, *error.path) if inner and error.path else at
    return PlanError(error.message, path=path, at=error.at if inner else None)


def _tag(plan: Plan, table: Table, index: int, tables: list[Table]) -> str:
    """What the table's trigger and functions are named after: the plan and the table, or the
    plan and the table's place when that is too long or not unique."""
    tag = f"{plan.name}_{table.name}"
    clash = sum(t.name == table.name for t in tables) > 1
    return f"{plan.name}_{index + 1}" if clash or len(tag.encode()) > 53 else tag


def _entry_plan(plan: Plan, entry: TableEntry, added: list[Added]) -> Plan:
    """The entry's one-table plan, with the columns `with_references` adds to its table."""
    columns = dict(entry.columns or {})
    for a in added:
        columns.setdefault(a.column, ColumnChange(type=a.type))
    if entry.columns is None and not added:
        return plan.part(entry)
    return plan.part(entry.model_copy(update={"columns": columns or None}))


def _parts(
    conn: psycopg.Connection[Any] | None,
    plan: Plan,
    tables: list[Table],
    added: list[Added],
    new_tables: list[Table | None] | None = None,
) -> list[Part]:
    """One part per entry of `tables`, then one per table only `with_references` found."""
    assert plan.tables is not None
    parts: list[Part] = []
    for index, (entry, table) in enumerate(zip(plan.tables, tables, strict=False)):
        mine = [a for a in added if a.table == (table.schema, table.name)]
        parts.append(Part(_entry_plan(plan, entry, mine), ("tables", index), table))
    listed = {(t.schema, t.name) for t in tables[: len(plan.tables)]}
    extra = sorted({a.table for a in added} - listed)
    for position, where in enumerate(extra, start=len(plan.tables)):
        mine = [a for a in added if a.table == where]
        if position < len(tables):
            table = tables[position]  # from the snapshot
        else:
            assert conn is not None
            with located(("tables", mine[0].origin, "with_references"), inner=False):
                table = load_table(conn, sql.Identifier(*where).as_string(conn))
        entry = TableEntry(
            table=sql.Identifier(*where).as_string(),
            columns={a.column: ColumnChange(type=a.type) for a in mine},
        )
        parts.append(Part(plan.part(entry), ("tables", mine[0].origin, "with_references"), table))
    if new_tables is not None:
        parts = [Part(p.plan, p.at, p.table, new) for p, new in zip(parts, new_tables, strict=True)]
    return parts


def prepare_tables(
    conn: psycopg.Connection[Any], plan: Plan, schema: str, snapshot: dict[str, Any] | None
) -> CompiledPlan:
    """The plan compiled: from `snapshot` (the migration's, once started) or the live catalog."""
    assert plan.tables is not None
    if snapshot is not None:
        listed = [e.table for e in plan.tables]
        if snapshot.get("entries", listed) != listed:
            raise UsageError(
                f"plan {plan.name} lists other tables than when it started"
                f" ({', '.join(snapshot['entries'])}): restore them, or roll the migration back"
                " and apply the changed plan"
            )
        recorded = snapshot["tables"]
        added = [Added.of(a) for a in snapshot.get("references", [])]
        tables = [table_from_snapshot(r["table"]) for r in recorded]
        news = [
            table_from_snapshot(r["new_table"]) if r.get("new_table") else None for r in recorded
        ]
        parts = _parts(None, plan, tables, added, news)
        compiled = []
        for i, part in enumerate(parts):
            with located(part.at, inner=part.at[-1] != "with_references"):
                key = resolve_key(part.plan, part.table)
                if part.plan.columns is not None:
                    parse_columns(part.plan)  # a --force'd change must still be one expression each
                else:
                    parse_mappings(part.plan)
                compiled.append(_compiled(part, key, schema, i, tables))
        return merge_parts(plan, compiled, _recorded(plan, parts, added))
    tables = []
    for index, entry in enumerate(plan.tables):
        with located(("tables", index), inner=False):
            tables.append(load_table(conn, entry.table))
    seen: dict[tuple[str, str], int] = {}
    for index, table in enumerate(tables):
        where = (table.schema, table.name)
        if where in seen:
            raise PlanError(
                f"{table.display} has two entries in `tables` ({seen[where] + 1} and"
                f" {index + 1}); put all its changes in one",
                path=("tables", index, "table"),
            )
        seen[where] = index
    added = find_references(conn, plan, tables)
    parts = _parts(conn, plan, tables, added)
    tables = [p.table for p in parts]
    compiled = []
    checked: list[Part] = []
    for i, part in enumerate(parts):
        inner = part.at[-1] != "with_references"
        with located(part.at, inner=inner):
            key = check_plan(conn, part.plan, part.table)
            new_table = None
            if part.plan.new_table is not None:
                parse_mappings(part.plan)
                new_table = probe_new_table(conn, part.plan, part.table)
            part = Part(part.plan, part.at, part.table, new_table)
            compiled.append(_compiled(part, key, schema, i, tables))
            checked.append(part)
    _refuse_keys_between(checked)
    merged = merge_parts(plan, compiled, _recorded(plan, checked, added))
    # before anything is applied: the mappings and what cutover carries, tried on the database
    for part, one in zip(checked, compiled, strict=True):
        with located(part.at, inner=part.at[-1] != "with_references"):
            view_schema = one.context.view_schema
            if part.new_table is not None:
                check_copy(conn, part.plan, one.context.shape.probes())
                carried = new_table_stand_in(part.plan, part.table, part.new_table)
            else:
                changes = [(c.name, c.type, c.is_new) for c in one.context.shape.columns]
                carried = columns_stand_in(part.table, changes)
            check_carried(conn, part.table, view_schema=view_schema, **carried)
    return merged


def _compiled(
    part: Part, key: tuple[str, ...], schema: str, index: int, tables: list[Table]
) -> CompiledPlan:
    return compile_plan(
        part.plan,
        part.table,
        key,
        schema,
        part.new_table,
        tag=_tag(part.plan, part.table, index, tables),
        label=part.table.display,
    )


def _recorded(plan: Plan, parts: list[Part], added: list[Added]) -> dict[str, Any]:
    """What the migration's snapshot keeps of its tables (see prepare_tables)."""
    assert plan.tables is not None
    return {
        "entries": [e.table for e in plan.tables],
        "tables": [
            {
                "table": table_to_snapshot(p.table),
                "new_table": table_to_snapshot(p.new_table) if p.new_table is not None else None,
            }
            for p in parts
        ],
        "references": [a.data() for a in added],
    }


def _refuse_keys_between(parts: list[Part]) -> None:
    """A new table's `create` may not declare a foreign key to another table of the plan: it
    would point at that table's old version after the swap, and the copies fill the tables in
    no common order. The old tables' foreign keys between them are carried over at the swap."""
    names = {(p.table.schema, p.table.name) for p in parts}
    for part in parts:
        if part.new_table is None:
            continue
        for con in part.new_table.constraints:
            if con.type != "f" or con.referenced_table is None:
                continue
            schema, name = split_name(con.referenced_table)
            if any(n == name and schema in (None, s) for s, n in names):
                raise PlanError(
                    f"{part.new_table.display} declares foreign key {con.name} to"
                    f" {con.referenced_table}, a table of this plan: leave it out of `create`;"
                    " the old tables' foreign keys between them are carried over at the swap",
                    path=(*part.at, "new_table", "create"),
                )
