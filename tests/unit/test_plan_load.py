"""Plan loading: every malformed plan is one PlanError at the right `file:line:column`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from textwrap import dedent

import pytest

from pgshift.errors import ExitCode, PlanError
from pgshift.plan.load import LoadedPlan, load_plan, load_plan_text
from pgshift.plan.model import BackfillPhase, GatePhase

# SPEC §1 (comments shortened), split into its two targets: the example shows both, which a
# plan may not hold.
SPEC_COLUMNS = """\
version: 1                          # required; plan format version
name: widen_account_balance         # required; [a-z][a-z0-9_]{0,47}; the state key
description: Widen accounts.balance to bigint.   # optional; shown by plan and runbook
table: public.accounts              # required; the live table (schema optional)
key: [id]                           # optional; default: the primary key

columns:                            # in place, through shadow columns on the live table
  balance:                          # an existing column to change ...
    type: bigint                    #   its new type
    up: balance::bigint             #   SQL over the live row -> new value
    down: balance::integer          #   SQL over the row -> old value
    nullable: false                 #   optional: end NOT NULL (added without a long lock)
    default: "0"                    #   optional: SQL default of the new column
  email_lower:                      # ... or a column that does not exist yet
    type: text
    up: lower(email)
"""

SPEC_NEW_TABLE = """\
new_table:                          # into a new table (restructure, key type change, partitioning)
  name: public.accounts_v2
  create: |                         # DDL that creates it (run in expand; linted, see §6)
    CREATE TABLE public.accounts_v2 (id bigint PRIMARY KEY, balance bigint NOT NULL, email text);
  columns:                          # new-table column: SQL over the live row (default: same name)
    balance: coalesce(balance, 0)::bigint
  reverse:                          # live-table column: SQL over the new row (default: same name);
    balance: balance::integer       #   keeps the old table in step after cutover, for rollback
"""

SPEC_REST = """\
settings:                           # all optional; defaults shown
  lock_timeout: 1s                  # every statement that takes a table lock
  lock_retries: 30                  # attempts, exponential backoff with jitter, capped at 30s
  statement_timeout: 0              # for DDL that should be instant (0 = unset)
  batch_size: auto                  # rows per backfill batch; auto adapts to batch_time
  batch_time: 200ms                 # target duration of one batch when auto
  batch_pause: 0ms                  # sleep between batches
  max_replication_lag: 30s          # backfill and verify wait while any replica lags more
  throttle_query: null              # SQL returning one boolean; true = wait
  on_failure: rollback              # rollback (undo every applied phase) | pause (stop, keep state)

phases:                             # ordered; a bare kind or {kind: {options}}
  - expand
  - dual_write
  - backfill: {batch_size: 20000}
  - verify
  - shadow_read:
      queries:
        - SELECT id, balance FROM accounts WHERE id % 97 = 0 ORDER BY id
      max_mismatches: 0
  - gate: {name: before_cutover, approval: true}
  - cutover
  - contract
"""


def load(text: str, env: dict[str, str] | None = None) -> LoadedPlan:
    return load_plan_text(text, "plan.yaml", env={} if env is None else env)


def load_error(text: str, env: dict[str, str] | None = None) -> PlanError:
    with pytest.raises(PlanError) as info:
        load(text, env)
    return info.value


@dataclass(frozen=True)
class Bad:
    id: str
    text: str
    line: int
    column: int | None  # None where only the line is meaningful
    fragment: str


BAD = [
    Bad(
        "batch_size_not_a_number",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases:
          - expand
          - dual_write
          - backfill: {batch_size: "lots"}
        """,
        9,
        28,
        "phases[2].backfill.batch_size must be 'auto' or a positive whole number, not 'lots'",
    ),
    Bad(
        "lock_retries_wrong_type",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        settings:
          lock_retries: many
        phases: [expand]
        """,
        7,
        17,
        "settings.lock_retries: expected a whole number, found the text 'many'",
    ),
    Bad(
        "settings_not_a_mapping",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        settings: fast
        phases: [expand]
        """,
        6,
        11,
        "settings: expected a mapping, found the text 'fast'",
    ),
    Bad(
        "key_not_a_list",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        key: id
        columns:
          balance: {type: bigint}
        phases: [expand]
        """,
        4,
        6,
        "key: expected a list, found the text 'id' (write [id])",
    ),
    Bad(
        "unknown_top_level_key",
        """\
        version: 1
        name: widen_balance
        descripton: Widen the balance.
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases: [expand]
        """,
        3,
        1,
        "unknown top-level key 'descripton'; did you mean 'description'?",
    ),
    Bad(
        "misspelled_required_key",
        """\
        version: 1
        name: widen_balance
        tabel: public.accounts
        columns:
          balance: {type: bigint}
        phases: [expand]
        """,
        3,
        1,
        "unknown top-level key 'tabel'; did you mean 'table'?",
    ),
    Bad(
        "setting_at_top_level",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        lock_timeout: 2s
        phases: [expand]
        """,
        6,
        1,
        "unknown top-level key 'lock_timeout'; it belongs under settings",
    ),
    Bad(
        "unknown_setting",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        settings:
          lock_timout: 2s
        phases: [expand]
        """,
        7,
        3,
        "unknown key 'lock_timout' in settings; did you mean 'lock_timeout'?",
    ),
    Bad(
        "unknown_phase_option",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases:
          - expand
          - dual_write
          - backfill:
              batch_sise: 5000
        """,
        10,
        7,
        "unknown key 'batch_sise' in phases[2].backfill; did you mean 'batch_size'?",
    ),
    Bad(
        "option_on_phase_without_options",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases:
          - expand: {concurrently: true}
        """,
        7,
        14,
        "unknown key 'concurrently' in phases[0].expand; expand takes no options",
    ),
    Bad(
        "unknown_column_option",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance:
            typ: bigint
        phases: [expand]
        """,
        6,
        5,
        "unknown key 'typ' in columns.balance; did you mean 'type'?",
    ),
    Bad(
        "unknown_phase_kind",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases:
          - expand
          - dual_writes
        """,
        8,
        5,
        "unknown phase kind 'dual_writes' in phases[1]; did you mean 'dual_write'?",
    ),
    Bad(
        "unknown_phase_kind_lists_kinds",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases:
          - expand
          - reindex: {fast: true}
        """,
        8,
        5,
        "the kinds are expand, dual_write, backfill, verify, shadow_read, gate, cutover, "
        "contract, sql",
    ),
    Bad(
        "phase_options_not_indented",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases:
          - expand
          - dual_write
          - backfill:
            batch_size: 100
        """,
        9,
        5,
        "a phase entry holds one kind, found 2 keys (backfill, batch_size)",
    ),
    Bad(
        "lock_timeout_without_unit",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        settings:
          lock_timeout: 5
        phases: [expand]
        """,
        7,
        17,
        "settings.lock_timeout: 5 is not a duration: write a number and a unit",
    ),
    Bad(
        "batch_time_in_words",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        settings:
          batch_time: 2 seconds
        phases: [expand]
        """,
        7,
        15,
        "settings.batch_time: '2 seconds' is not a duration",
    ),
    Bad(
        "batch_time_zero",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        settings:
          batch_time: 0ms
        phases: [expand]
        """,
        7,
        15,
        "settings.batch_time: must be at least 1ms",
    ),
    Bad(
        "on_failure_misspelled",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        settings: {on_failure: rolback}
        phases: [expand]
        """,
        6,
        24,
        "expected 'rollback' or 'pause', found the text 'rolback'; did you mean 'rollback'?",
    ),
    Bad(
        "lock_retries_zero",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        settings: {lock_retries: 0}
        phases: [expand]
        """,
        6,
        26,
        "settings.lock_retries: must be at least 1, found the number 0",
    ),
    Bad(
        "missing_table",
        """\
        version: 1
        name: widen_balance
        columns:
          balance: {type: bigint}
        phases: [expand]
        """,
        1,
        1,
        "missing required key 'table'",
    ),
    Bad(
        "empty_table",
        """\
        version: 1
        name: widen_balance
        table:
        columns:
          balance: {type: bigint}
        phases: [expand]
        """,
        3,
        None,
        "table: expected text, found an empty value",
    ),
    Bad(
        "missing_version",
        """\
        # widen the balance
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases: [expand]
        """,
        2,
        1,
        "missing required key 'version'",
    ),
    Bad(
        "wrong_version",
        """\
        version: 2
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases: [expand]
        """,
        1,
        10,
        "unsupported plan version 2; this pgshift reads version 1",
    ),
    Bad(
        "name_uppercase",
        """\
        version: 1
        name: WidenBalance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases: [expand]
        """,
        2,
        7,
        "name must start with a lowercase letter",
    ),
    Bad(
        "name_too_long",
        f"""\
        version: 1
        name: {"n" * 49}
        table: public.accounts
        columns:
          balance: {{type: bigint}}
        phases: [expand]
        """,
        2,
        7,
        "(at most 48 characters)",
    ),
    Bad(
        "columns_and_new_table",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        new_table:
          name: public.accounts_v2
          create: CREATE TABLE public.accounts_v2 (id bigint PRIMARY KEY)
        phases: [expand]
        """,
        6,
        1,
        "exactly one of `columns` or `new_table`, not both",
    ),
    Bad(
        "neither_columns_nor_new_table",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        phases: [expand]
        """,
        1,
        1,
        "a plan needs one of `columns` (change in place) or `new_table`",
    ),
    Bad(
        "empty_columns",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns: {}
        phases: [expand]
        """,
        4,
        10,
        "columns needs at least one column",
    ),
    Bad(
        "column_name_not_text",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          2024: {type: bigint}
        phases: [expand]
        """,
        5,
        3,
        "key '2024' in columns must be text; quote it",
    ),
    Bad(
        "no_phases",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases: []
        """,
        6,
        9,
        "phases: needs at least 1 entry",
    ),
    Bad(
        "duplicate_phase",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases:
          - expand
          - dual_write
          - backfill
          - backfill: {batch_size: 10}
        """,
        10,
        5,
        "phase 'backfill' appears twice (entries 3 and 4)",
    ),
    Bad(
        "contract_before_cutover",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases:
          - expand
          - dual_write
          - backfill
          - contract
          - cutover
        """,
        10,
        5,
        "phase 'contract' (entry 4) must come after 'cutover'",
    ),
    Bad(
        "backfill_before_dual_write",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases:
          - expand
          - backfill
          - dual_write
        """,
        8,
        5,
        "phase 'backfill' (entry 2) must come after 'dual_write'",
    ),
    Bad(
        "phase_after_contract",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases:
          - expand
          - dual_write
          - backfill
          - cutover
          - contract
          - verify
        """,
        12,
        5,
        "contract is the point of no return: only sql phases may follow it",
    ),
    Bad(
        "sql_without_down",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases:
          - expand
          - sql:
              up: CREATE INDEX CONCURRENTLY accounts_balance ON accounts (balance)
        """,
        8,
        5,
        "phases[1].sql: a sql phase needs `down`, or `irreversible: true`",
    ),
    Bad(
        "gate_without_name",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases:
          - expand
          - gate:
              approval: true
        """,
        9,
        7,
        "missing required key 'name' in phases[1].gate",
    ),
    Bad(
        "two_gates_one_name",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases:
          - expand
          - gate: {name: check}
          - gate: {name: check}
        """,
        9,
        5,
        "two phases are named 'check'",
    ),
    Bad(
        "shadow_read_without_queries",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases:
          - expand
          - dual_write
          - backfill
          - shadow_read
        """,
        10,
        5,
        "missing required key 'queries' in phases[3].shadow_read",
    ),
    Bad(
        "duplicate_key",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        table: public.users
        phases: [expand]
        """,
        6,
        1,
        "duplicate key 'table' (first written at line 3)",
    ),
    Bad(
        "duplicate_nested_key",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        settings:
          lock_timeout: 1s
          batch_size: 100
          lock_timeout: 2s
        phases: [expand]
        """,
        9,
        3,
        "duplicate key 'lock_timeout' in settings (first written at line 7)",
    ),
    Bad(
        "yaml_syntax_error",
        """\
        version: 1
        name: widen_balance
          table: public.accounts
        """,
        3,
        8,
        "invalid YAML: mapping values are not allowed here",
    ),
    Bad(
        "yaml_unclosed_flow",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases: [expand, dual_write
        """,
        7,
        1,
        "invalid YAML: expected ',' or ']'",
    ),
    Bad(
        "tab_indent",
        "version: 1\nname: widen_balance\ncolumns:\n\tbalance: {type: bigint}\n",
        4,
        1,
        "indent with spaces, not tabs",
    ),
    Bad(
        "missing_env_var",
        """\
        version: 1
        name: widen_balance
        table: ${PLAN_SCHEMA}.accounts
        columns:
          balance: {type: bigint}
        phases: [expand]
        """,
        3,
        8,
        "environment variable PLAN_SCHEMA is not set (used in table)",
    ),
    Bad(
        "missing_env_var_in_block_text",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          email_lower:
            type: text
            up: |
              lower(email)
                || '${EMAIL_SUFFIX}'
        phases: [expand]
        """,
        9,
        13,
        "environment variable EMAIL_SUFFIX is not set (used in columns.email_lower.up)",
    ),
    Bad(
        "unclosed_variable",
        """\
        version: 1
        name: widen_balance
        description: costs ${5
        table: public.accounts
        columns:
          balance: {type: bigint}
        phases: [expand]
        """,
        3,
        20,
        "'${' is not closed; write '$${' for a literal '${'",
    ),
    Bad("empty_file", "", 1, 1, "the plan file is empty"),
    Bad("only_comments", "# a plan\n\n# to be written\n", 1, 1, "the plan file is empty"),
    Bad(
        "top_level_list",
        """\
        - version: 1
        - name: widen_balance
        """,
        1,
        1,
        "a plan is a mapping of keys (version, name, table, ...), found a list",
    ),
    Bad("top_level_text", "widen the balance\n", 1, 1, "found the text 'widen the balance'"),
    Bad(
        "two_documents",
        """\
        version: 1
        ---
        version: 1
        """,
        2,
        1,
        "expected a single document in the stream, but found another document",
    ),
    Bad(
        "recursive_alias",
        """\
        version: 1
        name: widen_balance
        table: public.accounts
        columns: &loop
          balance: *loop
        phases: [expand]
        """,
        5,
        3,
        "an alias refers to a value that contains it",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[case.id for case in BAD])
def test_malformed_plan(case: Bad) -> None:
    error = load_error(dedent(case.text))
    assert error.where is not None
    file, line, column = error.where.split(":")
    assert (file, int(line)) == ("plan.yaml", case.line), str(error)
    if case.column is not None:
        assert int(column) == case.column, str(error)
    assert case.fragment in error.message
    assert "\n" not in str(error)
    assert "Value error" not in error.message
    assert error.exit_code == ExitCode.USAGE


def test_spec_example_columns() -> None:
    loaded = load(SPEC_COLUMNS + "\n" + SPEC_REST)
    plan = loaded.plan
    assert plan.target == "columns"
    assert plan.name == "widen_account_balance"
    assert plan.key == ["id"]
    assert plan.columns is not None
    assert plan.columns["balance"].nullable is False
    assert plan.columns["balance"].default == "0"
    assert plan.columns["email_lower"].up == "lower(email)"
    assert plan.settings.lock_timeout == timedelta(seconds=1)
    assert plan.settings.statement_timeout == timedelta(0)
    assert plan.settings.throttle_query is None
    assert plan.phase_names() == [
        "expand",
        "dual_write",
        "backfill",
        "verify",
        "shadow_read",
        "before_cutover",
        "cutover",
        "contract",
    ]
    backfill = plan.phases[2]
    assert isinstance(backfill, BackfillPhase)
    assert backfill.batch_size == 20000
    gate = plan.phases[5]
    assert isinstance(gate, GatePhase)
    assert gate.approval is True


def test_spec_example_new_table() -> None:
    head = SPEC_COLUMNS.split("\ncolumns:")[0] + "\n"
    plan = load(head + SPEC_NEW_TABLE + "\n" + SPEC_REST).plan
    assert plan.target == "new_table"
    assert plan.new_table is not None
    assert plan.new_table.name == "public.accounts_v2"
    assert plan.new_table.create.startswith("CREATE TABLE public.accounts_v2 (")
    assert plan.new_table.columns == {"balance": "coalesce(balance, 0)::bigint"}
    assert plan.new_table.reverse == {"balance": "balance::integer"}


def test_spec_example_as_written_has_both_targets() -> None:
    text = SPEC_COLUMNS + SPEC_NEW_TABLE + SPEC_REST
    line = text.splitlines().index(SPEC_NEW_TABLE.splitlines()[0]) + 1
    error = load_error(text)
    assert error.where == f"plan.yaml:{line}:1"
    assert "not both" in error.message


MINIMAL = """\
version: 1
name: widen_balance
table: public.accounts
columns:
  balance: {type: bigint}
phases: [expand, dual_write, backfill]
"""


def test_yaml_11_booleans_stay_text() -> None:
    plan = load(
        dedent("""\
        version: 1
        name: flags
        table: public.flags
        columns:
          on: {type: boolean}
          yes: {type: text, default: no}
          off: {type: text, nullable: false}
        phases: [expand]
        """)
    ).plan
    assert plan.columns is not None
    assert list(plan.columns) == ["on", "yes", "off"]
    assert plan.columns["yes"].default == "no"
    assert plan.columns["off"].nullable is False


def test_env_substitution() -> None:
    text = dedent("""\
        version: 1
        name: widen_balance
        description: "Run by ${USER} on ${HOST}"
        table: ${SCHEMA}.accounts
        columns:
          ${NOT_A_VARIABLE}: {type: bigint, up: "'${PREFIX}' || name"}
        settings:
          lock_timeout: ${LOCK_TIMEOUT}
          batch_size: ${BATCH_SIZE}
        phases: [expand]
        """)
    env = {
        "USER": "ana",
        "HOST": "db1",
        "SCHEMA": "billing",
        "PREFIX": "x",
        "LOCK_TIMEOUT": "2s",
        "BATCH_SIZE": "5000",
    }
    plan = load(text, env).plan
    assert plan.description == "Run by ana on db1"
    assert plan.table == "billing.accounts"
    assert plan.columns is not None
    assert list(plan.columns) == ["${NOT_A_VARIABLE}"]  # keys are not substituted
    assert plan.columns["${NOT_A_VARIABLE}"].up == "'x' || name"
    assert plan.settings.lock_timeout == timedelta(seconds=2)
    # an unquoted ${VAR} reads as if its value had been written there: a number here
    assert plan.settings.batch_size == 5000


def test_env_substitution_in_quotes_stays_text() -> None:
    text = MINIMAL + 'description: "${N}"\n'
    assert load(text, {"N": "42"}).plan.description == "42"


def test_env_defaults_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSHIFT_TEST_TABLE", "public.ledger")
    text = MINIMAL.replace("public.accounts", "${PGSHIFT_TEST_TABLE}")
    assert load_plan_text(text).plan.table == "public.ledger"


def test_dollar_escape() -> None:
    text = MINIMAL + "description: 'costs $$5, literal $${HOME} and ${CURRENCY}'\n"
    plan = load(text, {"CURRENCY": "EUR"}).plan
    assert plan.description == "costs $$5, literal ${HOME} and EUR"


def test_invalid_variable_name() -> None:
    error = load_error(MINIMAL + "description: ${NAME:-x}\n")
    assert error.where == "plan.yaml:7:14"
    assert "'${NAME:-x}' is not a variable" in error.message


def test_variable_in_flow_mapping_needs_quotes() -> None:
    text = MINIMAL.replace("backfill]", "{backfill: {batch_size: ${N}}}]")
    error = load_error(text, {"N": "10"})
    assert "quote a ${VAR} written inside [...] or {...}" in error.message


def test_hash_ignores_formatting() -> None:
    block = dedent("""\
        # widen the balance
        version: 1
        name: widen_balance
        table: public.accounts

        columns:
          balance:
            type: bigint     # new type
        settings:
          lock_timeout: 1000ms
        phases:
          - expand
          - dual_write
          - backfill:
              batch_size: 500
        """)
    flow = dedent("""\
        {version: 1, name: widen_balance, table: "public.accounts",
         columns: {balance: {type: bigint}}, settings: {lock_timeout: 1s},
         phases: [expand, dual_write, {backfill: {batch_size: 500}}]}
        """)
    first, second = load(block), load(flow)
    assert re.fullmatch(r"[0-9a-f]{64}", first.sha256)
    assert first.sha256 == second.sha256
    assert first.text == block


def test_hash_changes_with_meaning() -> None:
    base = load(MINIMAL).sha256
    assert load(MINIMAL.replace("bigint", "numeric")).sha256 != base
    assert load(MINIMAL + "settings: {batch_pause: 10ms}\n").sha256 != base
    assert load(MINIMAL.replace("[expand, dual_write, backfill]", "[expand]")).sha256 != base
    # a setting at its default is what the plan says without it (so a setting a newer pgshift
    # adds, at its default, leaves the hash of a running migration's plan as it was)
    assert load(MINIMAL + "settings: {batch_pause: 0, on_failure: rollback}\n").sha256 == base


def test_merge_keys() -> None:
    text = dedent("""\
        version: 1
        name: widen_balance
        table: public.accounts
        columns:
          a: &money
            type: bigint
            nullable: false
          b:
            <<: *money
            type: numeric
        phases: [expand]
        """)
    plan = load(text).plan
    assert plan.columns is not None
    assert plan.columns["b"].type == "numeric"
    assert plan.columns["b"].nullable is False


def test_source_positions() -> None:
    loaded = load(MINIMAL + "settings:\n  lock_timeout: 2s\n")
    source = loaded.source
    assert source.where(("settings", "lock_timeout")) == "plan.yaml:8:17"
    assert source.where(("settings", "lock_timeout"), at_key=True) == "plan.yaml:8:3"
    assert source.where(("phases", 1)) == "plan.yaml:6:18"
    # a path that is not written points at the deepest part that is
    assert source.where(("settings", "batch_size")) == "plan.yaml:8:3"
    assert source.where(("columns", "balance", "up")) == "plan.yaml:5:12"
    assert source.where(()) == "plan.yaml:1:1"


def test_load_plan_from_file(tmp_path: Path) -> None:
    path = tmp_path / "widen.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    loaded = load_plan(path, env={})
    assert loaded.plan.name == "widen_balance"
    assert loaded.source.file == str(path)
    assert loaded.sha256 == load(MINIMAL).sha256


def test_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "widen.yaml"
    path.write_text(MINIMAL.replace("version: 1", "version: 3"), encoding="utf-8")
    with pytest.raises(PlanError) as info:
        load_plan(path, env={})
    assert info.value.where == f"{path}:1:10"
    assert str(info.value).startswith(f"{path}:1:10: unsupported plan version 3")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert info.value.where is None
    assert str(path) in info.value.message
    assert "does not exist" in info.value.message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError) as info:
        load_plan(tmp_path)
    assert info.value.where is None
    assert "is a directory" in info.value.message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\nname: caf\xe9\n")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert info.value.where == f"{path}:2:10"
    assert "not UTF-8" in info.value.message


def test_control_character() -> None:
    error = load_error(MINIMAL + "description: a\x07b\n")
    assert error.where == "plan.yaml:7:15"
    assert "unacceptable character #x0007" in error.message


def test_sub_millisecond_lock_timeout_is_refused() -> None:
    # PostgreSQL counts whole milliseconds: 0.4ms would round to 0, which means "no limit"
    text = "version: 1\nname: x\ntable: t\ncolumns: {a: {type: int}}\nsettings: {lock_timeout: 0.4ms}\nphases: [expand]\n"
    with pytest.raises(PlanError, match="must be at least 1ms"):
        load_plan_text(text)


def test_every_error_of_a_plan_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    from pgshift.errors import PlanErrors

    path = tmp_path / "bad.yaml"
    path.write_text(
        dedent(
            """\
            version: 1
            name: bad
            tabel: public.accounts
            columns:
              balance: {type: bigint, nullable: maybe}
            settings:
              batch_size: -3
            phases: [expand, dual_write, backfil]
            """
        )
    )
    with pytest.raises(PlanErrors) as caught:
        load_plan(path)
    wheres = [e.where.rsplit(":", 2)[1:] for e in caught.value.errors if e.where]
    assert wheres == [["3", "1"], ["5", "37"], ["7", "15"], ["8", "30"]]
    messages = [e.message for e in caught.value.errors]
    assert "did you mean 'table'" in messages[0]  # the misspelt key, not a missing `table`
    assert not any("missing required key" in m for m in messages)
    assert "backfil" in messages[3]
    assert str(caught.value).endswith("(and 3 more error(s) in the plan)")
    assert caught.value.exit_code == ExitCode.USAGE
