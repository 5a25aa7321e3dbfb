"""The demo's table: accounts with realistic-looking rows, made in a few statements.

This is set-up, not a migration, so the rows go in with one INSERT ... SELECT over
generate_series: fast, and nobody is using the table yet.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgshift.db import derived_name

# Mixed case on purpose: plans that normalise emails (lower(email)) must have work to do.
FIRST_NAMES = (
    "Alice", "bob", "Carol", "DAVE", "Erin", "frank", "Grace", "Heidi", "ivan", "Judy",
    "Mallory", "niaj", "Olivia", "Peggy", "Rupert", "sybil", "Trent", "Victor", "Walter", "Zoe",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "jones", "Garcia", "MILLER", "Davis", "Martinez", "lopez", "Wilson", "Anderson",
    "Taylor", "thomas", "Moore", "Jackson", "Martin", "Lee", "PEREZ", "White", "Harris",
)  # fmt: skip
DOMAINS = (
    "Example.com", "example.org", "MAIL.example.net", "Corp.Example.io", "example.co.uk",
    "Shop.EXAMPLE.com", "example.dev",
)  # fmt: skip
STATUSES = ("active", "active", "active", "pending", "suspended", "closed")


def _text_array(values: tuple[str, ...]) -> sql.Composable:
    return sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(map(sql.Literal, values)))


def create_accounts(
    conn: psycopg.Connection[Any],
    rows: int = 200_000,
    *,
    table: str = "accounts",
    schema: str = "public",
    replace: bool = False,
) -> None:
    """Create `schema.table` with `rows` rows, its email and balance indexes, and analyze it.

    `id` comes from the serial's sequence, so the sequence is right for inserts afterwards.
    `replace` drops an existing table of that name first (a demo run again on the same server).
    """
    if rows < 0:
        raise ValueError("rows must be 0 or more")
    name = sql.Identifier(schema, table)
    with conn.transaction():
        if replace:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(name))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                """CREATE TABLE {} (
                    id serial PRIMARY KEY,
                    balance integer NOT NULL,
                    email text NOT NULL,
                    status text,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz
                )"""
            ).format(name)
        )
        # The row number is in every address, so emails are distinct without a unique index.
        # Indexes are built after the load: one sort each instead of row-by-row maintenance.
        conn.execute(
            sql.SQL(
                """INSERT INTO {name} (balance, email, status, created_at, updated_at)
                SELECT (random() * 1000000)::integer,
                       f[1 + i % {nf}] || '.' || l[1 + (i / {nf}) % {nl}] || i
                           || '@' || d[1 + (i * 7919) % {nd}],
                       CASE WHEN i % 17 = 0 THEN NULL ELSE s[1 + (i * 31) % {ns}] END,
                       c,
                       CASE WHEN i % 3 = 0 THEN NULL ELSE c + random() * (now() - c) END
                FROM (SELECT i, now() - random() * interval '1000 days' AS c
                      -- bigint: i * 7919 and i * 31 overflow integer past ~271,000 rows
                      FROM generate_series(1::bigint, {rows}) AS i) AS g,
                     (SELECT {first} AS f, {last} AS l, {domains} AS d, {statuses} AS s) AS a"""
            ).format(
                name=name,
                rows=sql.Literal(rows),
                nf=sql.Literal(len(FIRST_NAMES)),
                nl=sql.Literal(len(LAST_NAMES)),
                nd=sql.Literal(len(DOMAINS)),
                ns=sql.Literal(len(STATUSES)),
                first=_text_array(FIRST_NAMES),
                last=_text_array(LAST_NAMES),
                domains=_text_array(DOMAINS),
                statuses=_text_array(STATUSES),
            )
        )
        for column in ("email", "balance"):
            index = sql.Identifier(derived_name(table, f"_{column}_idx"))
            conn.execute(
                sql.SQL("CREATE INDEX {} ON {} ({})").format(index, name, sql.Identifier(column))
            )
    conn.execute(sql.SQL("ANALYZE {}").format(name))
