"""The typed plan: what a plan file says, validated, with its defaults (docs/plan-format.md).

Only the shape is checked here (types, names, required keys, phase order). What needs the
live database (does the table exist, does the expression compile) is checked by `plan.check`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from pgshift.operations.spec import OperationSpec, normalize_operation
from pgshift.plan.durations import parse_duration

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
PhaseKind = Literal[
    "expand",
    "dual_write",
    "backfill",
    "verify",
    "shadow_read",
    "gate",
    "cutover",
    "contract",
    "sql",
]
PHASE_KINDS: tuple[str, ...] = PhaseKind.__args__  # type: ignore[attr-defined]
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


class PlanRuleError(ValueError):
    """A rule broken across entries. `at` is the plan path to show it at (e.g. `("phases", 3)`),
    because pydantic locates errors from a model validator only at the model itself."""

    def __init__(self, message: str, at: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.at = at


class Strict(BaseModel):
    """Unknown keys are errors everywhere in a plan."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _batch_size(value: Any) -> Any:
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"batch_size must be 'auto' or a positive whole number, not {value!r}")
    return value


BatchSize = Annotated[int | Literal["auto"], BeforeValidator(_batch_size)]


class Settings(Strict):
    lock_timeout: Duration = timedelta(seconds=1)
    lock_retries: int = Field(default=30, ge=1, le=1000)
    statement_timeout: Duration = timedelta(0)
    batch_size: BatchSize = "auto"
    batch_time: Duration = timedelta(milliseconds=200)
    batch_pause: Duration = timedelta(0)
    max_replication_lag: Duration = timedelta(seconds=30)
    throttle_query: str | None = None
    # after each batch, sleep nice_ratio times that batch's own time (gh-ost's --nice-ratio),
    # while at least nice_min_active_sessions other sessions of the database are active (one
    # was in the last second); 0: after every batch, busy or not
    nice_ratio: float = Field(default=0.25, ge=0, le=100)
    nice_min_active_sessions: int = Field(default=1, ge=0)
    # wait while more of the database's sessions than this are active, pgshift's own apart; 0: off
    max_active_sessions: int = Field(default=0, ge=0)
    on_failure: Literal["rollback", "pause"] = "rollback"
    # key ranges walked at once: by the backfill (a connection each) and by verify (two
    # connections each, sharing one snapshot)
    workers: int = Field(default=1, ge=1, le=32)
    # cutover of a table migration: after this many lock timeouts of one step, terminate the
    # sessions holding a lock on the migrated table(s) that block it (0: never)
    terminate_blockers_after: int = Field(default=0, ge=0, le=1000)
    # ... only those whose transaction is older than this
    terminate_blockers_older_than: Duration = timedelta(seconds=10)

    @field_validator("lock_timeout", "batch_time")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        return at_least_a_millisecond(value)

    @model_validator(mode="after")
    def _attempt_left(self) -> Settings:
        after = self.terminate_blockers_after
        if after and after >= self.lock_retries:
            raise ValueError(
                f"terminate_blockers_after ({after}) must be smaller than lock_retries"
                f" ({self.lock_retries}), or no attempt is left after the blockers are terminated"
            )
        return self


def at_least_a_millisecond(value: timedelta) -> timedelta:
    # PostgreSQL's timeouts count whole milliseconds: less would round to 0, meaning "no limit"
    if value < timedelta(milliseconds=1):
        raise ValueError("must be at least 1ms")
    return value


class ColumnChange(Strict):
    """One column of the `columns` target: an existing column to change or a new one to add."""

    type: str | None = None
    up: str | None = None
    down: str | None = None
    nullable: bool | None = None
    default: str | None = None


class NewTable(Strict):
    name: str
    create: str
    columns: dict[str, str] = Field(default_factory=dict)
    reverse: dict[str, str] = Field(default_factory=dict)


def _some_columns(value: dict[str, ColumnChange]) -> dict[str, ColumnChange]:
    if not value:
        raise ValueError("columns needs at least one column")
    return value


Columns = Annotated[dict[str, ColumnChange], AfterValidator(_some_columns)]


class TableEntry(Strict):
    """One table of a plan with `tables`: its own target (`columns` or `new_table`), all of them
    compiled into one set of phases with one cutover. `with_references` (a `columns` entry):
    every column of any table whose foreign key references one of the changed columns is
    changed to the same type too, found in the catalog when the plan is applied."""

    table: str
    key: list[str] | None = Field(default=None, min_length=1)
    columns: Columns | None = None
    new_table: NewTable | None = None
    with_references: bool = False


SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Application(Strict):
    """How the application moves to the new shape. `rename`: cutover gives the new shape the
    live names under every client at once. `versions`: from expand on the new shape is served by
    a view in `schema` beside the old one; each application version picks its shape by its
    search_path, and contract (after a gate) ends the old shape."""

    mode: Literal["rename", "versions"] = "rename"
    version_schema: str | None = Field(default=None, alias="schema")

    @field_validator("version_schema")
    @classmethod
    def _schema(cls, value: str | None) -> str | None:
        if value is not None and (not SCHEMA_RE.match(value) or value.startswith("pg_")):
            raise ValueError(
                "schema must be a lowercase name of a-z, 0-9 and _ (at most 63 characters),"
                " not starting with pg_"
            )
        if value in ("public", "information_schema"):
            raise ValueError(f"schema {value!r} is not pgshift's to create and drop; name another")
        return value


class MoveHooks(Strict):
    """Commands run around cutover's fence (and the fence of its rollback): the state as JSON
    on stdin; a non-zero exit fails the step. `after_fence` is where the application's DSN (or
    its pooler) is flipped to the other server."""

    before_fence: str | None = None
    after_fence: str | None = None
    timeout: Duration = timedelta(seconds=60)


class Hooks(Strict):
    """Shell commands run when the migration records an event (docs/operations.md#hooks): the
    state as JSON on stdin. Notifications: a failing one is a warning, never a failure."""

    on_phase_start: str | None = None
    on_phase_done: str | None = None
    on_gate: str | None = None
    on_failure: str | None = None
    on_rollback: str | None = None
    on_done: str | None = None
    timeout: Duration = timedelta(seconds=60)

    def commands(self) -> dict[str, str]:
        """The hooks set, by name."""
        return {k: v for k, v in self.model_dump(exclude={"timeout"}).items() if isinstance(v, str)}


class Move(Strict):
    """The `move` target: tables (or every ordinary table of schemas) moved to another server
    over logical replication. The servers come from the command line, never from the plan."""

    tables: list[str] | None = Field(default=None, min_length=1)
    schemas: list[str] | None = Field(default=None, min_length=1)
    # every table of the database, in every schema but the system's and pgshift's own
    database: bool = False
    hooks: MoveHooks = Field(default_factory=MoveHooks)
    # cutover fences writes only once the destination is less than this behind
    max_lag: Duration = timedelta(seconds=1)
    # the longest writes stay fenced while the destination catches up; then cutover fails
    # and its rollback lifts the fence
    fence_timeout: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _something(self) -> Move:
        if self.tables is None and self.schemas is None and not self.database:
            raise ValueError("needs `tables`, `schemas` or `database: true`")
        return self


class PhaseBase(Strict):
    """One entry of `phases`. `name` is what `--until`, `--to` and gates are addressed by."""

    kind: str

    @property
    def name(self) -> str:
        named = getattr(self, "label", None)
        return str(named) if named else self.kind


class ExpandPhase(PhaseBase):
    kind: Literal["expand"]


class DualWritePhase(PhaseBase):
    kind: Literal["dual_write"]


class BackfillPhase(PhaseBase):
    kind: Literal["backfill"]
    batch_size: BatchSize | None = None
    batch_time: Duration | None = None
    batch_pause: Duration | None = None
    # key ranges walked at once (the plan's `workers` setting when not given)
    workers: int | None = Field(default=None, ge=1, le=32)

    @field_validator("batch_time")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        return None if value is None else at_least_a_millisecond(value)


class VerifyPhase(PhaseBase):
    kind: Literal["verify"]
    # 100,000 keys: one short snapshot each, few round trips (1,000-key buckets inside)
    chunk_size: int = Field(default=100_000, ge=1)


class ShadowReadPhase(PhaseBase):
    kind: Literal["shadow_read"]
    queries: list[str] = Field(min_length=1)
    max_mismatches: int = Field(default=0, ge=0)
    params_query: str | None = None


class GatePhase(PhaseBase):
    kind: Literal["gate"]
    label: str = Field(alias="name")
    approval: bool = True
    wait: Duration | None = None
    require_verify: bool = False
    # versions: the gate stays shut while a session that connected before the new version was
    # ready (before backfill finished) is still connected
    require_no_old_sessions: bool = False


class CutoverPhase(PhaseBase):
    kind: Literal["cutover"]


class ContractPhase(PhaseBase):
    kind: Literal["contract"]


class SqlPhase(PhaseBase):
    kind: Literal["sql"]
    label: str | None = Field(default=None, alias="name")
    up: str
    down: str | None = None
    irreversible: bool = False

    @model_validator(mode="after")
    def _down_required(self) -> SqlPhase:
        if self.down is None and not self.irreversible:
            raise ValueError("a sql phase needs `down`, or `irreversible: true` to accept none")
        return self


PhaseSpec = Annotated[
    ExpandPhase
    | DualWritePhase
    | BackfillPhase
    | VerifyPhase
    | ShadowReadPhase
    | GatePhase
    | CutoverPhase
    | ContractPhase
    | SqlPhase,
    Field(discriminator="kind"),
]


def _each_normalized(value: Any, normalize: Callable[[Any], Any], key: str) -> Any:
    """A list's entries each in their long form, an entry that cannot be shown at its place."""
    if not isinstance(value, list):
        return value
    normalized = []
    for index, entry in enumerate(value):
        try:
            normalized.append(normalize(entry))
        except ValueError as exc:
            raise PlanRuleError(str(exc), (key, index)) from None
    return normalized


def _normalize_phase(entry: Any) -> Any:
    """A bare kind (`expand`) or a one-key mapping (`{backfill: {batch_size: 10}}`) becomes
    `{kind: ..., **options}`, so that error locations read phases.N.KIND.OPTION like the file."""
    if isinstance(entry, str):
        return {"kind": entry}
    if isinstance(entry, dict) and len(entry) == 1:
        ((kind, options),) = entry.items()
        if options is None:
            return {"kind": kind}
        if isinstance(options, dict):
            return {"kind": kind, **options}
        raise ValueError(f"the options of phase {kind!r} are a mapping ({kind}: {{option: value}})")
    if isinstance(entry, dict) and len(entry) > 1:
        # the usual cause: options not indented under the kind
        keys = ", ".join(str(k) for k in entry)
        raise ValueError(
            f"a phase entry holds one kind, found {len(entry)} keys ({keys});"
            " indent the options under the kind"
        )
    raise ValueError("a phase is a kind (expand) or one kind with its options ({backfill: {...}})")


class Plan(Strict):
    version: Literal[1]
    name: str
    description: str | None = None
    table: str = ""  # required, except by the `move` target
    key: list[str] | None = Field(default=None, min_length=1)
    columns: Columns | None = None
    new_table: NewTable | None = None
    move: Move | None = None
    operations: list[OperationSpec] | None = Field(default=None, min_length=1)
    # several tables, each with its own target, migrated together with one cutover
    tables: list[TableEntry] | None = Field(default=None, min_length=1)
    application: Application = Field(default_factory=Application)
    settings: Settings = Field(default_factory=Settings)
    hooks: Hooks = Field(default_factory=Hooks)
    phases: list[PhaseSpec] = Field(min_length=1)

    @field_validator("phases", mode="before")
    @classmethod
    def _phases(cls, value: Any) -> Any:
        return _each_normalized(value, _normalize_phase, "phases")

    @field_validator("operations", mode="before")
    @classmethod
    def _operations(cls, value: Any) -> Any:
        return _each_normalized(value, normalize_operation, "operations")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(
                "name must start with a lowercase letter and hold only a-z, 0-9 and _"
                " (at most 48 characters)"
            )
        return value

    @model_validator(mode="after")
    def _target_and_order(self) -> Plan:
        if self.move is not None:
            check_move(self)
            return self
        if self.tables is not None:
            check_tables(self)
            check_phase_order(self.phases, versions=self.versions)
            return self
        if not self.table:
            raise PlanRuleError("missing required key 'table'")
        targets = [t for t in ("columns", "new_table", "operations") if getattr(self, t)]
        if len(targets) > 1:
            raise PlanRuleError(
                f"a plan needs exactly one of `{targets[0]}` or `{targets[1]}`, not both",
                (targets[1],),
            )
        if not targets:
            raise PlanRuleError(
                "a plan needs one of `columns` (change in place) or `new_table`, or"
                " `operations` (renames, drops, constraints, defaults, comments, indexes)"
            )
        if self.operations is not None:
            check_operations_phases(self)
            return self
        check_phase_order(self.phases, versions=self.versions)
        return self

    @property
    def versions(self) -> bool:
        """Whether both shapes are served at once through a version schema."""
        return self.application.mode == "versions"

    @property
    def view_schema(self) -> str:
        """The schema whose view shows the new shape (the new version's, in versions mode)."""
        return self.application.version_schema or f"pgshift_{self.name}"

    @property
    def target(self) -> Literal["columns", "new_table", "move", "operations", "tables"]:
        if self.move is not None:
            return "move"
        if self.tables is not None:
            return "tables"
        if self.operations is not None:
            return "operations"
        return "columns" if self.columns is not None else "new_table"

    def phase_names(self) -> list[str]:
        return [p.name for p in self.phases]

    def part(self, entry: TableEntry) -> Plan:
        """The plan of one entry of `tables`, as a one-table plan: same name, settings and
        phases (its objects are told apart by a tag, see compile.py)."""
        return self.model_copy(
            update={
                "tables": None,
                "table": entry.table,
                "key": entry.key,
                "columns": entry.columns,
                "new_table": entry.new_table,
            }
        )


def check_tables(plan: Plan) -> None:
    """What a plan with `tables` may hold: the tables only there, each once, no versions."""
    for key in ("table", "key", "columns", "new_table", "operations"):
        if getattr(plan, key):
            raise PlanRuleError(
                f"a plan with `tables` names each table's change there: move `{key}` into an"
                " entry of `tables`",
                (key,),
            )
    if plan.versions:
        raise PlanRuleError(
            "application mode versions serves one table's two shapes; with several tables use"
            " mode rename (one cutover for all), or one plan per table",
            ("application", "mode"),
        )
    assert plan.tables is not None
    seen: dict[str, int] = {}
    for index, entry in enumerate(plan.tables):
        at = ("tables", index)
        if entry.columns is not None and entry.new_table is not None:
            raise PlanRuleError(
                "a table entry needs exactly one of `columns` or `new_table`, not both",
                (*at, "new_table"),
            )
        if entry.columns is None and entry.new_table is None:
            raise PlanRuleError(
                "a table entry needs one of `columns` (change in place) or `new_table`", at
            )
        if entry.with_references and entry.columns is None:
            raise PlanRuleError(
                "with_references widens the referencing columns in place: it goes with"
                " `columns`, not `new_table` (list each referencing table as an entry of its"
                " own)",
                (*at, "with_references"),
            )
        name = entry.table.strip().lower()
        if name in seen:
            raise PlanRuleError(
                f"table {entry.table} has two entries ({seen[name] + 1} and {index + 1}); put"
                " all its changes in one",
                ("tables", index, "table"),
            )
        seen[name] = index


MOVE_PHASES = ("expand", "dual_write", "backfill", "verify", "gate", "cutover", "contract")


def check_move(plan: Plan) -> None:
    """What a `move` plan may hold: no other target, no table keys, and its phase kinds."""
    for key in ("table", "key", "columns", "new_table"):
        if getattr(plan, key):
            raise PlanRuleError(
                f"a move plan names its tables under `move`: remove `{key}`", (key,)
            )
    if plan.versions:
        raise PlanRuleError(
            "application mode versions is for changes within one server; a move has none",
            ("application",),
        )
    if plan.settings.terminate_blockers_after:
        raise PlanRuleError(
            "terminate_blockers_after is for a table migration's cutover; a move's cutover"
            " fences writes instead of swapping names: remove it",
            ("settings", "terminate_blockers_after"),
        )
    for index, phase in enumerate(plan.phases):
        if phase.kind not in MOVE_PHASES:
            raise PlanRuleError(
                f"phase {phase.kind!r} is not available in a move; its phases are"
                f" {', '.join(MOVE_PHASES)}",
                ("phases", index),
            )
        if getattr(phase, "require_verify", False):
            raise PlanRuleError(
                "require_verify is not available in a move: put a verify phase before the gate",
                ("phases", index),
            )
    check_phase_order(plan.phases)


OPERATIONS_PHASES = ("expand", "verify", "gate", "contract", "sql")


def check_operations_phases(plan: Plan) -> None:
    """What an `operations` plan may hold: expand, then contract (the point of no return),
    with a verify (counting the rows a new constraint would reject), gates and sql phases
    between; in versions mode a gate before contract, where the old version stops."""
    if plan.key is not None:
        raise PlanRuleError("an operations plan walks no rows: remove `key`", ("key",))
    for index, phase in enumerate(plan.phases):
        if phase.kind not in OPERATIONS_PHASES:
            raise PlanRuleError(
                f"phase {phase.kind!r} is not available with `operations`; its phases are"
                f" {', '.join(OPERATIONS_PHASES)}",
                ("phases", index),
            )
        if getattr(phase, "require_verify", False):
            raise PlanRuleError(
                "require_verify is not available with `operations`: put a verify phase before"
                " the gate",
                ("phases", index),
            )
    kinds = [p.kind for p in plan.phases]
    for needed in ("expand", "contract"):
        if needed not in kinds:
            raise PlanRuleError(f"an operations plan needs an {needed!r} phase", ("phases",))
    names: set[str] = set()
    for index, phase in enumerate(plan.phases):
        if phase.kind in ("expand", "verify", "contract") and kinds.index(phase.kind) < index:
            first = kinds.index(phase.kind) + 1
            raise PlanRuleError(
                f"phase {phase.kind!r} appears twice (entries {first} and {index + 1})",
                ("phases", index),
            )
        if phase.kind in ("gate", "sql") and phase.name != phase.kind:
            if phase.name in names:
                raise PlanRuleError(
                    f"two phases are named {phase.name!r}; give each a name of its own",
                    ("phases", index),
                )
            names.add(phase.name)
    expand, contract = kinds.index("expand"), kinds.index("contract")
    for index in range(contract + 1, len(kinds)):
        if kinds[index] != "sql":
            raise PlanRuleError(
                "contract is the point of no return: only sql phases may follow it",
                ("phases", index),
            )
    for index, kind in enumerate(kinds):
        if kind in ("verify", "contract") and index < expand:
            raise PlanRuleError(
                f"phase {kind!r} (entry {index + 1}) must come after 'expand'", ("phases", index)
            )
        if kind == "verify" and index > contract:
            raise PlanRuleError(
                "verify counts the rows a new constraint would reject: put it before contract",
                ("phases", index),
            )
    if plan.versions and "gate" not in kinds[expand:contract]:
        raise PlanRuleError(
            "application mode versions needs a gate between expand and contract, approved once"
            " the old version has stopped",
            ("phases", contract),
        )


# kinds that may appear at most once, in this relative order
_ORDERED = ("expand", "dual_write", "backfill", "cutover", "contract")


def check_phase_order(phases: list[PhaseSpec], versions: bool = False) -> None:
    """The order rules every plan must keep; raises PlanRuleError naming the first broken one."""
    seen: dict[str, int] = {}
    names: set[str] = set()
    for index, phase in enumerate(phases):
        if phase.kind in _ORDERED:
            if phase.kind in seen:
                first = seen[phase.kind] + 1
                raise PlanRuleError(
                    f"phase {phase.kind!r} appears twice (entries {first} and {index + 1})",
                    ("phases", index),
                )
            seen[phase.kind] = index
        if phase.kind in ("gate", "sql") and phase.name in names and phase.name != phase.kind:
            raise PlanRuleError(
                f"two phases are named {phase.name!r}; give each a name of its own",
                ("phases", index),
            )
        if phase.kind == "gate":
            names.add(phase.name)
            if getattr(phase, "require_no_old_sessions", False) and not versions:
                raise PlanRuleError(
                    "require_no_old_sessions needs application mode versions (in rename mode"
                    " every session moves at cutover)",
                    ("phases", index),
                )
        if phase.kind == "sql" and phase.name != "sql":
            names.add(phase.name)
    needs = {
        "dual_write": ("expand",),
        "backfill": ("expand", "dual_write"),
        "verify": ("backfill",),
        "shadow_read": ("backfill",),
        "cutover": ("expand", "dual_write", "backfill"),
        "contract": ("backfill", "gate") if versions else ("cutover",),
    }
    if versions and "cutover" in seen:
        raise PlanRuleError(
            "application mode versions has no cutover (no client's names are swapped): remove"
            " it; contract, after a gate, ends the old shape",
            ("phases", seen["cutover"]),
        )
    gates = [i for i, p in enumerate(phases) if p.kind == "gate"]
    if gates:
        seen["gate"] = gates[-1]  # contract must follow the last gate when it needs one
    for index, phase in enumerate(phases):
        for before in needs.get(phase.kind, ()):
            if before not in seen or seen[before] > index:
                raise PlanRuleError(
                    f"phase {phase.kind!r} (entry {index + 1}) must come after {before!r}",
                    ("phases", index),
                )
    if "contract" in seen:
        for index in range(seen["contract"] + 1, len(phases)):
            if phases[index].kind != "sql":
                raise PlanRuleError(
                    "contract is the point of no return: only sql phases may follow it",
                    ("phases", index),
                )
