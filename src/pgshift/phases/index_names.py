"""At contract (`new_table`), the new table's indexes and constraints take the old names.

`create` had to name them apart (`accounts_v2_pkey`) while the old table held the live names;
once contract drops the old table, each new index that matches exactly one old index, and is
matched by no other, takes that index's name (an index-backed constraint is renamed, which
renames its index). A match: same uniqueness, primary-key-ness, access method, column names in
order, sort options, expressions and predicate, and both backed by a constraint or neither.
The key's type may differ (that is often the point of the migration). Constraints without an
index (CHECK, foreign keys, NOT NULL on PostgreSQL 18) match on their definition's text. The pairs are read before
the DROP TABLE, in the same transaction, and travel to the renames in a transaction-local
setting.
"""

from __future__ import annotations

from psycopg import sql

from pgshift.db import Query

SETTING = "pgshift.index_names"

_PAIRS = """
WITH idx AS (
    SELECT i.indexrelid, i.indrelid, c.relname, i.indisunique, i.indisprimary, c.relam,
           (SELECT array_agg(coalesce(a.attname, '') ORDER BY k.n)
              FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n)
              LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
             AS columns,
           i.indoption::int2[] AS options,
           pg_get_expr(i.indexprs, i.indrelid) AS expressions,
           pg_get_expr(i.indpred, i.indrelid) AS predicate,
           (SELECT conname FROM pg_constraint
             WHERE conindid = i.indexrelid AND conrelid = i.indrelid
               AND contype IN ('p', 'u', 'x')) AS constraint_name
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
     WHERE i.indrelid IN ({old}, {live})
), pairs AS (
    SELECT n.relname, n.constraint_name, o.relname AS old_relname,
           o.constraint_name AS old_constraint,
           count(*) OVER (PARTITION BY n.indexrelid) AS old_matches,
           count(*) OVER (PARTITION BY o.indexrelid) AS new_matches
      FROM idx n JOIN idx o
        ON n.indrelid = {live} AND o.indrelid = {old}
       AND (n.indisunique, n.indisprimary, n.relam, n.columns, n.options)
         = (o.indisunique, o.indisprimary, o.relam, o.columns, o.options)
       AND n.expressions IS NOT DISTINCT FROM o.expressions
       AND n.predicate IS NOT DISTINCT FROM o.predicate
       AND (n.constraint_name IS NULL) = (o.constraint_name IS NULL)
), constraints AS (
    -- constraints without an index (CHECK, foreign keys, and NOT NULL from PostgreSQL 18 on)
    SELECT conrelid, conname, contype, pg_get_constraintdef(oid) AS definition
      FROM pg_constraint
     WHERE conrelid IN ({old}, {live}) AND contype IN ('c', 'f', 'n')
), constraint_pairs AS (
    SELECT n.conname, o.conname AS old_conname,
           count(*) OVER (PARTITION BY n.conname) AS old_matches,
           count(*) OVER (PARTITION BY o.conname) AS new_matches
      FROM constraints n JOIN constraints o
        ON n.conrelid = {live} AND o.conrelid = {old}
       AND n.contype = o.contype AND n.definition = o.definition
), renames AS (
    SELECT relname AS sort_name,
           CASE WHEN constraint_name IS NOT NULL
                THEN format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', {live}::regclass,
                            constraint_name, old_constraint)
                ELSE format('ALTER INDEX %I.%I RENAME TO %I',
                            (SELECT nspname FROM pg_namespace n JOIN pg_class c
                                ON c.relnamespace = n.oid WHERE c.oid = {live}),
                            relname, old_relname)
           END AS statement
      FROM pairs
     WHERE old_matches = 1 AND new_matches = 1
       AND (relname <> old_relname OR constraint_name IS DISTINCT FROM old_constraint)
    UNION ALL
    SELECT conname, format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', {live}::regclass,
                           conname, old_conname)
      FROM constraint_pairs
     WHERE old_matches = 1 AND new_matches = 1 AND conname <> old_conname
)
SELECT coalesce(jsonb_agg(statement ORDER BY sort_name), '[]') FROM renames
"""


def record_index_names(old: sql.Identifier, live: sql.Identifier) -> Query:
    """Before the old table is dropped: which new index takes which old name."""
    old_text = sql.Literal(old.as_string())
    return sql.SQL(
        """DO $pgshift$
DECLARE
  renames jsonb := '[]';
BEGIN
  IF to_regclass({old_text}) IS NOT NULL THEN
    SELECT ({pairs}) INTO renames;
  END IF;
  PERFORM set_config({setting}, renames::text, true);
END
$pgshift$"""
    ).format(
        old_text=old_text,
        pairs=sql.SQL(_PAIRS).format(
            old=sql.SQL("{}::regclass::oid").format(old_text),
            live=sql.SQL("{}::regclass::oid").format(sql.Literal(live.as_string())),
        ),
        setting=sql.Literal(SETTING),
    )


def take_index_names() -> Query:
    """After the old table is dropped: the renames `record_index_names` found."""
    return sql.SQL(
        """DO $pgshift$
DECLARE
  statement text;
BEGIN
  FOR statement IN SELECT jsonb_array_elements_text(
      coalesce(nullif(current_setting({setting}, true), ''), '[]')::jsonb) LOOP
    EXECUTE statement;
  END LOOP;
  PERFORM set_config({setting}, '', true);
END
$pgshift$"""
    ).format(setting=sql.Literal(SETTING))
