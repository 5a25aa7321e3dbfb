"""`migrate history`: the event log of one migration (who did what, when), or the list of every
migration the log knows, forgotten ones included."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any


def _at(value: datetime) -> str:
    return value.isoformat(sep=" ", timespec="seconds")


def _detail(detail: Any) -> str:
    if not detail:
        return ""
    text = json.dumps(detail, default=str, separators=(", ", ": "))
    return text if len(text) <= 100 else text[:99] + "…"


def render_events(name: str, events: list[dict[str, Any]]) -> str:
    lines = [f"{name}: {len(events)} event(s)"]
    for e in events:
        where = f" [{e['phase']}]" if e["phase"] else ""
        detail = _detail(e["detail"])
        lines.append(
            f"  {_at(e['at'])}  {e['actor']:<12} {e['event']}{where}"
            + (f"  {detail}" if detail else "")
        )
    return "\n".join(lines)


def render_histories(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no migration has been recorded here"
    width = max(len(r["migration"]) for r in rows)
    return "\n".join(
        f"{r['migration']:<{width}}  {_at(r['first_at'])} .. {_at(r['last_at'])}  {r['last_event']}"
        for r in rows
    )
