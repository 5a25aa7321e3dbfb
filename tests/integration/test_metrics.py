"""Metrics for Prometheus on a real database: `apply --metrics-file` (Prometheus text format, for
node_exporter) and `--metrics-port` (OpenMetrics over HTTP while apply runs), and `migrate
metrics` from the state, each parsed by the Prometheus client library's strict parsers."""

from __future__ import annotations

import json
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus_text

from pgshift.demo.seed import create_accounts
from pgshift.engine.state import MigrationState, PhaseState
from pgshift.report.metrics import Snapshot, families, render
from tests.integration.helpers import cli, error_line, write_plan

PLAN = """version: 1
name: measured
table: public.accounts
columns:
  balance: {{type: bigint}}
settings:
  lock_timeout: 50ms
  lock_retries: 3
  on_failure: pause
hooks:
  on_phase_done: {scrape}
phases:
  - expand
  - dual_write
  - backfill
  - gate: {{name: before_cutover}}
  - cutover
  - contract
"""

# fetches what apply serves while it runs: as Prometheus asks for it, then as curl does
SCRAPER = """import os, sys, urllib.request as u
url = "http://127.0.0.1:%d/metrics"
asked = u.Request(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
phase = os.environ["PGSHIFT_PHASE"]
for name, request in (("scraped", asked), ("plain", url)):
    with open(os.path.join(sys.argv[1], f"{name}-{phase}.txt"), "w") as out:
        out.write(u.urlopen(request).read().decode())
"""


def scraper(folder: Path, port: int) -> str:
    """The hook command running SCRAPER."""
    (folder / "scrape.py").write_text(SCRAPER % port)
    return json.dumps(f"{sys.executable} {folder / 'scrape.py'} {folder}")


@pytest.fixture
def accounts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    create_accounts(conn, 1_000)
    return conn


@pytest.fixture
def port() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = int(probe.getsockname()[1])
    yield free


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str, *, strict_openmetrics: bool) -> tuple[Samples, dict[str, Any]]:
    """Every sample by (name, labels), and every family by name, as the parser read them."""
    parse = openmetrics if strict_openmetrics else prometheus_text
    found: Samples = {}
    by_name: dict[str, Any] = {}
    for family in parse(text):
        by_name[family.name] = family
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found, by_name


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_metrics_file_port_and_command(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path, port: int
) -> None:
    plan = write_plan(tmp_path, PLAN.format(scrape=scraper(tmp_path, port)))
    metrics_file = tmp_path / "pgshift.prom"

    result = cli(
        dsn, "apply", plan, "--metrics-file", str(metrics_file), "--metrics-port", str(port)
    )
    assert result.exit_code == 3, result.output  # the gate

    # served while apply ran, scraped by a hook at the end of backfill: OpenMetrics
    scraped = (tmp_path / "scraped-backfill.txt").read_text()
    assert scraped.endswith("# EOF\n")
    found, fams = samples(scraped, strict_openmetrics=True)
    assert fams["pgshift_phase_duration_seconds"].unit == "seconds"
    assert fams["pgshift_lock_waits"].type == "counter"
    assert value(found, "pgshift_phase_rows_done", migration="measured", phase="backfill") == 1_000
    assert (
        value(
            found,
            "pgshift_phase_status",
            migration="measured",
            phase="backfill",
            kind="backfill",
            status="done",
        )
        == 1
    )
    assert (
        value(
            found,
            "pgshift_migration_status",
            migration="measured",
            table="public.accounts",
            status="running",
        )
        == 1
    )

    plain = (tmp_path / "plain-backfill.txt").read_text()  # no Accept: Prometheus text
    assert "# EOF" not in plain
    found, _ = samples(plain, strict_openmetrics=False)
    assert value(found, "pgshift_phase_rows_done", migration="measured", phase="backfill") == 1_000

    # the file as apply left it: the Prometheus text format node_exporter reads
    text = metrics_file.read_text()
    assert "# EOF" not in text and "# UNIT" not in text
    found, fams = samples(text, strict_openmetrics=False)
    assert "# TYPE pgshift_lock_waits_total counter" in text  # 0.0.4 names a counter so
    assert fams["pgshift_lock_waits"].type == "counter"
    assert (
        value(
            found,
            "pgshift_migration_status",
            migration="measured",
            table="public.accounts",
            status="waiting",
        )
        == 1
    )
    gate = {"migration": "measured", "phase": "before_cutover", "kind": "gate"}
    assert value(found, "pgshift_phase_status", status="waiting", **gate) == 1
    assert value(found, "pgshift_phase_status", status="pending", **gate) == 0
    assert value(found, "pgshift_migration_throttled", migration="measured", reason="gate") == 1
    backfill = {"migration": "measured", "phase": "backfill"}
    assert value(found, "pgshift_phase_progress_ratio", **backfill) == 1
    assert value(found, "pgshift_phase_rows_per_second", **backfill) > 0
    assert value(found, "pgshift_lock_waits_total", migration="measured") == 0
    assert not list(tmp_path.glob(".pgshift.prom.*"))  # no temporary file left behind

    # any shell, from the state: OpenMetrics by default
    shown = cli(dsn, "metrics", "measured")
    assert shown.exit_code == 0, shown.output
    found, _ = samples(shown.stdout, strict_openmetrics=True)
    assert value(found, "pgshift_phase_rows_done", **backfill) == 1_000
    assert value(found, "pgshift_phase_rows_expected", **backfill) == 1_000
    assert value(found, "pgshift_phase_status", status="waiting", **gate) == 1
    assert value(found, "pgshift_migration_paused", migration="measured") == 0
    assert value(found, "pgshift_hook_failures_total", migration="measured") == 0
    everything = cli(dsn, "metrics", "--format", "prometheus")
    assert everything.exit_code == 0, everything.output
    found, _ = samples(everything.stdout, strict_openmetrics=False)
    assert value(found, "pgshift_phase_rows_done", **backfill) == 1_000


def test_lock_waits_are_counted(
    dsn: str, accounts: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, PLAN.format(scrape='"true"'))
    metrics_file = tmp_path / "pgshift.prom"
    with psycopg.connect(dsn) as blocker:  # holds a lock on the table: expand cannot start
        blocker.execute("SELECT count(*) FROM accounts")
        result = cli(dsn, "apply", plan, "--metrics-file", str(metrics_file))
        blocker.rollback()
    assert result.exit_code == 1
    assert "in 3 attempts" in error_line(result)

    found, _ = samples(metrics_file.read_text(), strict_openmetrics=False)
    assert value(found, "pgshift_lock_waits_total", migration="measured") == 3
    assert (
        value(
            found,
            "pgshift_phase_status",
            migration="measured",
            phase="expand",
            kind="expand",
            status="failed",
        )
        == 1
    )
    shown = cli(dsn, "metrics", "measured")
    found, _ = samples(shown.stdout, strict_openmetrics=True)
    assert value(found, "pgshift_lock_waits_total", migration="measured") == 3


def test_no_migration_is_an_empty_exposition(dsn: str) -> None:
    shown = cli(dsn, "metrics")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == "# EOF\n"
    assert list(openmetrics(shown.stdout)) == []


def test_throttle_reason_and_replica_lag() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    phase = PhaseState(
        idx=0,
        kind="backfill",
        name="backfill",
        status="running",
        steps_done=0,
        checkpoint=None,
        rows_done=250,
        rows_total=1_000,
        batches=3,
        started_at=now - timedelta(seconds=10),
        finished_at=None,
        error=None,
    )
    state = MigrationState(
        name='odd"name',
        plan_hash="x",
        table_name="public.t",
        status="running",
        snapshot=None,
        paused=False,
        throttle_reason='replica "r1" at 10.0.0.2 lags 42.5s (1,000 bytes of WAL behind),'
        " more than max_replication_lag 30s",
        last_error=None,
        created_at=now,
        updated_at=now,
        phases=[phase],
    )
    text = render(families([Snapshot(state, Counter())], now))
    found, _ = samples(text, strict_openmetrics=True)
    who = {"migration": 'odd"name'}
    assert value(found, "pgshift_migration_throttled", reason="replica_lag", **who) == 1
    assert value(found, "pgshift_migration_throttled", reason="paused", **who) == 0
    assert value(found, "pgshift_replica_lag_seconds", replica='"r1" at 10.0.0.2', **who) == 42.5
    assert value(found, "pgshift_phase_progress_ratio", phase="backfill", **who) == 0.25
    assert value(found, "pgshift_phase_rows_per_second", phase="backfill", **who) == 25
    assert value(found, "pgshift_phase_duration_seconds", phase="backfill", **who) == 10
