"""Lint speed and findings over a corpus of real migration folders, in one process.

    python bench/lint.py [--corpus DIR] [--runs 3]

Each folder directly under the corpus is one project, linted as one run (files in migration
order, so a table created in an earlier file is new in the later ones), the way
`migrate lint FOLDER` does. Prints the number of files and statements' findings, the time of
the import of the lint module and the median time of `--runs` passes over the whole corpus, and
the findings per rule. No database is needed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "lint_corpus"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not args.corpus.is_dir():
        print(f"no corpus at {args.corpus}", file=sys.stderr)
        return 2

    started = time.perf_counter()
    from pgshift.plan.lint import RULES, collect_sql_files, lint_paths

    import_seconds = time.perf_counter() - started

    projects = sorted(p for p in args.corpus.iterdir() if p.is_dir())
    files = sum(len(collect_sql_files([p])) for p in projects)
    times: list[float] = []
    counts: Counter[str] = Counter()
    allowed = 0
    for run in range(args.runs):
        counts.clear()
        allowed = 0
        started = time.perf_counter()
        for project in projects:
            for _, finding in lint_paths([project]):
                counts[finding.rule] += 1
                allowed += finding.allowed
        times.append(time.perf_counter() - started)
        print(f"run {run + 1}: {times[-1]:.3f} s")

    print(f"projects: {len(projects)}, files: {files}")
    print(f"import of pgshift.plan.lint: {import_seconds:.3f} s")
    median = statistics.median(times)
    print(
        f"lint of the whole corpus: {median:.3f} s median of {args.runs} ({median / files * 1000:.2f} ms/file)"
    )
    print(f"findings: {sum(counts.values())} ({allowed} allowed in the SQL)")
    severity = {rule.id: rule.severity for rule in RULES}
    slugs = {rule.id: rule.slug for rule in RULES}
    for rule in sorted(counts):
        label = slugs.get(rule, rule)
        print(f"  {rule:<13} {label:<30} {severity.get(rule, 'error'):<8} {counts[rule]:>5}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
