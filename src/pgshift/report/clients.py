"""Which application clients see an error at which step, and what to do about it: the same
lines in `migrate plan`, the runbook and `migrate status`.

PostgreSQL keeps a prepared statement's result type: when a table change alters the columns a
prepared statement returns (a type swapped in by a rename, a column added under `SELECT *`), the
next execution fails once with SQLSTATE 0A000 ("cached plan must not change result type").
Drivers prepare on their own: psycopg 3 from a statement's fifth run on a connection, SQLAlchemy
through psycopg, asyncpg inside transactions, JDBC from the fifth run, pgbench `-M prepared`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgshift.compile import CompiledPlan
from pgshift.phases.columns_shape import ColumnsShape
from pgshift.phases.table_shape import TableShape

if TYPE_CHECKING:
    from pgshift.operations.shape import OperationsShape

PREPARING = (
    "psycopg 3 after a statement's 5th run, SQLAlchemy on psycopg, asyncpg inside transactions,"
    " JDBC after 5 runs, pgbench -M prepared (which aborts the client)"
)


@dataclass(frozen=True)
class ClientImpact:
    phase: str  # the phase kind at which clients see it
    who: str  # which clients
    error: str  # what they see
    action: str  # what to do
    on_rollback: bool = False  # at the rollback of `phase`, not at the phase itself
    after: bool = False  # from the end of `phase` on

    @property
    def when(self) -> str:
        if self.on_rollback:
            return f"rollback of {self.phase}"
        return f"after {self.phase}" if self.after else self.phase

    def line(self) -> str:
        return f"{self.when}: {self.who} {self.error}. {self.action}"

    def data(self) -> dict[str, Any]:
        return {
            "when": self.when,
            "phase": self.phase,
            "on_rollback": self.on_rollback,
            "after": self.after,
            "who": self.who,
            "error": self.error,
            "action": self.action,
        }


def upcoming(impacts: list[dict[str, Any]], done: set[str]) -> list[dict[str, Any]]:
    """What still lies ahead, given the phase kinds done: a phase's own entries until it is
    done, its rollback's entries once it is, `after` entries while the next phase is ahead."""
    return [
        i
        for i in impacts
        if (i["phase"] in done) == (i["on_rollback"] or i["after"])
        and not (i["after"] and "contract" in done)
    ]


def _changed_columns(compiled: CompiledPlan) -> list[str]:
    """The live columns whose type differs between the old and the new shape."""
    shape = compiled.context.shape
    if isinstance(shape, ColumnsShape):
        return [c.name for c in shape.changed() if c.type != c.old_type]
    assert isinstance(shape, TableShape)
    return [
        name
        for name, column in shape.new.columns.items()
        if name in shape.old.columns and shape.old.columns[name].type != column.type
    ]


def _operations_impact(compiled: CompiledPlan) -> list[ClientImpact]:
    """What each operation makes the application see, and in versions mode when to deploy
    the new version and what its rollback does to it."""
    shape: OperationsShape = compiled.context.shape
    out: list[ClientImpact] = []
    if compiled.plan.versions:
        schema = compiled.context.view_schema
        out.append(
            ClientImpact(
                "expand",
                "the new application version",
                f"reads and writes the new names through {schema}.{shape.view_name};"
                " no error for either version",
                f"Deploy it from now on with search_path = {schema}, {compiled.table.schema}"
                " (each connection's, e.g. options=-csearch_path=...); the old version keeps"
                f" using {compiled.table.display} until contract.",
                after=True,
            )
        )
    out += [
        ClientImpact(c.phase, c.who, c.error, c.action, c.on_rollback, c.after)
        for c in shape.clients()
    ]
    if compiled.plan.versions:
        out.append(
            ClientImpact(
                "expand",
                "the new application version",
                f"fails: {compiled.context.view_schema} is dropped",
                "Roll the application back to the old version before rolling back expand.",
                on_rollback=True,
            )
        )
    return out


def client_impact(compiled: CompiledPlan) -> list[ClientImpact]:
    plan = compiled.plan
    if plan.target == "operations":
        return _operations_impact(compiled)
    kinds = {p.kind for p in compiled.phases}
    changed = _changed_columns(compiled)
    columns = ", ".join(changed)
    prepared = f"connections that prepared a statement returning {columns} ({PREPARING})"
    out: list[ClientImpact] = []
    if plan.target == "columns" and "expand" in kinds:
        out.append(
            ClientImpact(
                "expand",
                "prepared statements that read the table with SELECT * or RETURNING *",
                "fail with SQLSTATE 0A000 (columns are added to the table)",
                "Name the columns in such statements before the migration.",
            )
        )
    if plan.versions:
        schema = compiled.context.view_schema
        out.append(
            ClientImpact(
                "backfill",
                "the new application version",
                f"reads and writes the new shape through {schema}.{compiled.table.name};"
                " no error for either version",
                f"Deploy it now, not earlier (before, unfilled rows read NULL), with search_path ="
                f" {schema}, {compiled.table.schema} (each connection's, e.g."
                " options=-csearch_path=...); the old version changes nothing.",
                after=True,
            )
        )
        if "contract" in kinds:
            out.append(
                ClientImpact(
                    "contract",
                    "sessions of the OLD version still connected (the new version is not"
                    " affected: its view keeps its column types)",
                    f"fail on prepared statements returning {columns or 'a changed column'}"
                    " with SQLSTATE 0A000",
                    "Stop or reconnect every old-version pool first; a gate with"
                    " require_no_old_sessions waits until no session older than backfill's end is"
                    " connected.",
                )
            )
        out.append(
            ClientImpact(
                "expand",
                "the new application version",
                f"fails: {schema} is dropped",
                "Roll the application back to the old version before rolling back expand.",
                on_rollback=True,
            )
        )
        return out
    if "cutover" in kinds and changed:
        out.append(
            ClientImpact(
                "cutover",
                f"{prepared};",
                "each such statement fails with SQLSTATE 0A000: once per connection where the"
                " driver forgets it on the error's rollback (psycopg in a transaction, SQLAlchemy,"
                " asyncpg), on every run until the connection is reopened in psycopg's"
                " autocommit mode",
                "Reconnect the pools right after the swap (PgBouncer: RECONNECT), turn"
                " automatic preparing off for the migration, or use application mode versions.",
            )
        )
        out.append(
            ClientImpact(
                "cutover",
                "the same connections",
                "fail the same way once more (the old types come back)",
                "Reconnect the pools after the swap back.",
                on_rollback=True,
            )
        )
    if plan.target == "columns" and "contract" in kinds:
        out.append(
            ClientImpact(
                "contract",
                "prepared statements that read the table with SELECT * or RETURNING *",
                "fail with SQLSTATE 0A000 (the old columns are dropped)",
                "Name the columns in such statements.",
            )
        )
    return out


def clients_data(compiled: CompiledPlan) -> list[dict[str, Any]]:
    """The application clients each step breaks; of several tables, what holds for all of
    them once, the rest with its table named."""
    each = [[c.data() for c in client_impact(part)] for part in compiled.each()]
    if len(each) == 1:
        return each[0]
    out: list[dict[str, Any]] = []
    for part, items in zip(compiled.each(), each, strict=True):
        for item in items:
            if all(item in other for other in each):
                if item not in out:
                    out.append(item)
            else:
                out.append({**item, "when": f"{item['when']} ({part.table.display})"})
    return out
