"""One place where what a migration records is observed: the state store the executors write
through tells its listeners (the plan's hooks, the metrics) of every event, status, phase,
throttle and progress change, right after writing it."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from pgshift.engine.state import StateStore


class StoreListener:
    """What a listener may hear; each method does nothing unless overridden. `on_event` comes
    with the connection the event was written on (idle but for the rare event written inside a
    transaction); the others come without one, some from inside a batch's transaction."""

    def on_event(
        self,
        store: StateStore,
        conn: psycopg.Connection[Any],
        name: str,
        event: str,
        phase: str | None,
        detail: dict[str, Any] | None,
    ) -> None:
        pass

    def on_status(self, name: str, status: str, error: str | None) -> None:
        pass

    def on_phase(self, name: str, idx: int, status: str, reset: bool) -> None:
        pass

    def on_throttle(self, name: str, reason: str | None) -> None:
        pass

    def on_rows(self, name: str, idx: int, rows: int, added: bool) -> None:
        """A backfill batch's `rows` (`added` to the phase's), or a check's rows so far."""


class ObservedStore(StateStore):
    """The same store, telling `listeners` what was written."""

    def __init__(self, inner: StateStore, listeners: list[StoreListener]) -> None:
        self.__dict__.update(vars(inner))  # schema, actor, and whatever else the store keeps
        self.listeners = listeners
        self._lock = threading.Lock()

    def event(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        event: str,
        phase: str | None = None,
        detail: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> None:
        super().event(conn, name, event, phase, detail, actor)
        for listener in self.listeners:
            listener.on_event(self, conn, name, event, phase, detail)

    def set_status(
        self, conn: psycopg.Connection[Any], name: str, status: str, error: str | None = None
    ) -> None:
        super().set_status(conn, name, status, error)
        for listener in self.listeners:
            listener.on_status(name, status, error)

    def set_phase(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        idx: int,
        status: str,
        *,
        steps_done: int | None = None,
        error: str | None = None,
        reset: bool = False,
    ) -> None:
        super().set_phase(conn, name, idx, status, steps_done=steps_done, error=error, reset=reset)
        for listener in self.listeners:
            listener.on_phase(name, idx, status, reset)

    def set_throttle(self, conn: psycopg.Connection[Any], name: str, reason: str | None) -> None:
        super().set_throttle(conn, name, reason)
        for listener in self.listeners:
            listener.on_throttle(name, reason)

    def checkpoint(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        idx: int,
        checkpoint: Any,
        rows: int,
        steps_done: int | None,
        *,
        range_index: int | None = None,
        size: int | None = None,
    ) -> None:
        super().checkpoint(
            conn, name, idx, checkpoint, rows, steps_done, range_index=range_index, size=size
        )
        with self._lock:  # backfill workers write checkpoints from several threads
            for listener in self.listeners:
                listener.on_rows(name, idx, rows, added=True)

    def save_result(
        self, conn: psycopg.Connection[Any], name: str, idx: int, data: Any, rows: int
    ) -> None:
        super().save_result(conn, name, idx, data, rows)
        for listener in self.listeners:
            listener.on_rows(name, idx, rows, added=False)


def observed(store: StateStore, listeners: list[StoreListener]) -> StateStore:
    """`store` telling `listeners` (itself when there are none)."""
    if not listeners:
        return store
    inner = store.listeners if isinstance(store, ObservedStore) else []
    return ObservedStore(store, [*inner, *listeners])
