"""Connections and the few SQL helpers every module shares.

All identifiers go through psycopg.sql. Expressions from a plan (`up`, `down`, types) are SQL
written by the plan's author and are inserted as SQL on purpose; `plan.check` parses each with
pglast first, so one can never smuggle a second statement in.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# What psycopg's execute() takes among composed statements.
Query = sql.SQL | sql.Composed

MAX_IDENTIFIER = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer names silently
# every trigger pgshift creates starts so: they sort (and fire) after the table's own
TRIGGER_PREFIX = "zz_pgshift_"

# Rendering settings pinned on every connection pgshift opens, so values (and their hashes)
# never depend on a server's or a role's defaults.
PINNED_SETTINGS: dict[str, str] = {
    "TimeZone": "UTC",
    "DateStyle": "ISO",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}


def redact(dsn: str) -> str:
    """The DSN with any password replaced, safe for logs and error messages."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo("", **params)


def application_name(role: str) -> str:
    """`pgshift apply <name> pid 123@host`: what pg_stat_activity shows for our sessions."""
    return f"pgshift {role} pid {os.getpid()}@{socket.gethostname()}"[:63]


def connect(dsn: str, *, role: str = "client", autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection with pinned rendering settings and a telling application_name."""
    options = " ".join(f"-c {k}={v}" for k, v in PINNED_SETTINGS.items())
    return psycopg.connect(
        dsn,
        autocommit=autocommit,
        application_name=application_name(role),
        options=options,
        connect_timeout=10,
    )


@contextmanager
def transaction(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """One explicit transaction on an autocommit connection."""
    with conn.transaction():
        yield conn


def split_name(name: str) -> tuple[str | None, str]:
    """`public.accounts` -> ("public", "accounts"); `accounts` -> (None, "accounts").
    Double-quoted parts keep their case and may hold dots."""
    parts = re.findall(r'"((?:[^"]|"")*)"|([^."]+)', name)
    names = [quoted.replace('""', '"') if quoted else plain.lower() for quoted, plain in parts]
    if len(names) == 1:
        return None, names[0]
    if len(names) == 2:
        return names[0], names[1]
    raise ValueError(f"{name!r} is not a table name: write table or schema.table")


def qualified(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def derived_name(base: str, suffix: str) -> str:
    """`base` + `suffix`, cutting `base` so the whole fits PostgreSQL's 63-byte names."""
    room = MAX_IDENTIFIER - len(suffix.encode())
    cut = base.encode()[:room].decode(errors="ignore")
    return cut + suffix


def prefixed_name(prefix: str, base: str) -> str:
    room = MAX_IDENTIFIER - len(prefix.encode())
    return prefix + base.encode()[:room].decode(errors="ignore")


def render(query: sql.Composable, conn: psycopg.Connection[Any] | None = None) -> str:
    """SQL text exactly as it will be sent, for plan, runbook and logs."""
    return query.as_string(conn)
