"""`with_references`: the columns of any table, in any schema, whose foreign keys reference a
column the entry changes, each changed to the same type; followed on (a column added so is
itself referenced, say by a self-referencing foreign key), each column once.

A referencing column whose type is not the referenced column's own (a smallint referencing an
integer key) is not guessed at: the plan must list it with the type it wants."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgshift.catalog import Table
from pgshift.errors import PlanError
from pgshift.plan.model import Plan

# Foreign keys referencing given columns of a table: per referencing column, the table and
# column it is, its type, the constraint and the referenced column. Partitions' copies of a
# partitioned table's foreign key (conparentid set) are the parent's, listed once through it.
_REFERENCING = """
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       con.conname, fa.attname
  FROM pg_constraint con
  CROSS JOIN LATERAL unnest(con.conkey, con.confkey) AS k(att, fatt)
  JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.att
  JOIN pg_attribute fa ON fa.attrelid = con.confrelid AND fa.attnum = k.fatt
  JOIN pg_class c ON c.oid = con.conrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE con.contype = 'f' AND con.conparentid = 0 AND con.confrelid = %s::regclass
   AND fa.attname = ANY(%s)
 ORDER BY n.nspname, c.relname, a.attname
"""


@dataclass(frozen=True)
class Added:
    """A column `with_references` adds: on `table` (schema, name), changed to `type`, because
    its foreign key `constraint` references `referenced` (schema, name, column); `origin` is the
    entry of `tables` that asked."""

    table: tuple[str, str]
    column: str
    type: str
    constraint: str
    referenced: tuple[str, str, str]
    origin: int

    def data(self) -> dict[str, Any]:
        return {
            "table": list(self.table),
            "column": self.column,
            "type": self.type,
            "constraint": self.constraint,
            "referenced": list(self.referenced),
            "origin": self.origin,
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> Added:
        schema, name = data["table"]
        r_schema, r_table, r_column = data["referenced"]
        return cls(
            (schema, name),
            data["column"],
            data["type"],
            data["constraint"],
            (r_schema, r_table, r_column),
            int(data["origin"]),
        )


def find_references(conn: psycopg.Connection[Any], plan: Plan, tables: list[Table]) -> list[Added]:
    """The columns every `with_references` entry adds, given the entries' resolved tables (in
    the plan's order). Columns the plan lists itself are left to the plan."""
    assert plan.tables is not None
    listed = {
        ((t.schema, t.name), column)
        for entry, t in zip(plan.tables, tables, strict=True)
        for column in (entry.columns or {})
    }
    # (table, column, its type now, the type it changes to, the entry asking)
    todo: deque[tuple[tuple[str, str], str, str, str, int]] = deque()
    for index, (entry, table) in enumerate(zip(plan.tables, tables, strict=True)):
        if not entry.with_references or entry.columns is None:
            continue
        for column, change in entry.columns.items():
            if change.type is not None and column in table.columns:
                old = table.columns[column].type
                todo.append(((table.schema, table.name), column, old, change.type, index))
    copied = {
        (t.schema, t.name)
        for entry, t in zip(plan.tables, tables, strict=True)
        if entry.new_table is not None
    }
    added: list[Added] = []
    seen = set(listed)
    while todo:
        on, column, old, new, origin = todo.popleft()
        regclass = sql.Identifier(*on).as_string(conn)
        for schema, name, ref_column, ref_type, constraint, _ in conn.execute(
            _REFERENCING, (regclass, [column])
        ).fetchall():
            where = (schema, name)
            if (where, ref_column) in seen:
                continue
            if where in copied:
                raise PlanError(
                    f"{schema}.{name}.{ref_column} references {on[0]}.{on[1]}.{column} through"
                    f" {constraint}, and {schema}.{name} is copied to a new table by this plan:"
                    f" give {ref_column} its new type in that entry's `new_table`",
                    path=("tables", origin, "with_references"),
                )
            if ref_type != old:
                raise PlanError(
                    f"{schema}.{name}.{ref_column} ({ref_type}) references"
                    f" {on[0]}.{on[1]}.{column} ({old}) through {constraint}:"
                    " with_references changes only columns of the referenced column's own type;"
                    f" list {schema}.{name} in `tables` with the type {ref_column} should get",
                    path=("tables", origin, "with_references"),
                )
            seen.add((where, ref_column))
            added.append(Added(where, ref_column, new, constraint, (*on, column), origin))
            todo.append((where, ref_column, ref_type, new, origin))
    return added
