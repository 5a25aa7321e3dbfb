"""What the source says about the tables a move takes: which they are (a list, or every table
of some schemas), their keys, columns, sizes, sequences and what keeps one from moving.

Read before the migration starts and kept in its state (`to_snapshot`), like the table of the
other targets: once it has started, every compile of it uses what was read then.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgshift.db import split_name
from pgshift.errors import PlanError
from pgshift.plan.model import Plan

Name = tuple[str, str]  # (schema, name)


PLAIN = re.compile(r"^[a-z_][a-z0-9_]*$")


def display(name: Name) -> str:
    """schema.name as a person writes it: quoted only where a part needs it."""
    return ".".join(p if PLAIN.match(p) else sql.Identifier(p).as_string() for p in name)


@dataclass(frozen=True)
class MovedTable:
    schema: str
    name: str
    kind: str  # pg_class.relkind: 'r' for a table
    persistence: str  # 'p' permanent, 'u' unlogged
    partition: bool
    replica_identity: str  # 'd' default (the key), 'f' full, 'i' index, 'n' nothing
    key: tuple[str, ...]  # the primary key's columns, () without one
    columns: tuple[str, ...]
    row_estimate: int | None  # None: never analyzed
    total_bytes: int  # with indexes and TOAST
    owner: str
    sequences: tuple[Name, ...]  # owned by its columns, or taken from by their defaults

    @property
    def qualified(self) -> Name:
        return (self.schema, self.name)

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def display(self) -> str:
        return display(self.qualified)


@dataclass(frozen=True)
class Problem:
    """Something on the source that keeps the move from starting, and what to do about it."""

    table: str | None
    message: str


@dataclass(frozen=True)
class MoveSource:
    tables: tuple[MovedTable, ...]
    problems: tuple[Problem, ...]  # refusals read off the source's catalog
    warnings: tuple[str, ...]

    @property
    def sequences(self) -> tuple[Name, ...]:
        return tuple(dict.fromkeys(s for t in self.tables for s in t.sequences))

    @property
    def rows(self) -> int:
        return sum(t.row_estimate or 0 for t in self.tables)

    @property
    def total_bytes(self) -> int:
        return sum(t.total_bytes for t in self.tables)


def to_snapshot(tables: tuple[MovedTable, ...]) -> list[dict[str, Any]]:
    return [asdict(t) for t in tables]


def from_snapshot(data: list[dict[str, Any]]) -> tuple[MovedTable, ...]:
    out = []
    for item in data:
        fields = dict(item)
        fields["key"] = tuple(fields["key"])
        fields["columns"] = tuple(fields["columns"])
        fields["sequences"] = tuple(tuple(s) for s in fields["sequences"])
        out.append(MovedTable(**fields))
    return tuple(out)


def _named_oids(conn: psycopg.Connection[Any], plan: Plan, state_schema: str) -> list[int]:
    """The tables the plan names, in its order, then every table of its schemas; PlanError at
    the entry that names nothing (or something that is not a table)."""
    move = plan.move
    assert move is not None
    oids: list[int] = []
    for index, name in enumerate(move.tables or []):
        try:
            schema, relname = split_name(name)
        except ValueError as error:
            raise PlanError(str(error), path=("move", "tables", index)) from None
        text = sql.Identifier(*(p for p in (schema, relname) if p is not None)).as_string()
        row = conn.execute(
            "SELECT c.oid, c.relkind::text FROM pg_class c WHERE c.oid = to_regclass(%s)", (text,)
        ).fetchone()
        if row is None:
            raise PlanError(
                f"table {name} does not exist on the source", path=("move", "tables", index)
            )
        if row[1] not in ("r", "p"):
            what = {"v": "a view", "m": "a materialized view", "f": "a foreign table"}
            raise PlanError(
                f"{name} is {what.get(row[1], 'not a table')}: only tables move",
                path=("move", "tables", index),
            )
        oids.append(int(row[0]))
    for index, schema in enumerate(move.schemas or []):
        if schema == state_schema:
            raise PlanError(
                f"schema {schema} holds pgshift's state: it does not move",
                path=("move", "schemas", index),
            )
        row = conn.execute(
            "SELECT to_regnamespace(%s)::oid", (sql.Identifier(schema).as_string(),)
        ).fetchone()
        if row is None or row[0] is None:
            raise PlanError(
                f"schema {schema} does not exist on the source", path=("move", "schemas", index)
            )
        found = conn.execute(
            "SELECT oid FROM pg_class WHERE relnamespace = %s AND relkind IN ('r', 'p')"
            " ORDER BY relname",
            (row[0],),
        ).fetchall()
        oids += [int(r[0]) for r in found]
    if move.database:
        # the schemas pgshift makes for itself (its state, version schemas) stay behind
        found = conn.execute(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema', %s)"
            " AND n.nspname NOT LIKE 'pg\\_%%' AND n.nspname NOT LIKE 'pgshift\\_%%'"
            " ORDER BY n.nspname, c.relname",
            (state_schema,),
        ).fetchall()
        oids += [int(r[0]) for r in found]
    return list(dict.fromkeys(oids))


_TABLES = """
SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relpersistence::text, c.relispartition,
       c.relreplident::text,
       coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                   FROM pg_index i
                  CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE i.indrelid = c.oid AND i.indisprimary), '{}') AS key,
       coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '{}'),
       CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END,
       pg_total_relation_size(c.oid), pg_get_userbyid(c.relowner)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = ANY(%s)
"""

# the sequences a table's columns own (serial, identity), and those its defaults take from
_SEQUENCES = """
SELECT d.refobjid AS tbl, n.nspname, s.relname
  FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
  JOIN pg_namespace n ON n.oid = s.relnamespace
 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
   AND d.deptype IN ('a', 'i') AND d.refobjid = ANY(%(oids)s)
UNION
SELECT ad.adrelid, n.nspname, s.relname
  FROM pg_attrdef ad
  JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
   AND d.refclassid = 'pg_class'::regclass
  JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
  JOIN pg_namespace n ON n.oid = s.relnamespace
 WHERE ad.adrelid = ANY(%(oids)s)
 ORDER BY 1, 2, 3
"""

# foreign keys of moved tables to tables that stay, and of staying tables to moved ones
_FOREIGN_KEYS = """
SELECT con.conname, con.conrelid::regclass::text, con.confrelid::regclass::text,
       con.conrelid = ANY(%(oids)s) AS outward
  FROM pg_constraint con
 WHERE con.contype = 'f'
   AND (con.conrelid = ANY(%(oids)s)) <> (con.confrelid = ANY(%(oids)s))
 ORDER BY 2, 1
"""

_LARGE_OBJECT_COLUMNS = """
SELECT a.attrelid::regclass::text, a.attname
  FROM pg_attribute a
 WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
   AND (a.atttypid = 'oid'::regtype OR format_type(a.atttypid, NULL) IN ('lo', 'public.lo'))
   AND EXISTS (SELECT FROM pg_largeobject_metadata)
 ORDER BY 1, 2
"""


def read_source(conn: psycopg.Connection[Any], plan: Plan, state_schema: str) -> MoveSource:
    """The plan's tables as the source has them now, and what keeps any from moving."""
    oids = _named_oids(conn, plan, state_schema)
    if not oids:
        raise PlanError("the move names no table: its schemas hold none", path=("move",))
    rows = {int(r[0]): r for r in conn.execute(_TABLES, (oids,)).fetchall()}
    sequences: dict[int, list[Name]] = {}
    for tbl, schema, name in conn.execute(_SEQUENCES, {"oids": oids}).fetchall():
        sequences.setdefault(int(tbl), []).append((schema, name))
    tables = []
    problems: list[Problem] = []
    for oid in oids:
        r = rows[oid]
        table = MovedTable(
            schema=r[1],
            name=r[2],
            kind=r[3],
            persistence=r[4],
            partition=bool(r[5]),
            replica_identity=r[6],
            key=tuple(r[7]),
            columns=tuple(r[8]),
            row_estimate=None if r[9] is None else int(r[9]),
            total_bytes=int(r[10]),
            owner=r[11],
            sequences=tuple(sequences.get(oid, [])),
        )
        tables.append(table)
        problems += table_problems(table)
    warnings: list[str] = []
    for conname, child, parent, outward in conn.execute(_FOREIGN_KEYS, {"oids": oids}).fetchall():
        if outward:
            problems.append(
                Problem(
                    child,
                    f"{child} has foreign key {conname} to {parent}, which does not move:"
                    f" move {parent} too, or drop the key",
                )
            )
        else:
            warnings.append(
                f"{child} stays on the source with foreign key {conname} to {parent}, which"
                " moves: after cutover it checks the fenced copy left on the source"
            )
    for table, column in conn.execute(_LARGE_OBJECT_COLUMNS, (oids,)).fetchall():
        problems.append(
            Problem(
                table,
                f"{table}.{column} may point to large objects, which logical replication does"
                " not carry: move them another way (pg_dump --large-objects) and leave this"
                " table out, or store the data in a bytea column",
            )
        )
    return MoveSource(tuple(tables), tuple(problems), tuple(warnings))


def table_problems(table: MovedTable) -> list[Problem]:
    name = table.display
    if table.kind == "p" or table.partition:
        what = "partitioned" if table.kind == "p" else "a partition"
        return [
            Problem(
                name,
                f"{name} is {what}: partitioned tables do not move yet; leave it out of the move",
            )
        ]
    if table.persistence == "u":
        return [
            Problem(
                name,
                f"{name} is unlogged, so logical replication cannot carry it: ALTER TABLE"
                f" {name} SET LOGGED first, or leave it out",
            )
        ]
    if not table.key and table.replica_identity not in ("f", "i"):
        return [
            Problem(
                name,
                f"{name} has no primary key, so its updates and deletes cannot be replicated"
                " (the source would refuse them once it is published): add a primary key, or"
                f" ALTER TABLE {name} REPLICA IDENTITY FULL (each update then logs the whole"
                " row and the destination finds it by a scan)",
            )
        ]
    return []


def fingerprint_query(tables: tuple[MovedTable, ...]) -> sql.Composed:
    """Each moved table's columns (name, type, NOT NULL) as one md5, NULL for a table that no
    longer exists, in the tables' order: DDL on the source during a move changes it."""
    names = [t.ident.as_string() for t in tables]
    return sql.SQL(
        "SELECT (SELECT md5(string_agg(a.attname || ' ' ||"
        " format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null'"
        " ELSE '' END, ', ' ORDER BY a.attnum)) FROM pg_attribute a"
        " WHERE a.attrelid = to_regclass(t.name) AND a.attnum > 0 AND NOT a.attisdropped)"
        " FROM unnest({}::text[]) WITH ORDINALITY AS t(name, i) ORDER BY t.i"
    ).format(sql.Literal(names))


def fingerprint(conn: psycopg.Connection[Any], tables: tuple[MovedTable, ...]) -> dict[str, Any]:
    """{table as displayed: md5 of its columns, or None when it is gone}."""
    rows = conn.execute(fingerprint_query(tables)).fetchall()
    return {t.display: r[0] for t, r in zip(tables, rows, strict=True)}
