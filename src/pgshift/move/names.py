"""The names a move gives what it creates on the two servers, derived from the migration's name
once, here, so every phase and the status report agree on them.

Forward (source to destination) and back (destination to source, after cutover) each have a
publication on the publishing server and a subscription, with its slot, on the other; a slot
name must be unique on its server, a subscription's in its database. The marker table (one row,
bumped on one side and waited for on the other) and the fence function live in the state schema
on both servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from psycopg import sql

from pgshift.db import TRIGGER_PREFIX, derived_name, prefixed_name

Direction = Literal["forward", "back"]


@dataclass(frozen=True)
class MoveNames:
    migration: str
    state_schema: str

    @property
    def forward(self) -> str:
        """Publication (source), subscription (destination) and its slot (source)."""
        return prefixed_name("pgshift_", self.migration)

    @property
    def back(self) -> str:
        """Publication (destination), subscription (source) and its slot (destination)."""
        return derived_name(self.forward, "_back")

    def channel(self, direction: Direction) -> str:
        return self.forward if direction == "forward" else self.back

    @property
    def marker(self) -> sql.Identifier:
        return sql.Identifier(self.state_schema, prefixed_name("move_", self.migration))

    @property
    def marker_name(self) -> tuple[str, str]:
        return self.state_schema, prefixed_name("move_", self.migration)

    @property
    def fence_function(self) -> sql.Identifier:
        """The trigger function of the fences (its message comes from each trigger)."""
        schema, marker = self.marker_name
        return sql.Identifier(schema, marker + "_fence")

    @property
    def fence_trigger(self) -> str:
        return prefixed_name(TRIGGER_PREFIX + "fence_", self.migration)


def publisher(direction: Direction) -> Literal["source", "destination"]:
    """The server whose changes a direction carries."""
    return "source" if direction == "forward" else "destination"


def subscriber(direction: Direction) -> Literal["source", "destination"]:
    return "destination" if direction == "forward" else "source"
