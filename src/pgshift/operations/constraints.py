"""The steps several operations share: a constraint added NOT VALID then validated in its own
transaction, and NOT NULL set through a validated check (so SET NOT NULL skips its scan)."""

from __future__ import annotations

from dataclasses import replace

from psycopg import sql

from pgshift.catalog import Table
from pgshift.db import Query, derived_name
from pgshift.operations.base import (
    BaseOperation,
    alter,
    constraint_query,
    drop_constraint,
    not_null_query,
)
from pgshift.phases.base import LockLevel, SqlStep, exists_query


class ConstraintAddedWhereAtSays(BaseOperation):
    """A constraint the application's writes feel (a CHECK, a FOREIGN KEY): its steps run at
    expand or at contract, as the spec's `at` says; expand's rollback drops it again."""

    kind = ""  # as the steps name it: "CHECK", "FOREIGN KEY"
    drop_lock: LockLevel = "ACCESS EXCLUSIVE"

    def _steps(self) -> list[SqlStep]:
        raise NotImplementedError

    def expand(self) -> list[SqlStep]:
        return self._steps() if self.spec.at == "expand" else []

    def expand_rollback(self) -> list[SqlStep]:
        if self.spec.at != "expand":
            return []
        return [
            SqlStep(
                description=f"drop {self.kind} {self.spec.name}",
                statements=(drop_constraint(self.table, self.spec.name),),
                lock=self.drop_lock,
            )
        ]

    def contract(self) -> list[SqlStep]:
        return self._steps() if self.spec.at == "contract" else []


def validated_constraint(
    table: Table, name: str, definition: Query, what: str, lock: LockLevel = "ACCESS EXCLUSIVE"
) -> list[SqlStep]:
    """ADD CONSTRAINT ... NOT VALID (catalog only, a brief lock; new writes that break it fail
    from here on), then VALIDATE CONSTRAINT in a transaction of its own: SHARE UPDATE
    EXCLUSIVE, which blocks no read or write while the existing rows are scanned. A failed
    validation drops the constraint again, so it stops rejecting the application's writes."""
    constraint = sql.Identifier(name)
    return [
        SqlStep(
            description=f"add {what} NOT VALID (from here on, writes that break it fail)",
            statements=(
                alter(
                    table, sql.SQL("ADD CONSTRAINT {} {} NOT VALID").format(constraint, definition)
                ),
            ),
            lock=lock,
            done_if=constraint_query(table, name),
        ),
        SqlStep(
            description=f"validate {name} against the existing rows (reads and writes continue)",
            statements=(alter(table, sql.SQL("VALIDATE CONSTRAINT {}").format(constraint)),),
            lock="SHARE UPDATE EXCLUSIVE",
            scans=True,
            done_if=constraint_query(table, name, validated=True),
            hold="one scan of the table (reads and writes continue)",
            undo_on_failure=(drop_constraint(table, name),),
        ),
    ]


def not_null_check_name(column: str) -> str:
    return derived_name(column, "_pgshift_not_null")


def set_not_null(table: Table, column: str) -> list[SqlStep]:
    """NOT NULL without a long lock: CHECK (column IS NOT NULL) NOT VALID, VALIDATE, then SET
    NOT NULL (which the validated check spares its scan) and the check dropped, together."""
    check = not_null_check_name(column)
    add, validate = validated_constraint(
        table,
        check,
        sql.SQL("CHECK ({} IS NOT NULL)").format(sql.Identifier(column)),
        f"CHECK ({column} IS NOT NULL)",
    )
    # NOT NULL already set (a re-run after the last step) counts as done for every step
    facts = (
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass({}) AND attname = {}"
        " AND attnotnull UNION ALL SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass({})"
        " AND conname = {}"
    )
    finish = SqlStep(
        description=f"SET NOT NULL on {column} (no scan: the validated check proves it) and"
        " drop the check, together",
        statements=(
            alter(table, sql.SQL("ALTER COLUMN {} SET NOT NULL").format(sql.Identifier(column))),
            drop_constraint(table, check),
        ),
        lock="ACCESS EXCLUSIVE",
        done_if=_set_and_clean(table, column, check),
        hold="milliseconds (catalog only)",
    )
    return [
        replace(add, done_if=exists_query(facts, table.regclass, column, table.regclass, check)),
        replace(
            validate,
            done_if=exists_query(
                facts + " AND convalidated", table.regclass, column, table.regclass, check
            ),
        ),
        finish,
    ]


def _set_and_clean(table: Table, column: str, check: str) -> Query:
    return exists_query(
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass({}) AND attname = {}"
        " AND attnotnull AND NOT EXISTS (SELECT 1 FROM pg_constraint"
        " WHERE conrelid = to_regclass({}) AND conname = {})",
        table.regclass,
        column,
        table.regclass,
        check,
    )


def drop_not_null(table: Table, column: str) -> SqlStep:
    return SqlStep(
        description=f"DROP NOT NULL on {column} (catalog only)",
        statements=(
            alter(table, sql.SQL("ALTER COLUMN {} DROP NOT NULL").format(sql.Identifier(column))),
            drop_constraint(table, not_null_check_name(column)),
        ),
        lock="ACCESS EXCLUSIVE",
        done_if=not_null_query(table, column, not_null=False),
    )
