"""An `operations` plan checked on the live database before anything runs: each operation
validated against the table and the others, then what only the database can tell tried in
transactions that are always rolled back."""

from __future__ import annotations

from typing import Any

import psycopg

from pgshift.catalog import Table
from pgshift.operations.shape import build_operations_shape
from pgshift.plan.model import Plan


def check_operations(conn: psycopg.Connection[Any], plan: Plan, table: Table) -> None:
    shape = build_operations_shape(plan, table, plan.view_schema)
    for operation in shape.operations:
        operation.check(conn)
