"""dual_write's first step: every existing row's new values, checked before a trigger exists.

Once the dual-write trigger is in, the plan's expressions run inside the application's own
writes, and one that fails on a row (`v * 10000` out of `integer`'s range, a text longer than
`varchar(3)`, NULL into a NOT NULL column of the new table) fails the application's write of
that row. So before the trigger is installed, the same values are computed for every existing
row and assigned to the new types exactly as the trigger will assign them: PL/pgSQL variables
of the new column types (typmod included) take each value with PostgreSQL's assignment
coercion, so `varchar(3)` rejects a longer text instead of cutting it as a cast would. It runs
as a DO block per keyset batch: read only, no temporary table, no subtransaction; the runner is
engine/data_check.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from psycopg import sql

from pgshift.catalog import Table
from pgshift.db import Query
from pgshift.phases.base import CompileContext, DataCheckStep
from pgshift.phases.columns_shape import ColumnsShape
from pgshift.phases.keys import bounds_queries, key_range
from pgshift.phases.table_shape import TableShape

# the DO block leaves the number of rows it read here (transaction-local)
CHECKED_ROWS_SETTING = "pgshift.checked_rows"


@dataclass(frozen=True)
class Assigned:
    """One new column as the trigger fills it: its value's SQL over the live row, its type,
    and for a NOT NULL column of a new table, that table's name (for PostgreSQL's message)."""

    column: str
    expression: str
    type: str
    not_null_in: str | None = None


def check_statement(
    table: sql.Identifier, assigned: tuple[Assigned, ...]
) -> Callable[[Query, tuple[int, ...]], Query]:
    """The DO block checking the columns at the given positions over a key condition."""

    def statement(condition: Query, only: tuple[int, ...]) -> Query:
        picked = [(i, assigned[i]) for i in only]

        def value(i: int) -> sql.Identifier:
            return sql.Identifier(f"pgshift_{i + 1}")

        def variable(i: int) -> sql.Identifier:
            return sql.Identifier(f"_pgshift_{i + 1}")

        # a variable's initial value is assigned like any assignment: a domain's constraints
        # and NOT NULL, a typmod, all checked (and a NOT NULL domain is never left NULL)
        declare = sql.SQL("").join(
            sql.SQL("      {} {} := _pgshift_row.{};\n").format(
                variable(i), sql.SQL(a.type), value(i)
            )
            for i, a in picked
        )
        nulls = sql.SQL("").join(
            sql.SQL(
                "      IF num_nulls({}) > 0 THEN\n"
                "        RAISE EXCEPTION USING ERRCODE = 'not_null_violation', MESSAGE = {};\n"
                "      END IF;\n"
            ).format(
                variable(i),
                sql.Literal(
                    f'null value in column "{a.column}" of relation "{a.not_null_in}"'
                    " violates not-null constraint"
                ),
            )
            for i, a in picked
            if a.not_null_in is not None
        )
        body = sql.SQL(
            "\n#variable_conflict use_column\n"
            "DECLARE\n"
            "  _pgshift_row record;\n"
            "  _pgshift_rows bigint := 0;\n"
            "BEGIN\n"
            "  FOR _pgshift_row IN SELECT {values} FROM {table} WHERE {condition} LOOP\n"
            "    DECLARE\n{declare}    BEGIN\n{nulls}      NULL;\n    END;\n"
            "    _pgshift_rows := _pgshift_rows + 1;\n"
            "  END LOOP;\n"
            "  PERFORM set_config({setting}, _pgshift_rows::text, true);\n"
            "END\n"
        ).format(
            values=sql.SQL(", ").join(
                # the plan's own SQL, as the trigger and the backfill run it
                sql.SQL("({}) AS {}").format(sql.SQL(a.expression), value(i))
                for i, a in picked
            ),
            table=table,
            condition=condition,
            declare=declare,
            nulls=nulls,
            setting=sql.Literal(CHECKED_ROWS_SETTING),
        )
        return sql.SQL("DO {}").format(sql.Literal(body.as_string()))

    return statement


def data_check_step(ctx: CompileContext) -> DataCheckStep:
    """The check of `up` (`columns`) or of the `new_table.columns` mappings over every row."""
    table: Table = ctx.table
    if ctx.plan.target == "new_table":
        shape: TableShape = ctx.shape
        new = shape.new
        assigned = tuple(
            Assigned(
                column=name,
                expression=expression,
                type=new.columns[name].type,
                not_null_in=new.name if new.columns[name].not_null else None,
            )
            for name, expression in shape.forward.items()
        )
        key = shape.key
        what = "new_table.columns"
        description = (
            f"check every row's new_table.columns against {new.display}'s column types and"
            " NOT NULL, read only, before the trigger"
        )
    else:
        columns: ColumnsShape = ctx.shape
        assigned = tuple(Assigned(c.name, c.up, c.type) for c in columns.columns)
        key = columns.key
        what = "up"
        description = (
            "check every row's `up` against the new column types, read only, before the trigger"
        )
    k = key_range(table, key)
    after, first = bounds_queries(table, key)
    return DataCheckStep(
        description=description,
        what=what,
        table=table.qualified,
        key=key,
        columns=tuple(a.column for a in assigned),
        statement=check_statement(table.qualified, assigned),
        rows_setting=CHECKED_ROWS_SETTING,
        count=lambda condition: sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
            table.qualified, condition
        ),
        key_columns=k["cols"],
        key_types=tuple(table.columns[c].type for c in key),
        bounds=after,
        first_bounds=first,
    )
