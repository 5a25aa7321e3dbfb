"""Keyset walks over a table's key: the pieces every batched pass over a table shares (the
backfill, dual_write's data check): row comparisons on the whole key, so composite keys page
correctly, and the queries that find a batch's upper key."""

from __future__ import annotations

from psycopg import sql

from pgshift.catalog import Table
from pgshift.db import Query


def key_range(table: Table, key: tuple[str, ...]) -> dict[str, Query]:
    """The key columns `(k1, k2)`, their order, typed parameters and their values as text."""
    cols = sql.SQL(", ").join(sql.Identifier(k) for k in key)
    typed = sql.SQL(", ").join(
        sql.SQL("{}::{}").format(sql.Placeholder(), sql.SQL(table.columns[k].type)) for k in key
    )
    as_text = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in key)
    return {
        "cols": sql.SQL("({})").format(cols),
        "order": cols,
        "params": sql.SQL("({})").format(typed),
        "as_text": as_text,
    }


def bounds_queries(table: Table, key: tuple[str, ...]) -> tuple[Query, Query]:
    """(after a key, from the start): the key `size` rows ahead, as text, or no row at the end.

    ORDER BY names the key columns qualified: a bare `id` would mean the output column
    `id::text` (also named `id`), a sort by text over every later row instead of an index walk.
    """
    k = key_range(table, key)
    k["order"] = sql.SQL(", ").join(sql.Identifier(table.schema, table.name, c) for c in key)
    after = sql.SQL(
        "SELECT {as_text} FROM {t} WHERE {cols} > {params} ORDER BY {order} OFFSET {n} LIMIT 1"
    ).format(t=table.qualified, n=sql.Placeholder(), **k)
    first = sql.SQL("SELECT {as_text} FROM {t} ORDER BY {order} OFFSET {n} LIMIT 1").format(
        t=table.qualified, n=sql.Placeholder(), **k
    )
    return after, first
