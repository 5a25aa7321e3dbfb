"""What the live database says about a table: columns, key, indexes, constraints, dependents,
size. Read once per command, before compiling, so every decision is made on real facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pgshift.db import TRIGGER_PREFIX, split_name
from pgshift.errors import PlanError


@dataclass(frozen=True)
class Column:
    name: str
    attnum: int
    type: str  # format_type(), e.g. "integer", "numeric(12,2)"
    not_null: bool
    default: str | None  # pg_get_expr of the default, e.g. "nextval('accounts_id_seq'::regclass)"
    identity: str  # '' | 'a' (ALWAYS) | 'd' (BY DEFAULT)
    generated: str  # '' | 's' (stored generated column)
    owned_sequence: tuple[str, str] | None  # (schema, name) of the sequence this column owns
    sequence_type: str | None  # that sequence's data type
    collation: str | None = None  # a collation other than its type's default
    default_sequence: tuple[str, str] | None = None  # the sequence its default takes from


@dataclass(frozen=True)
class IndexKeyPart:
    column: str | None  # None for an expression
    descending: bool
    nulls_first: bool


@dataclass(frozen=True)
class Index:
    name: str
    oid: int
    definition: str
    method: str
    unique: bool
    primary: bool
    valid: bool
    parts: tuple[IndexKeyPart, ...]  # key parts
    include: tuple[str, ...]
    predicate: str | None
    expression_columns: frozenset[str]  # columns used inside expressions or the predicate
    constraint: str | None  # name of the PK/UNIQUE/EXCLUDE constraint it backs
    constraint_type: str | None  # 'p' | 'u' | 'x'
    nondefault_opclass: bool
    storage: tuple[str, ...] = ()  # reloptions, e.g. ("fillfactor=70",)
    tablespace: str | None = None
    nulls_not_distinct: bool = False

    @property
    def columns(self) -> frozenset[str]:
        named = {p.column for p in self.parts if p.column} | set(self.include)
        return frozenset(named) | self.expression_columns


@dataclass(frozen=True)
class Constraint:
    name: str
    type: str  # c, f, p, u, x, n, t
    columns: tuple[str, ...]
    definition: str
    validated: bool
    referenced_table: str | None = None


@dataclass(frozen=True)
class Dependent:
    kind: str  # "view", "foreign key", "policy", "publication", "rule"
    name: str
    columns: tuple[str, ...]  # columns of our table it depends on ((): the whole table)


@dataclass(frozen=True)
class TableProperties:
    """What ALTER TABLE and COMMENT set on a table besides its shape; a new table inherits it."""

    options: tuple[str, ...] = ()  # reloptions, e.g. ("fillfactor=80",)
    comment: str | None = None
    column_comments: tuple[tuple[str, str], ...] = ()  # (column, comment)
    statistics: tuple[tuple[str, int], ...] = ()  # (column, statistics target set on it)
    replica_identity: str = "d"  # relreplident: d(efault), f(ull), n(othing), i(ndex)


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    oid: int
    kind: str  # relkind: r, p
    columns: dict[str, Column]
    indexes: tuple[Index, ...]
    constraints: tuple[Constraint, ...]
    triggers: tuple[str, ...]
    dependents: tuple[Dependent, ...]
    referencing_fks: tuple[Constraint, ...]  # foreign keys in other tables pointing here
    row_estimate: int
    total_bytes: int
    table_bytes: int
    primary_key: tuple[str, ...] | None
    unique_keys: tuple[tuple[str, ...], ...] = field(default=())
    owner: str = ""
    grants: tuple[tuple[str, str, bool], ...] = ()  # (grantee or PUBLIC, privilege, grantable)
    # (column, grantee or PUBLIC, privilege, grantable)
    column_grants: tuple[tuple[str, str, str, bool], ...] = ()
    properties: TableProperties = field(default_factory=TableProperties)

    @property
    def qualified(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def regclass(self) -> str:
        """The quoted name as text, for `%s::regclass` parameters."""
        return self.qualified.as_string()

    @property
    def own_triggers(self) -> tuple[str, ...]:
        """The table's triggers that are not pgshift's."""
        return tuple(t for t in self.triggers if not t.startswith(TRIGGER_PREFIX))

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"

    def has_unique_not_null(self, key: tuple[str, ...]) -> bool:
        if self.primary_key == key:
            return True
        return key in self.unique_keys and all(self.columns[c].not_null for c in key)


def resolve_table(conn: psycopg.Connection[Any], name: str) -> tuple[str, str, int, str] | None:
    """(schema, name, oid, relkind) of a table name as written, search_path applied."""
    schema, relname = split_name(name)
    if schema is None:
        row = conn.execute(
            "SELECT n.nspname, c.relname, c.oid::int, c.relkind::text FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = to_regclass(quote_ident(%s))",
            (relname,),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT n.nspname, c.relname, c.oid::int, c.relkind::text FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (schema, relname),
        ).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3])


def load_table(conn: psycopg.Connection[Any], name: str) -> Table:
    found = resolve_table(conn, name)
    if found is None:
        info = conn.info
        raise PlanError(
            f"table {name!r} does not exist in database {info.dbname!r} as {info.user!r} on"
            f" {info.host}:{info.port}; check `table`, and --dsn or $DATABASE_URL",
            path=("table",),
        )
    schema, relname, oid, kind = found
    if kind not in ("r", "p"):
        raise PlanError(f"{schema}.{relname} is not a table (relkind {kind!r})", path=("table",))
    with conn.cursor(row_factory=dict_row) as cur:
        columns = _columns(cur, oid)
        indexes = _indexes(cur, oid)
        constraints = _constraints(cur, oid)
        triggers = tuple(
            r["tgname"]
            for r in cur.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal ORDER BY 1",
                (oid,),
            )
        )
        dependents, referencing = _dependents(cur, oid)
        owner_row = cur.execute(
            "SELECT pg_get_userbyid(relowner) AS owner FROM pg_class WHERE oid = %s", (oid,)
        ).fetchone()
        grants = tuple(
            (r["grantee"], r["privilege"], r["grantable"])
            for r in cur.execute(
                "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END"
                " AS grantee, a.privilege_type AS privilege, a.is_grantable AS grantable"
                " FROM pg_class c, aclexplode(c.relacl) a"
                " WHERE c.oid = %s AND a.grantee <> c.relowner ORDER BY 1, 2",
                (oid,),
            )
        )
        column_grants = tuple(
            (r["attname"], r["grantee"], r["privilege"], r["grantable"])
            for r in cur.execute(
                "SELECT a.attname, CASE WHEN x.grantee = 0 THEN 'PUBLIC'"
                " ELSE pg_get_userbyid(x.grantee) END AS grantee,"
                " x.privilege_type AS privilege, x.is_grantable AS grantable"
                " FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid, aclexplode(a.attacl) x"
                " WHERE c.oid = %s AND a.attnum > 0 AND NOT a.attisdropped"
                " AND x.grantee <> c.relowner ORDER BY 1, 2, 3",
                (oid,),
            )
        )
        properties = _properties(cur, oid)
        size = cur.execute(
            "SELECT greatest(c.reltuples, 0)::bigint AS rows, pg_total_relation_size(c.oid) AS total,"
            " pg_table_size(c.oid) AS tbl, c.relpages FROM pg_class c WHERE c.oid = %s",
            (oid,),
        ).fetchone()
    assert size is not None
    rows = int(size["rows"])
    if rows == 0 and size["relpages"] == 0:
        # never analyzed or empty: count cheaply enough for an estimate only when small
        rows = -1
    primary = next((c.columns for c in constraints if c.type == "p"), None)
    uniques = tuple(c.columns for c in constraints if c.type == "u") + tuple(
        tuple(p.column for p in i.parts if p.column)
        for i in indexes
        if i.unique and i.valid and i.predicate is None and all(p.column for p in i.parts)
    )
    return Table(
        schema=schema,
        name=relname,
        oid=oid,
        kind=kind,
        columns=columns,
        indexes=indexes,
        constraints=constraints,
        triggers=triggers,
        dependents=dependents,
        referencing_fks=referencing,
        row_estimate=rows,
        total_bytes=int(size["total"]),
        table_bytes=int(size["tbl"]),
        primary_key=primary,
        unique_keys=uniques,
        owner=owner_row["owner"] if owner_row else "",
        grants=grants,
        column_grants=column_grants,
        properties=properties,
    )


def _properties(cur: psycopg.Cursor[dict[str, Any]], oid: int) -> TableProperties:
    row = cur.execute(
        """
        SELECT coalesce(c.reloptions, '{}') AS options,
               obj_description(c.oid, 'pg_class') AS comment,
               c.relreplident::text AS replica_identity,
               coalesce((SELECT array_agg(ARRAY[a.attname::text, d.description] ORDER BY a.attnum)
                           FROM pg_description d JOIN pg_attribute a
                             ON a.attrelid = d.objoid AND a.attnum = d.objsubid
                          WHERE d.classoid = 'pg_class'::regclass AND d.objoid = c.oid
                            AND d.objsubid > 0 AND NOT a.attisdropped), '{}') AS column_comments,
               -- set explicitly: -1 (up to 16) or NULL (17 on) means the default
               coalesce((SELECT array_agg(ARRAY[a.attname::text, a.attstattarget::text]
                                          ORDER BY a.attnum)
                           FROM pg_attribute a
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                            AND a.attstattarget >= 0), '{}') AS statistics
          FROM pg_class c WHERE c.oid = %s
        """,
        (oid,),
    ).fetchone()
    assert row is not None
    return _properties_from(row)  # the row has the snapshot's keys


def _columns(cur: psycopg.Cursor[dict[str, Any]], oid: int) -> dict[str, Column]:
    rows = cur.execute(
        """
        SELECT a.attname, a.attnum, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid) AS default, a.attidentity::text AS identity,
               a.attgenerated::text AS generated,
               (SELECT ARRAY[sn.nspname::text, s.relname::text]
                  FROM pg_depend dep JOIN pg_class s ON s.oid = dep.refobjid
                  JOIN pg_namespace sn ON sn.oid = s.relnamespace
                 WHERE dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid
                   AND s.relkind = 'S' LIMIT 1) AS default_sequence,
               (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                  FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                  JOIN pg_type t ON t.oid = a.atttypid
                 WHERE co.oid = a.attcollation AND a.attcollation <> t.typcollation) AS collation,
               (SELECT ARRAY[sn.nspname::text, s.relname::text]
                  FROM pg_depend dep JOIN pg_class s ON s.oid = dep.objid
                  JOIN pg_namespace sn ON sn.oid = s.relnamespace
                 WHERE dep.refobjid = a.attrelid AND dep.refobjsubid = a.attnum
                   AND dep.classid = 'pg_class'::regclass AND s.relkind = 'S'
                   AND dep.deptype IN ('a', 'i') LIMIT 1) AS owned_sequence,
               (SELECT format_type(sq.seqtypid, NULL) FROM pg_depend dep
                  JOIN pg_sequence sq ON sq.seqrelid = dep.objid
                 WHERE dep.refobjid = a.attrelid AND dep.refobjsubid = a.attnum
                   AND dep.classid = 'pg_class'::regclass AND dep.deptype IN ('a', 'i')
                 LIMIT 1) AS sequence_type
          FROM pg_attribute a
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum
        """,
        (oid,),
    ).fetchall()
    return {
        r["attname"]: Column(
            name=r["attname"],
            attnum=r["attnum"],
            type=r["type"],
            not_null=r["attnotnull"],
            default=r["default"],
            identity=r["identity"],
            generated=r["generated"],
            owned_sequence=tuple(r["owned_sequence"]) if r["owned_sequence"] else None,
            sequence_type=r["sequence_type"],
            collation=r["collation"],
            default_sequence=tuple(r["default_sequence"]) if r["default_sequence"] else None,
        )
        for r in rows
    }


def _indexes(cur: psycopg.Cursor[dict[str, Any]], oid: int) -> tuple[Index, ...]:
    rows = cur.execute(
        """
        SELECT i.indexrelid::int AS oid, c.relname AS name, pg_get_indexdef(i.indexrelid) AS def,
               am.amname AS method, i.indisunique AS unique, i.indisprimary AS primary,
               i.indisvalid AS valid, i.indnkeyatts AS nkey, i.indkey::int2[] AS keys,
               i.indoption::int2[] AS options, pg_get_expr(i.indpred, i.indrelid) AS predicate,
               i.indexprs IS NOT NULL AS has_exprs,
               (SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_depend dep
                  JOIN pg_attribute a ON a.attrelid = dep.refobjid AND a.attnum = dep.refobjsubid
                 WHERE dep.classid = 'pg_class'::regclass AND dep.objid = i.indexrelid
                   AND dep.refobjid = i.indrelid AND dep.refobjsubid > 0) AS dep_columns,
               con.conname AS constraint, con.contype::text AS constraint_type,
               EXISTS (SELECT 1 FROM unnest(i.indclass::oid[]) oc JOIN pg_opclass o ON o.oid = oc
                        WHERE NOT o.opcdefault) AS nondefault_opclass,
               coalesce(c.reloptions, '{}') AS storage,
               (SELECT spcname FROM pg_tablespace WHERE oid = c.reltablespace) AS tablespace,
               -- the column exists from PostgreSQL 15 on; read through jsonb to run on 14 too
               coalesce((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false)
                 AS nulls_not_distinct
          FROM pg_index i
          JOIN pg_class c ON c.oid = i.indexrelid
          JOIN pg_am am ON am.oid = c.relam
          LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
               AND con.contype IN ('p', 'u', 'x')
         WHERE i.indrelid = %s
         ORDER BY c.relname
        """,
        (oid,),
    ).fetchall()
    names = {
        r["attnum"]: r["attname"]
        for r in cur.execute(
            "SELECT attnum, attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0", (oid,)
        )
    }
    result = []
    for r in rows:
        keys: list[int] = list(r["keys"])
        options: list[int] = list(r["options"] or [])
        parts = tuple(
            IndexKeyPart(
                column=names.get(k) if k != 0 else None,
                descending=bool(options[n] & 1) if n < len(options) else False,
                nulls_first=bool(options[n] & 2) if n < len(options) else False,
            )
            for n, k in enumerate(keys[: r["nkey"]])
        )
        include = tuple(names[k] for k in keys[r["nkey"] :] if k != 0)
        # conservative: an expression or predicate index counts every column it depends on
        expression_columns = (
            frozenset(r["dep_columns"] or [])
            if r["has_exprs"] or r["predicate"]
            else frozenset[str]()
        )
        result.append(
            Index(
                name=r["name"],
                oid=r["oid"],
                definition=r["def"],
                method=r["method"],
                unique=r["unique"],
                primary=r["primary"],
                valid=r["valid"],
                parts=parts,
                include=include,
                predicate=r["predicate"],
                expression_columns=expression_columns,
                constraint=r["constraint"],
                constraint_type=r["constraint_type"],
                nondefault_opclass=r["nondefault_opclass"],
                storage=tuple(r["storage"]),
                tablespace=r["tablespace"],
                nulls_not_distinct=r["nulls_not_distinct"],
            )
        )
    return tuple(result)


def _constraints(cur: psycopg.Cursor[dict[str, Any]], oid: int) -> tuple[Constraint, ...]:
    rows = cur.execute(
        """
        SELECT con.conname, con.contype::text AS type, pg_get_constraintdef(con.oid) AS def,
               con.convalidated,
               coalesce((SELECT array_agg(a.attname ORDER BY k.n) FROM unnest(con.conkey)
                          WITH ORDINALITY k(attnum, n)
                          JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum),
                        '{}') AS columns,
               con.confrelid::regclass::text AS referenced
          FROM pg_constraint con WHERE con.conrelid = %s ORDER BY con.conname
        """,
        (oid,),
    ).fetchall()
    return tuple(
        Constraint(
            name=r["conname"],
            type=r["type"],
            columns=tuple(r["columns"]),
            definition=r["def"],
            validated=r["convalidated"],
            referenced_table=r["referenced"] if r["type"] == "f" else None,
        )
        for r in rows
    )


# Every view (and other relation with a rule) reading `target` (where the dependency `d` meets
# `first`: all of them, or those reading some columns), directly or through other views, with
# its depth: a view is deeper than each view it reads.
VIEW_CLOSURE = """
WITH RECURSIVE reads(oid, depth) AS (
    SELECT r.ev_class, 1
      FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
     WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
       AND d.refobjid = {target} AND r.ev_class <> {target} AND ({first})
    UNION ALL
    SELECT r.ev_class, reads.depth + 1
      FROM reads
      JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = reads.oid
      JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
     WHERE r.ev_class <> reads.oid AND reads.depth < 100
)
SELECT oid, max(depth) AS depth FROM reads GROUP BY oid
"""


def _dependents(
    cur: psycopg.Cursor[dict[str, Any]], oid: int
) -> tuple[tuple[Dependent, ...], tuple[Constraint, ...]]:
    found: list[Dependent] = []
    # views reading the table, directly or through other views (and relations whose rules
    # read it): relkind tells a view from a materialized view or a table's rule
    closure = VIEW_CLOSURE.format(target="%(oid)s", first="true")
    views = cur.execute(
        f"""
        SELECT n.nspname || '.' || v.relname AS name, v.relkind, c.depth,
               coalesce((SELECT array_agg(DISTINCT a.attname)
                           FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
                           JOIN pg_attribute a ON a.attrelid = d.refobjid
                                              AND a.attnum = d.refobjsubid
                          WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class = v.oid
                            AND d.refobjid = %(oid)s), '{{}}') AS columns
          FROM ({closure}) c JOIN pg_class v ON v.oid = c.oid
          JOIN pg_namespace n ON n.oid = v.relnamespace
         ORDER BY c.depth, 1
        """,
        {"oid": oid},
    ).fetchall()
    kinds = {"v": "view", "m": "materialized view"}
    found += [
        Dependent(kinds.get(r["relkind"], "rule"), r["name"], tuple(r["columns"])) for r in views
    ]
    found += [
        Dependent("policy", r["polname"], tuple(r["columns"]))
        for r in cur.execute(
            "SELECT CASE WHEN p.polrelid = %(oid)s THEN quote_ident(p.polname)"
            " ELSE quote_ident(p.polname) || ' on ' || p.polrelid::regclass::text END AS polname,"
            " coalesce(array_agg(a.attname) FILTER (WHERE a.attname IS NOT NULL), '{}') AS columns"
            " FROM pg_policy p JOIN pg_depend d"
            " ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid"
            " AND d.refclassid = 'pg_class'::regclass AND d.refobjid = %(oid)s"
            " LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
            " GROUP BY p.polname, p.polrelid ORDER BY 1",
            {"oid": oid},
        )
    ]
    found += [
        Dependent("publication", r["pubname"], ())
        for r in cur.execute(
            "SELECT p.pubname FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid"
            " WHERE pr.prrelid = %s",
            (oid,),
        )
    ]
    referencing = cur.execute(
        """
        SELECT con.conname, con.conrelid::regclass::text AS source, pg_get_constraintdef(con.oid) AS def,
               con.convalidated,
               (SELECT array_agg(a.attname ORDER BY k.n) FROM unnest(con.confkey)
                  WITH ORDINALITY k(attnum, n)
                  JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum) AS columns
          FROM pg_constraint con WHERE con.contype = 'f' AND con.confrelid = %s
        """,
        (oid,),
    ).fetchall()
    fks = tuple(
        Constraint(
            name=r["conname"],
            type="f",
            columns=tuple(r["columns"]),
            definition=r["def"],
            validated=r["convalidated"],
            referenced_table=r["source"],
        )
        for r in referencing
    )
    found += [Dependent("foreign key", f"{f.name} on {f.referenced_table}", f.columns) for f in fks]
    return tuple(found), fks


def table_to_snapshot(table: Table) -> dict[str, Any]:
    """The table as compiled against, for the state: a migration keeps compiling against the
    table as it was when it started, however far cutover has renamed things since."""
    from dataclasses import asdict

    data = asdict(table)
    for index in data["indexes"]:
        index["expression_columns"] = sorted(index["expression_columns"])
    return data


def table_from_snapshot(data: dict[str, Any]) -> Table:
    columns = {
        name: Column(
            **{
                **c,
                "owned_sequence": tuple(c["owned_sequence"]) if c["owned_sequence"] else None,
                "default_sequence": tuple(c["default_sequence"])
                if c.get("default_sequence")
                else None,
            }
        )
        for name, c in data["columns"].items()
    }
    indexes = tuple(
        Index(
            **{
                **i,
                "storage": tuple(i.get("storage", ())),
                "parts": tuple(IndexKeyPart(**p) for p in i["parts"]),
                "include": tuple(i["include"]),
                "expression_columns": frozenset(i["expression_columns"]),
            }
        )
        for i in data["indexes"]
    )

    def constraint(c: dict[str, Any]) -> Constraint:
        return Constraint(**{**c, "columns": tuple(c["columns"])})

    return Table(
        **{
            **data,
            "columns": columns,
            "indexes": indexes,
            "constraints": tuple(constraint(c) for c in data["constraints"]),
            "triggers": tuple(data["triggers"]),
            "dependents": tuple(
                Dependent(**{**d, "columns": tuple(d["columns"])}) for d in data["dependents"]
            ),
            "referencing_fks": tuple(constraint(c) for c in data["referencing_fks"]),
            "primary_key": tuple(data["primary_key"]) if data["primary_key"] else None,
            "unique_keys": tuple(tuple(k) for k in data["unique_keys"]),
            "grants": tuple(tuple(g) for g in data.get("grants", ())),
            "column_grants": tuple(tuple(g) for g in data.get("column_grants", ())),
            "properties": _properties_from(data.get("properties")),
        }
    )


def _properties_from(data: dict[str, Any] | None) -> TableProperties:
    """From `_properties`' row or a snapshot (older snapshots have none)."""
    if not data:
        return TableProperties()
    return TableProperties(
        options=tuple(data["options"]),
        comment=data["comment"],
        column_comments=tuple((c, text) for c, text in data["column_comments"]),
        statistics=tuple((c, int(n)) for c, n in data["statistics"]),
        replica_identity=data["replica_identity"],
    )
