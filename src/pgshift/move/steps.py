"""The compiled form of a move: phases of steps, each naming the server it runs on.

Plain SQL is a `SqlStep` (with `server`); what needs both servers, a wait or a command is one
of the typed steps below, run by `move/runner.py`. `preview` is what `migrate plan` and the
runbook print for a typed step: its SQL with the connection string's password hidden (the
runner builds the real statement when it runs, so the plan never holds a password).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from pgshift.db import Query
from pgshift.move.catalog import MovedTable, Name
from pgshift.move.names import Direction, MoveNames
from pgshift.move.schema import MovedSchema
from pgshift.phases.base import GateStep, LockLevel, Server, SqlStep
from pgshift.plan.model import Plan


@dataclass(frozen=True)
class Subscribe:
    """CREATE SUBSCRIPTION on the subscribing server (its slot made on the publishing one);
    skipped when it exists. A slot of that name left without its subscription is dropped
    first."""

    description: str
    direction: Direction
    copy_data: bool
    server: Server
    preview: tuple[str, ...]
    lock: LockLevel = "none"
    scans: bool = False
    rewrites: bool = False
    hold: str = "nothing"


@dataclass(frozen=True)
class Unsubscribe:
    """DROP SUBSCRIPTION (its slot with it). When the publisher cannot be reached the
    subscription is detached from its slot and dropped; any slot of it still on the publisher
    (the main one, or a table copy's) is dropped there, its walsender ended first."""

    description: str
    direction: Direction
    server: Server
    preview: tuple[str, ...]
    lock: LockLevel = "none"
    scans: bool = False
    rewrites: bool = False
    hold: str = "nothing"


@dataclass(frozen=True)
class WaitCopy:
    """Wait until the subscription has copied every table (all `ready`), reporting rows copied
    into the phase's progress."""

    description: str
    preview: tuple[str, ...]
    server: Server = "destination"
    lock: LockLevel = "none"
    scans: bool = True
    rewrites: bool = False
    hold: str = "nothing (the copy runs in the destination's workers)"


CatchUpMode = Literal["streaming", "close", "fenced"]


@dataclass(frozen=True)
class CatchUp:
    """Bump the marker on the publishing side and wait until the subscribing side has it: then
    it has applied everything committed before. `streaming`: once, however long it takes;
    `close`: until one round trip takes at most `limit` (before the fence); `fenced`: once,
    failing after `limit` (writes are refused meanwhile). Skipped when the direction has no
    subscription (a rollback of a cutover that never started it)."""

    description: str
    direction: Direction
    mode: CatchUpMode
    limit: timedelta | None
    preview: tuple[str, ...]
    server: Server = "source"
    lock: LockLevel = "none"
    scans: bool = False
    rewrites: bool = False
    hold: str = "nothing"


@dataclass(frozen=True)
class SyncSequences:
    """Set each sequence of the moved tables on the receiving server past the sending server's
    value (never backwards)."""

    description: str
    direction: Direction
    sequences: tuple[Name, ...]
    preview: tuple[str, ...]
    server: Server = "destination"
    lock: LockLevel = "none"
    scans: bool = False
    rewrites: bool = False
    hold: str = "nothing"


@dataclass(frozen=True)
class Fence:
    """Triggers refusing every write to the moved tables on one server, in one transaction (a
    transaction writing two moved tables is refused on both or neither). Replication's apply
    workers run as `replica` and do not fire them. `starts_window`: the write-blocked window of
    cutover starts at its commit."""

    description: str
    server: Server
    statements: tuple[Query, ...]
    starts_window: bool = False
    lock: LockLevel = "SHARE ROW EXCLUSIVE"
    scans: bool = False
    rewrites: bool = False
    hold: str = "milliseconds; from its commit every write to the moved tables fails there"


@dataclass(frozen=True)
class Hook:
    """The plan's command for `which`, the state as JSON on stdin; a non-zero exit fails."""

    description: str
    which: Literal["before_fence", "after_fence"]
    direction: Direction
    command: str
    timeout: timedelta
    server: Server = "source"
    lock: LockLevel = "none"
    scans: bool = False
    rewrites: bool = False
    hold: str = "nothing"

    @property
    def preview(self) -> tuple[str, ...]:
        return (f"-- runs: {self.command}",)


@dataclass(frozen=True)
class MoveVerify:
    """Row-hash comparison of every moved table across the servers, by key, chunked; keys
    found different are locked on the publishing side and compared again once the other side
    has caught up, so a row changing under the comparison is not a difference."""

    description: str
    chunk_size: int
    server: Server = "source"
    lock: LockLevel = "ACCESS SHARE"
    scans: bool = True
    rewrites: bool = False
    hold: str = "one chunk's snapshot (writes continue)"


MoveStep = (
    SqlStep
    | GateStep
    | Subscribe
    | Unsubscribe
    | WaitCopy
    | CatchUp
    | SyncSequences
    | Fence
    | Hook
    | MoveVerify
)


@dataclass(frozen=True)
class MovePhase:
    index: int
    kind: str
    name: str
    forward: tuple[MoveStep, ...]
    rollback: tuple[MoveStep, ...]
    reversible: bool = True
    summary: str = ""


@dataclass(frozen=True)
class CompiledMove:
    plan: Plan
    names: MoveNames
    tables: tuple[MovedTable, ...]
    schema: MovedSchema
    phases: tuple[MovePhase, ...] = field(default=())

    @property
    def sequences(self) -> tuple[Name, ...]:
        return tuple(dict.fromkeys(s for t in self.tables for s in t.sequences))

    @property
    def rows(self) -> int:
        return sum(t.row_estimate or 0 for t in self.tables)

    @property
    def total_bytes(self) -> int:
        return sum(t.total_bytes for t in self.tables)

    @property
    def display(self) -> str:
        """What `status` calls the migration's table."""
        shown = ", ".join(t.display for t in self.tables[:3])
        more = f" and {len(self.tables) - 3} more" if len(self.tables) > 3 else ""
        return f"{shown}{more} (move)"

    def phase(self, name: str) -> MovePhase:
        from pgshift.errors import no_phase_named

        for phase in self.phases:
            if phase.name == name or phase.kind == name:
                return phase
        names = list(dict.fromkeys([p.name for p in self.phases] + [p.kind for p in self.phases]))
        raise no_phase_named(name, self.plan.name, names)


def step_server(step: MoveStep) -> Server:
    return "source" if isinstance(step, GateStep) else step.server


def step_preview(step: MoveStep) -> list[str]:
    """The SQL (or what stands for it) `migrate plan` and the runbook show for a step."""
    if isinstance(step, GateStep | MoveVerify):
        return []
    if isinstance(step, SqlStep | Fence):
        return [s.as_string() + ";" for s in step.statements]
    return list(step.preview)
