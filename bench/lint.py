"""Lint speed and findings over a corpus of real migration folders, beside squawk.

    python bench/lint.py [--corpus DIR] [--runs 5] [--squawk PATH]

Each folder directly under the corpus is one project, linted as one run (files in migration
order, so a table created in an earlier file is new in the later ones), the way
`migrate lint FOLDER` does. Prints:

- in one process: the import of the lint package, and the median time of `--runs` passes over
  the whole corpus (the rules themselves);
- as commands, in the same run, alternating: `migrate lint` over every project folder in one
  command, and squawk over the same .sql files in one command; their medians and ratio; the
  same for one small file (start-up time);
- findings per rule: pgshift's as runs (per project) and with each file alone (every table
  live; the rules that are off by default turned on), and squawk's.

squawk is found from --squawk, else $SQUAWK, else the PATH (`pip install squawk-cli` into a
scratch virtualenv); without it, pgshift's figures only. No database is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "lint_corpus"


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def _compare(label: str, ours: list[str], theirs: list[str] | None, runs: int) -> None:
    """Both commands `runs` times, alternating, so both see the same machine load."""
    mine: list[float] = []
    other: list[float] = []
    for _ in range(runs):
        mine.append(_timed(ours))
        if theirs is not None:
            other.append(_timed(theirs))
    median = statistics.median(mine)
    line = f"{label}: migrate lint {median:.3f} s"
    if other:
        baseline = statistics.median(other)
        line += f", squawk {baseline:.3f} s, ratio {median / baseline:.2f}x"
    print(f"{line} (medians of {runs})")


def _squawk_counts(squawk: str, files: list[Path]) -> Counter[str]:
    done = subprocess.run(
        [squawk, "--reporter", "json", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        rows = json.loads(done.stdout)
    except json.JSONDecodeError:
        return Counter()
    return Counter(row.get("rule_name", "?") for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--squawk", default=os.environ.get("SQUAWK") or shutil.which("squawk"))
    args = parser.parse_args()
    if not args.corpus.is_dir():
        print(f"no corpus at {args.corpus}", file=sys.stderr)
        return 2

    started = time.perf_counter()
    from pgshift.lint import RULES, LintConfig, collect_sql_files, lint_file, lint_paths

    import_seconds = time.perf_counter() - started

    projects = sorted(p for p in args.corpus.iterdir() if p.is_dir())
    files = [f for p in projects for f in collect_sql_files([p])]
    times: list[float] = []
    counts: Counter[str] = Counter()
    allowed = 0
    for _ in range(args.runs):
        counts.clear()
        allowed = 0
        started = time.perf_counter()
        for project in projects:
            for _, finding in lint_paths([project]):
                counts[finding.rule] += 1
                allowed += finding.allowed
        times.append(time.perf_counter() - started)

    print(f"projects: {len(projects)}, files: {len(files)}")
    print(f"import of pgshift.lint: {import_seconds:.3f} s")
    median = statistics.median(times)
    print(
        f"rules over the whole corpus, in one process: {median:.3f} s median of {args.runs}"
        f" ({median / len(files) * 1000:.2f} ms/file)"
    )

    squawk = args.squawk
    if squawk is None:
        print("squawk: not found (pass --squawk PATH or set $SQUAWK); pgshift alone below")
    ours = [sys.executable, "-m", "pgshift.cli", "lint"]
    _compare(
        "whole corpus, one command",
        [*ours, *map(str, projects)],
        [squawk, *map(str, files)] if squawk else None,
        args.runs,
    )
    with tempfile.TemporaryDirectory() as scratch:
        one = Path(scratch) / "0001_add_index.sql"
        one.write_text("SET lock_timeout = '1s';\nCREATE INDEX i ON accounts (email);\n")
        _compare(
            "one file (start-up)",
            [*ours, str(one)],
            [squawk, str(one)] if squawk else None,
            args.runs,
        )

    # Each file alone, as a reviewer of one migration sees it (every table in it is live),
    # with the rules that are off by default turned on.
    turned_on = LintConfig({rule.id: "warning" for rule in RULES if rule.severity == "off"})
    alone: Counter[str] = Counter()
    for path in files:
        alone.update(finding.rule for finding in lint_file(path, config=turned_on))

    print(f"\npgshift findings: {sum(counts.values())} ({allowed} allowed in the SQL)")
    print(f"  {'rule':<13} {'slug':<30} {'default':<8} {'runs':>5} {'files alone':>12}")
    for rule in RULES:
        if counts[rule.id] or alone[rule.id]:
            print(
                f"  {rule.id:<13} {rule.slug:<30} {rule.severity:<8} {counts[rule.id]:>5}"
                f" {alone[rule.id]:>12}"
            )
    for rule_id in sorted((set(counts) | set(alone)) - {rule.id for rule in RULES}):
        print(f"  {rule_id:<13} {'':<30} {'error':<8} {counts[rule_id]:>5} {alone[rule_id]:>12}")
    if squawk:
        theirs = _squawk_counts(squawk, files)
        print(f"\nsquawk findings: {sum(theirs.values())}")
        for name, count in sorted(theirs.items()):
            print(f"  {name:<45} {count:>5}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
