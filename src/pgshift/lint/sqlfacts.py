"""What the SQL text says about names, types and expressions: the facts the rules share."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pglast import ast, enums
from pglast.stream import RawStream


def qualified(schema: str | None, rel: str) -> str:
    return f"{schema}.{rel}" if schema else rel


def range_var_name(rv: ast.RangeVar | None) -> str:
    return qualified(rv.schemaname, rv.relname or "") if rv is not None else "?"


def strings(parts: Iterable[object]) -> list[str]:
    return [p.sval for p in parts if isinstance(p, ast.String) and p.sval is not None]


class TableSet:
    """Table names matched the way a reader would: a schema on both sides must agree."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._qualified: set[str] = set()
        self._unqualified: set[str] = set()
        self._any: set[str] = set()
        for name in names:
            schema, _, rel = name.lower().rpartition(".")
            self.add(schema or None, rel)

    def add(self, schema: str | None, rel: str) -> None:
        rel = rel.lower()
        self._any.add(rel)
        if schema:
            self._qualified.add(f"{schema.lower()}.{rel}")
        else:
            self._unqualified.add(rel)

    def add_range_var(self, rv: ast.RangeVar | None) -> None:
        if rv is not None and rv.relname:
            self.add(rv.schemaname, rv.relname)

    def contains(self, schema: str | None, rel: str) -> bool:
        rel = rel.lower()
        if schema:
            return f"{schema.lower()}.{rel}" in self._qualified or rel in self._unqualified
        return rel in self._any

    def contains_range_var(self, rv: ast.RangeVar | None) -> bool:
        if rv is None or not rv.relname:
            return False
        return self.contains(rv.schemaname, rv.relname)


# --- expressions and types ---------------------------------------------------------------------


def walk(value: object) -> Iterator[ast.Node]:
    if isinstance(value, ast.Node):
        yield value
        for attribute in value:
            yield from walk(getattr(value, attribute))
    elif isinstance(value, tuple):
        for item in value:
            yield from walk(item)


# Immutable or stable functions seen in column defaults: a default built only from these is
# evaluated once by ADD COLUMN (PostgreSQL 11+), so no rewrite. Anything else might be volatile.
# fmt: off
NON_VOLATILE = frozenset({
    "now", "transaction_timestamp", "statement_timestamp", "timezone", "date_trunc",
    "date_part", "extract", "make_date", "make_time", "make_timestamp", "make_timestamptz",
    "make_interval", "to_timestamp", "to_date", "to_char", "to_number", "lower", "upper",
    "initcap", "trim", "btrim", "ltrim", "rtrim", "lpad", "rpad", "length", "char_length",
    "octet_length", "substr", "substring", "left", "right", "replace", "concat", "concat_ws",
    "format", "md5", "sha256", "encode", "decode", "split_part", "repeat", "reverse", "abs",
    "round", "trunc", "ceil", "ceiling", "floor", "mod", "power", "sqrt", "greatest", "least",
    "coalesce", "nullif", "jsonb_build_object", "jsonb_build_array", "json_build_object",
    "json_build_array", "to_jsonb", "to_json", "array_fill", "int4range", "int8range",
    "numrange", "tsrange", "tstzrange", "daterange", "current_setting", "current_schema",
    "current_database", "uuid_nil",
})
VOLATILE = frozenset({
    "random", "random_normal", "clock_timestamp", "timeofday", "gen_random_uuid",
    "gen_random_bytes", "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4", "uuidv4",
    "uuidv7", "nextval", "setval", "txid_current", "pg_current_xact_id",
})
# fmt: on
SERIAL_TYPES = frozenset({"smallserial", "serial", "bigserial", "serial2", "serial4", "serial8"})


def possibly_volatile_call(expr: object) -> str | None:
    """The first function in `expr` not known to be immutable or stable, or None."""
    for node in walk(expr):
        if isinstance(node, ast.FuncCall):
            parts = [part.lower() for part in strings(node.funcname or ())]
            if not parts:
                continue
            schema_ok = len(parts) == 1 or parts[0] == "pg_catalog"
            if not schema_ok or parts[-1] not in NON_VOLATILE:
                return ".".join(parts)
    return None


@dataclass(frozen=True)
class ColumnType:
    name: str
    mods: tuple[int, ...] | None  # None when a modifier is not an integer constant
    dims: int


def column_type(type_name: ast.TypeName | None) -> ColumnType:
    if type_name is None:
        return ColumnType("", None, 0)
    parts = [part.lower() for part in strings(type_name.names or ())]
    if parts[:1] == ["pg_catalog"]:
        parts = parts[1:]
    mods: list[int] | None = []
    for mod in type_name.typmods or ():
        if (
            mods is not None
            and isinstance(mod, ast.A_Const)
            and isinstance(mod.val, ast.Integer)
            and mod.val.ival is not None
        ):
            mods.append(mod.val.ival)
        else:
            mods = None
    return ColumnType(
        ".".join(parts), None if mods is None else tuple(mods), len(type_name.arrayBounds or ())
    )


def type_text(type_name: ast.TypeName | None) -> str:
    """A type as a user would write it (`bigint`, not `pg_catalog.int8`)."""
    if type_name is None:
        return "?"
    try:
        return RawStream()(type_name)
    except Exception:  # display only: never let the printer fail a lint
        return ".".join(strings(type_name.names or ()))


def binary_coercible(old: ColumnType, new: ColumnType) -> bool:
    """Type changes PostgreSQL makes without a rewrite, decided from both declared types."""
    if old.mods is None or new.mods is None or old.dims != new.dims:
        return False
    if old == new:
        return True
    if old.dims:
        return False
    if (old.name, new.name) == ("varchar", "text") or (old.name, new.name, new.mods) == (
        "text",
        "varchar",
        (),
    ):
        return True
    if old.name == new.name and old.name in ("varchar", "varbit"):
        return not new.mods or (bool(old.mods) and new.mods[0] >= old.mods[0])
    if old.name == new.name == "numeric":
        if not new.mods:
            return True
        if not old.mods:
            return False
        old_scale = old.mods[1] if len(old.mods) > 1 else 0
        new_scale = new.mods[1] if len(new.mods) > 1 else 0
        return new_scale == old_scale and new.mods[0] >= old.mods[0]
    return False


def not_null_columns(expr: object) -> set[str]:
    """Columns a CHECK expression proves NOT NULL: `col IS NOT NULL`, alone or AND-ed."""
    if (
        isinstance(expr, ast.NullTest)
        and expr.nulltesttype == enums.NullTestType.IS_NOT_NULL
        and isinstance(expr.arg, ast.ColumnRef)
    ):
        fields = strings(expr.arg.fields or ())
        return {fields[-1]} if fields else set()
    if isinstance(expr, ast.BoolExpr) and expr.boolop == enums.BoolExprType.AND_EXPR:
        return {column for arg in expr.args or () for column in not_null_columns(arg)}
    return set()


def option_on(options: Iterable[object] | None, name: str) -> bool:
    """Whether a `(name [boolean])` option of VACUUM or REINDEX is on."""
    for option in options or ():
        if isinstance(option, ast.DefElem) and option.defname == name:
            arg = option.arg
            if isinstance(arg, ast.String):
                return (arg.sval or "").lower() not in ("false", "off", "0", "no")
            if isinstance(arg, ast.Integer):
                return arg.ival != 0
            if isinstance(arg, ast.Boolean):
                return bool(arg.boolval)
            return True
    return False


def is_zero_timeout(args: Iterable[object] | None) -> bool:
    for arg in args or ():
        if isinstance(arg, ast.A_Const):
            if isinstance(arg.val, ast.Integer):
                return arg.val.ival == 0
            if isinstance(arg.val, ast.Float | ast.String):
                value = arg.val.fval if isinstance(arg.val, ast.Float) else arg.val.sval
                return re.fullmatch(r"\s*0*\.?0*\s*[a-z]*\s*", value or "") is not None
    return False


def range_var(parts: list[str]) -> ast.RangeVar:
    schema = parts[-2] if len(parts) > 1 else None
    return ast.RangeVar(schemaname=schema, relname=parts[-1])
