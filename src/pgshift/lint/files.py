"""Which .sql files a run lints, in the order a migration tool applies them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

_DOWN_MIGRATION = re.compile(r"(^|[._-])down\.sql$", re.IGNORECASE)


def _natural_key(path: Path) -> tuple[tuple[int, int | str], ...]:
    """`2_a.sql` before `10_a.sql`: digit runs compare as numbers, the rest ignoring case."""
    key: list[tuple[int, int | str]] = []
    for part in path.parts:
        for chunk in re.split(r"(\d+)", part):
            if chunk.isdigit():
                key.append((0, int(chunk)))
            elif chunk:
                key.append((1, chunk.lower()))
        key.append((2, ""))
    return tuple(key)


def collect_sql_files(paths: Iterable[Path]) -> list[Path]:
    """The .sql files to lint, in the order a migration tool applies them.

    A file is taken as given; a directory gives its .sql files (recursively, down migrations
    such as `0003_x.down.sql` left out) in natural order of their paths inside it.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = [
                p for p in path.rglob("*.sql") if p.is_file() and not _DOWN_MIGRATION.search(p.name)
            ]
            files += sorted(found, key=lambda p: _natural_key(p.relative_to(path)))
        else:
            files.append(path)
    return files
