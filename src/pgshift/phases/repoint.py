"""What reads a table by its OID must follow its *name* across a table swap.

Views, and row security policies of other tables, hold the OID of the table they read: renamed
away, the table takes them along. So the swap transaction, before its renames, records each
such object's full definition (with an empty search_path, so every name in it is qualified)
and drops it; after the renames it creates it again from that text, where the live name now
means the other table. Views that read those views are re-created too, in dependency order,
with their owner, grants, comments, column defaults, rules and triggers. On the forward swap the
live table's own policies are copied onto the table taking its name, with its row security
switches. The table's own triggers move with the name (`TriggerMove`): created on the table
taking it with their enabled state, then disabled on the table giving it up (dropped, on the
swap back), so a write the copy trigger applies there does not fire them twice.

Definitions are read inside the swap, not at plan time: a view changed since then is re-created
as it is now. Between the two statements they travel in a transaction-local setting.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from pgshift.catalog import VIEW_CLOSURE
from pgshift.db import TRIGGER_PREFIX, Query

SETTING = "pgshift.repoint"

_GRANTEE = (
    "CASE WHEN {a}.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid({a}.grantee)) END"
)
_OPTION = "CASE WHEN {a}.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END"

# One policy's CREATE POLICY, on the table named by the text `{on}`.
_POLICY_DDL = """format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s', p.polname, {on},
       CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
       CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                     WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
       (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END,
                          ', ') FROM unnest(p.polroles) r),
       coalesce(' USING (' || pg_get_expr(p.polqual, p.polrelid) || ')', ''),
       coalesce(' WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')', ''))"""

# One row per object to carry across the swap: name, depth (drop deepest first, create
# shallowest first), what refuses it (NULL when it can be carried), the statement that drops
# it, the statements that create it again, and a plan-time probe that creates it as a
# temporary object over a temporary table standing in for the table taking the live name.
CAPTURE = (
    """
WITH views AS ({closure}), named AS (
    SELECT c.oid, c.relkind, c.relowner, c.reloptions, c.relacl, c.relname, n.nspname, v.depth,
           format('%I.%I', n.nspname, c.relname) AS name
      FROM views v JOIN pg_class c ON c.oid = v.oid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname <> {excluded}
)
SELECT v.name, v.depth,
       CASE WHEN v.relkind = 'm' THEN format('materialized view %s reads %s: it cannot follow'
                 ' the table swap; drop it before cutover and create it again after, with sql'
                 ' phases', v.name, {target}::regclass)
            WHEN v.relkind <> 'v' THEN format('a rule of table %s reads %s: drop it before'
                 ' cutover and create it again after, with sql phases', v.name, {target}::regclass)
            WHEN v.nspname LIKE 'pg\\_temp\\_%' THEN format('temporary view %s of another session'
                 ' reads %s: end that session before cutover', v.name, {target}::regclass)
            -- dropping a view and giving it back to its owner takes that owner's rights
            WHEN NOT pg_has_role(v.relowner, 'MEMBER') THEN format('view %s belongs to %s:'
                 ' cutover drops and creates it again, so run pgshift as that role, a member of'
                 ' it or a superuser', v.name, pg_get_userbyid(v.relowner))
       END AS refuse,
       format('DROP VIEW %s', v.name) AS drop,
       jsonb_build_array(format('CREATE VIEW %s%s AS %s', v.name,
                         coalesce(' WITH (' || array_to_string(v.reloptions, ', ') || ')', ''),
                         rtrim(pg_get_viewdef(v.oid), ';')))
       || coalesce((SELECT jsonb_agg(format('GRANT %s ON %s TO %s%s', a.privilege_type, v.name, """
    + _GRANTEE.format(a="a")
    + ", "
    + _OPTION.format(a="a")
    + """))
                      FROM aclexplode(v.relacl) a WHERE a.grantee <> v.relowner), '[]')
       || coalesce((SELECT jsonb_agg(format('GRANT %s (%I) ON %s TO %s%s', a.privilege_type,
                                            att.attname, v.name, """
    + _GRANTEE.format(a="a")
    + ", "
    + _OPTION.format(a="a")
    + """))
                      FROM pg_attribute att, aclexplode(att.attacl) a
                     WHERE att.attrelid = v.oid AND a.grantee <> v.relowner), '[]')
       || coalesce((SELECT jsonb_agg(format('ALTER VIEW %s ALTER COLUMN %I SET DEFAULT %s', v.name,
                                            att.attname, pg_get_expr(d.adbin, d.adrelid)))
                      FROM pg_attrdef d JOIN pg_attribute att
                        ON att.attrelid = d.adrelid AND att.attnum = d.adnum
                     WHERE d.adrelid = v.oid), '[]')
       || coalesce((SELECT jsonb_agg(CASE WHEN d.objsubid = 0
                            THEN format('COMMENT ON VIEW %s IS %L', v.name, d.description)
                            ELSE format('COMMENT ON COLUMN %s.%I IS %L', v.name,
                                        (SELECT attname FROM pg_attribute WHERE attrelid = v.oid
                                            AND attnum = d.objsubid), d.description) END)
                      FROM pg_description d
                     WHERE d.classoid = 'pg_class'::regclass AND d.objoid = v.oid), '[]')
       || coalesce((SELECT jsonb_agg(pg_get_ruledef(r.oid) ORDER BY r.rulename)
                      FROM pg_rewrite r WHERE r.ev_class = v.oid AND r.rulename <> '_RETURN'),
                   '[]')
       || coalesce((SELECT jsonb_agg(pg_get_triggerdef(t.oid) ORDER BY t.tgname)
                      FROM pg_trigger t WHERE t.tgrelid = v.oid AND NOT t.tgisinternal), '[]')
       || jsonb_build_array(format('ALTER VIEW %s OWNER TO %I', v.name,
                                   pg_get_userbyid(v.relowner))) AS "create",
       -- (not tried when it has the table's own name: the stand-in table holds that name)
       CASE WHEN v.relname <> (SELECT relname FROM pg_class WHERE oid = {target}) THEN
       jsonb_build_array(format('CREATE TEMPORARY VIEW %I%s AS %s', v.relname,
              coalesce(' WITH (' || array_to_string(v.reloptions, ', ') || ')', ''),
              rtrim(pg_get_viewdef(v.oid), ';'))) END AS probe
  FROM named v
UNION ALL
-- policies of other tables reading the table: created last, so dropped first
SELECT format('policy %I on %s', p.polname, p.polrelid::regclass), 1000,
       CASE WHEN NOT pg_has_role((SELECT relowner FROM pg_class WHERE oid = p.polrelid), 'MEMBER')
            THEN format('policy %I on %s reads %s: cutover creates it again, which takes the'
                 ' rights of %s''s owner; run pgshift as that role, a member of it or a'
                 ' superuser', p.polname, p.polrelid::regclass, {target}::regclass,
                 p.polrelid::regclass) END,
       format('DROP POLICY %I ON %s', p.polname, p.polrelid::regclass),
       jsonb_build_array("""
    + _POLICY_DDL.format(on="p.polrelid::regclass")
    + """),
       NULL
  FROM pg_policy p
 WHERE p.polrelid <> {target} AND p.oid IN (
       SELECT objid FROM pg_depend WHERE classid = 'pg_policy'::regclass
          AND refclassid = 'pg_class'::regclass AND refobjid = {target})
UNION ALL
-- the table's own policies and row security switches, for the table taking its name
SELECT format('row security of %s', {target}::regclass), 1001, NULL, NULL,
       coalesce((SELECT jsonb_agg("""
    + _POLICY_DDL.format(on="{target}::regclass")
    + """ ORDER BY p.polname)
                   FROM pg_policy p WHERE p.polrelid = {target}), '[]')
       || jsonb_build_array(format('ALTER TABLE %s %s ROW LEVEL SECURITY, %s ROW LEVEL SECURITY',
               {target}::regclass,
               CASE WHEN c.relrowsecurity THEN 'ENABLE' ELSE 'DISABLE' END,
               CASE WHEN c.relforcerowsecurity THEN 'FORCE' ELSE 'NO FORCE' END)),
       coalesce((SELECT jsonb_agg("""
    + _POLICY_DDL.format(on="quote_ident(c.relname)")
    + """ ORDER BY p.polname) FROM pg_policy p WHERE p.polrelid = {target}), '[]')
  FROM pg_class c
 WHERE {copy_policies} AND c.oid = {target}
UNION ALL
-- the table's own triggers, for the table taking its name, with their enabled state; then
-- switched off (or dropped) on the table giving the name up, so that a write the copy trigger
-- applies there does not fire them a second time (an audit row twice, a notification twice)
SELECT format('trigger %I of %s', t.tgname, {target}::regclass), 1002, NULL, NULL,
       jsonb_build_array(format('DROP TRIGGER IF EXISTS %I ON %s', t.tgname, {target}::regclass),
                         pg_get_triggerdef(t.oid))
       || CASE t.tgenabled
            WHEN 'D' THEN jsonb_build_array(format('ALTER TABLE %s DISABLE TRIGGER %I',
                                                   {target}::regclass, t.tgname))
            WHEN 'R' THEN jsonb_build_array(format('ALTER TABLE %s ENABLE REPLICA TRIGGER %I',
                                                   {target}::regclass, t.tgname))
            WHEN 'A' THEN jsonb_build_array(format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I',
                                                   {target}::regclass, t.tgname))
            ELSE '[]' END
       || jsonb_build_array(CASE WHEN {then_drop}
                                 THEN format('DROP TRIGGER %I ON %s', t.tgname, {other})
                                 ELSE format('ALTER TABLE %s DISABLE TRIGGER %I', {other}, t.tgname)
                            END),
       -- pretty: the table's name unqualified where visible (the plain form always qualifies)
       jsonb_build_array(pg_get_triggerdef(t.oid, true))
  FROM pg_trigger t
 WHERE {move_triggers} AND t.tgrelid = {target} AND NOT t.tgisinternal AND t.tgparentid = 0
   AND NOT starts_with(t.tgname, {ours})
"""
)


def closure_query(table: sql.Identifier, columns: tuple[str, ...] | None) -> Query:
    """VIEW_CLOSURE for `table`: every view reading it, or (with `columns`) those reading one
    of these columns, and the views over them."""
    target = sql.SQL("{}::regclass::oid").format(sql.Literal(table.as_string()))
    first: Query = sql.SQL("true")
    if columns is not None:
        first = sql.SQL(
            "d.refobjsubid IN (SELECT attnum FROM pg_attribute WHERE attrelid = {} AND attname"
            " = ANY({}))"
        ).format(target, sql.Literal(list(columns)))
    return sql.SQL(VIEW_CLOSURE).format(target=target, first=first)


@dataclass(frozen=True)
class TriggerMove:
    """The table's own triggers go to the table taking its name; on `other` (the table giving
    the name up, as it is called after the renames) they are disabled, or with `drop`,
    dropped."""

    other: sql.Identifier
    drop: bool


def capture_query(
    table: sql.Identifier,
    excluded_schema: str,
    copy_policies: bool,
    columns: tuple[str, ...] | None = None,
    triggers: TriggerMove | None = None,
) -> Query:
    """The objects to carry across a swap of `table` (see CAPTURE); with `columns`, only the
    views reading those columns (the rest keep reading what they read)."""
    return sql.SQL(CAPTURE).format(
        closure=closure_query(table, columns),
        target=sql.SQL("{}::regclass::oid").format(sql.Literal(table.as_string())),
        excluded=sql.Literal(excluded_schema),
        copy_policies=sql.Literal(copy_policies),
        move_triggers=sql.Literal(triggers is not None),
        then_drop=sql.Literal(triggers is not None and triggers.drop),
        other=sql.Literal(triggers.other.as_string() if triggers else ""),
        ours=sql.Literal(TRIGGER_PREFIX),
    )


def capture_and_drop(
    table: sql.Identifier,
    excluded_schema: str,
    copy_policies: bool,
    columns: tuple[str, ...] | None = None,
    triggers: TriggerMove | None = None,
) -> Query:
    """Before the renames: record every object reading `table` (by OID) and drop it. With
    `copy_policies`, the table's own policies are recorded too, to be created on whichever
    table holds the name afterwards; dropping the policies that table has is the caller's
    (`drop_policies`)."""
    return sql.SQL(
        """DO $pgshift$
DECLARE
  saved text := current_setting('search_path');
  objects jsonb;
  refused text;
  statement text;
BEGIN
  PERFORM set_config('search_path', '', true);
  SELECT coalesce(jsonb_agg(jsonb_build_object('name', name, 'depth', depth, 'drop', drop,
                                               'create', "create")), '[]'),
         min(refuse)
    INTO objects, refused
    FROM ({capture}) captured;
  IF refused IS NOT NULL THEN
    RAISE EXCEPTION '%', refused;
  END IF;
  PERFORM set_config({setting}, objects::text, true);
  FOR statement IN SELECT value->>'drop' FROM jsonb_array_elements(objects)
                    WHERE value->>'drop' IS NOT NULL
                    ORDER BY (value->>'depth')::int DESC LOOP
    EXECUTE statement;
  END LOOP;
  PERFORM set_config('search_path', saved, true);
END
$pgshift$"""
    ).format(
        capture=capture_query(table, excluded_schema, copy_policies, columns, triggers),
        setting=sql.Literal(SETTING),
    )


def drop_policies(table: sql.Identifier) -> Query:
    """Every row security policy of `table`: the copies an earlier cutover made, before the
    live table's current ones are copied again."""
    return sql.SQL(
        """DO $pgshift$
DECLARE
  statement text;
BEGIN
  FOR statement IN SELECT format('DROP POLICY %I ON %s', polname, polrelid::regclass)
                     FROM pg_policy WHERE polrelid = {table}::regclass LOOP
    EXECUTE statement;
  END LOOP;
END
$pgshift$"""
    ).format(table=sql.Literal(table.as_string()))


def recreate() -> Query:
    """After the renames: create what `capture_and_drop` recorded, shallowest first; the names
    in the definitions now mean the table that took the live name."""
    return sql.SQL(
        """DO $pgshift$
DECLARE
  saved text := current_setting('search_path');
  item jsonb;
  statement text;
  object text;
BEGIN
  PERFORM set_config('search_path', '', true);
  FOR item IN SELECT value FROM jsonb_array_elements(
                coalesce(nullif(current_setting({setting}, true), ''), '[]')::jsonb)
              ORDER BY (value->>'depth')::int LOOP
    object := item->>'name';
    FOR statement IN SELECT jsonb_array_elements_text(item->'create') LOOP
      EXECUTE statement;
    END LOOP;
  END LOOP;
  PERFORM set_config({setting}, '', true);
  PERFORM set_config('search_path', saved, true);
EXCEPTION WHEN OTHERS THEN
  RAISE EXCEPTION '% cannot be created again on the swapped table: %', object, SQLERRM;
END
$pgshift$"""
    ).format(setting=sql.Literal(SETTING))
