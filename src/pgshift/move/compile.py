"""A move plan + what the source says -> phases of steps on two servers.

The one place that decides what a move runs: `migrate plan`, the runbook and the move's
executor all read its output. Each phase's steps and their rollback, in order:

- expand: the marker table and fence function on the source; on the destination, in one
  transaction, the schemas, the tables as pg_dump describes them (before-copy half), the marker
  table, and fence triggers so nothing but replication writes there before cutover. Rollback
  drops what it made on each side.
- dual_write: the publication on the source, the subscription (initial copy on) on the
  destination. Rollback drops the subscription, its slots and the publication.
- backfill: wait for the copy, build the after-copy half (indexes, UNIQUE, foreign keys...),
  then wait until the destination has applied everything written so far (streaming).
- verify: row-hash comparison across the servers.
- cutover: hook before_fence; wait until close; fence the source; wait until the destination
  has applied everything; sequences; drop the forward subscription; publication and
  subscription back (no copy); lift the destination's fence; hook after_fence. Its rollback
  does the mirror image, so writes made on the destination come back to the source.
- contract: the subscription back, the publications, the marker tables and the destination's
  fence function go. The source's tables stay, fenced. The point of no return.
"""

from __future__ import annotations

from psycopg import sql

from pgshift.db import Query
from pgshift.move.catalog import MovedTable, Name, display
from pgshift.move.names import Direction, MoveNames, publisher, subscriber
from pgshift.move.schema import MovedSchema, done_query
from pgshift.move.steps import (
    CatchUp,
    CompiledMove,
    Fence,
    Hook,
    MovePhase,
    MoveStep,
    MoveVerify,
    Subscribe,
    SyncSequences,
    Unsubscribe,
    WaitCopy,
)
from pgshift.phases.base import LockLevel, Server, SqlStep, exists_query
from pgshift.phases.gate import gate_step
from pgshift.plan.durations import format_duration
from pgshift.plan.model import GatePhase, Plan, VerifyPhase

SOURCE_FENCE_MESSAGE = (
    "writes to %I.%I are refused here: pgshift migration {} moves it to another server;"
    " write to the destination"
)
DESTINATION_FENCE_MESSAGE = (
    "writes to %I.%I are refused here: it is a copy pgshift migration {} keeps in step with"
    " the source until cutover; write to the source"
)


class MoveCompiler:
    def __init__(
        self,
        plan: Plan,
        names: MoveNames,
        tables: tuple[MovedTable, ...],
        schema: MovedSchema,
        shown: dict[Server, str],
    ) -> None:
        assert plan.move is not None
        self.plan = plan
        self.move = plan.move
        self.names = names
        self.tables = tables
        self.schema = schema
        self.shown = shown  # each server's DSN as shown: password hidden

    # ------------------------------------------------------------ shared pieces

    @property
    def sequences(self) -> tuple[Name, ...]:
        return tuple(dict.fromkeys(s for t in self.tables for s in t.sequences))

    def table_list(self, with_marker: bool = True) -> Query:
        idents = [t.ident for t in self.tables]
        if with_marker:
            idents.append(self.names.marker)
        return sql.SQL(", ").join(idents)

    def publication(self, direction: Direction) -> SqlStep:
        name = self.names.channel(direction)
        server = publisher(direction)
        return SqlStep(
            description=f"publish the moved tables on the {server} ({name})",
            statements=(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    sql.Identifier(name), self.table_list()
                ),
            ),
            lock="SHARE UPDATE EXCLUSIVE",
            done_if=exists_query("SELECT FROM pg_publication WHERE pubname = {}", name),
            hold="milliseconds (reads and writes continue)",
            server=server,
        )

    def drop_publication(self, direction: Direction) -> SqlStep:
        name = self.names.channel(direction)
        server = publisher(direction)
        return SqlStep(
            description=f"drop the publication {name} on the {server}",
            statements=(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)),),
            lock="none",
            server=server,
        )

    def subscribe(self, direction: Direction, copy_data: bool) -> Subscribe:
        name = self.names.channel(direction)
        source = publisher(direction)
        copy = "copying every row first" if copy_data else "no copy: it has every row already"
        return Subscribe(
            description=f"subscribe the {subscriber(direction)} to the {source} ({name}; {copy})",
            direction=direction,
            copy_data=copy_data,
            server=subscriber(direction),
            preview=(
                sql.SQL(
                    "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (copy_data = {});"
                )
                .format(
                    sql.Identifier(name),
                    sql.Literal(self.shown[source]),
                    sql.Identifier(name),
                    sql.SQL("true" if copy_data else "false"),
                )
                .as_string(),
                f"-- (the connection string as given to pgshift for the {source}; a password"
                " in it is sent, never shown)",
            ),
        )

    def unsubscribe(self, direction: Direction) -> Unsubscribe:
        name = self.names.channel(direction)
        ident = sql.Identifier(name).as_string()
        return Unsubscribe(
            description=f"drop the subscription {name} on the {subscriber(direction)}, and its"
            f" replication slots on the {publisher(direction)}",
            direction=direction,
            server=subscriber(direction),
            preview=(
                f"DROP SUBSCRIPTION IF EXISTS {ident};",
                f"-- if the {publisher(direction)} cannot be reached: ALTER SUBSCRIPTION"
                f" {ident} DISABLE; ALTER SUBSCRIPTION {ident} SET (slot_name = NONE); DROP"
                f" SUBSCRIPTION {ident};",
                f"-- then, on the {publisher(direction)}, any slot of it still there:"
                f" SELECT pg_drop_replication_slot({sql.Literal(name).as_string()});",
            ),
        )

    def catch_up(self, direction: Direction, mode: str) -> CatchUp:
        marker = self.names.marker.as_string()
        source, target = publisher(direction), subscriber(direction)
        if mode == "streaming":
            text = f"wait until the {target} has applied every change made so far (streaming)"
            limit = None
        elif mode == "close":
            limit = self.move.max_lag
            text = f"wait until the {target} is less than {format_duration(limit)} behind"
        else:
            limit = self.move.fence_timeout
            text = (
                f"wait until the {target} has applied every write committed on the {source}"
                f" (at most fence_timeout {format_duration(limit)}, then cutover fails)"
            )
        return CatchUp(
            description=text,
            direction=direction,
            mode="streaming" if mode == "streaming" else "close" if mode == "close" else "fenced",
            limit=limit,
            server=target,
            preview=(
                f"-- on the {source}: UPDATE {marker} SET n = n + 1 RETURNING n;",
                f"-- on the {target}: SELECT n FROM {marker}; until it has that n",
            ),
        )

    def sync_sequences(self, direction: Direction) -> SyncSequences:
        source, target = publisher(direction), subscriber(direction)
        names = self.sequences
        return SyncSequences(
            description=f"set {len(names)} sequence(s) on the {target} past the {source}'s values",
            direction=direction,
            sequences=names,
            server=target,
            preview=tuple(
                f"SELECT setval({sql.Literal(display(n)).as_string()}, <the {source}'s last value>,"
                " true);  -- when that is ahead"
                for n in names
            )
            or ("-- the moved tables use no sequence",),
        )

    def fence(self, server: Server, starts_window: bool = False) -> Fence:
        template = SOURCE_FENCE_MESSAGE if server == "source" else DESTINATION_FENCE_MESSAGE
        message = template.format(self.plan.name)
        statements: list[Query] = []
        trigger = sql.Identifier(self.names.fence_trigger)
        for table in self.tables:
            statements.append(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, table.ident)
            )
            statements.append(
                sql.SQL(
                    "CREATE TRIGGER {} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {}"
                    " FOR EACH STATEMENT EXECUTE FUNCTION {}({})"
                ).format(trigger, table.ident, self.fence_function, sql.Literal(message))
            )
        return Fence(
            description=f"fence the moved tables on the {server}: every write to them fails"
            " there from now on",
            server=server,
            statements=tuple(statements),
            starts_window=starts_window,
        )

    def unfence(self, server: Server) -> SqlStep:
        trigger = sql.Identifier(self.names.fence_trigger)
        return SqlStep(
            description=f"lift the fence on the {server}: writes to the moved tables succeed"
            " there from now on",
            statements=tuple(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, t.ident)
                for t in self.tables
            ),
            lock="SHARE ROW EXCLUSIVE",
            server=server,
        )

    @property
    def fence_function(self) -> sql.Identifier:
        return self.names.fence_function

    def fence_function_sql(self) -> Query:
        return sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $pgshift$"
            " BEGIN RAISE EXCEPTION USING ERRCODE = 'read_only_sql_transaction',"
            " MESSAGE = format(TG_ARGV[0], TG_TABLE_SCHEMA, TG_TABLE_NAME),"
            " HINT = 'pgshift fenced this table (see `migrate status`)'; END $pgshift$"
        ).format(self.fence_function)

    def marker_sql(self) -> Query:
        return sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id int PRIMARY KEY CHECK (id = 1),"
            " n bigint NOT NULL DEFAULT 0, at timestamptz)"
        ).format(self.names.marker)

    def hook(self, which: str, direction: Direction) -> list[MoveStep]:
        command = getattr(self.move.hooks, which)
        if not command:
            return []
        back = " (back to the source)" if direction == "back" else ""
        return [
            Hook(
                description=f"run the {which} hook{back}",
                which="before_fence" if which == "before_fence" else "after_fence",
                direction=direction,
                command=command,
                timeout=self.move.hooks.timeout,
            )
        ]

    def drop_state_schema_if_empty(self) -> Query:
        """The state schema on the destination goes with the last object in it."""
        body = (
            "BEGIN EXECUTE format('DROP SCHEMA IF EXISTS %I', {}); EXCEPTION WHEN"
            " dependent_objects_still_exist THEN NULL; END"
        )
        inner = sql.SQL(body).format(sql.Literal(self.names.state_schema)).as_string()
        return sql.SQL("DO {}").format(sql.Literal(inner))

    # ------------------------------------------------------------ phases

    def expand(self, index: int) -> MovePhase:
        names = self.names
        source = SqlStep(
            description=f"create the marker table and the fence function in"
            f" {names.state_schema} on the source",
            statements=(
                self.marker_sql(),
                sql.SQL("INSERT INTO {} (id) VALUES (1) ON CONFLICT DO NOTHING").format(
                    names.marker
                ),
                self.fence_function_sql(),
            ),
            lock="none",
        )
        statements: list[Query] = [sql.SQL("SELECT pg_catalog.set_config('search_path', '', true)")]
        for schema in dict.fromkeys([*self.schema.schemas, names.state_schema]):
            statements.append(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )
        statements.append(self.marker_sql())
        statements.append(self.fence_function_sql())
        statements += [sql.SQL(text) for text in self.schema.before_copy]
        statements += self.fence("destination").statements
        exists = sql.SQL("SELECT {}").format(
            sql.SQL(" AND ").join(
                sql.SQL("to_regclass({}) IS NOT NULL").format(sql.Literal(t.ident.as_string()))
                for t in self.tables
            )
        )
        destination = SqlStep(
            description=f"create {len(self.tables)} table(s) on the destination (with their"
            " sequences, defaults, checks, primary keys, owners and grants; fenced until"
            " cutover) and the marker table",
            statements=tuple(statements),
            lock="none",
            done_if=exists,
            server="destination",
        )
        moved = [t.ident for t in self.tables]
        loose = [s for s in self.sequences if s not in {t.qualified for t in self.tables}]
        drop_destination: list[Query] = [
            sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join(moved))
        ]
        if loose:
            drop_destination.append(
                sql.SQL("DROP SEQUENCE IF EXISTS {}").format(
                    sql.SQL(", ").join(sql.Identifier(*s) for s in loose)
                )
            )
        drop_destination += [
            sql.SQL("DROP TABLE IF EXISTS {}").format(names.marker),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(self.fence_function),
            self.drop_state_schema_if_empty(),
        ]
        return MovePhase(
            index=index,
            kind="expand",
            name="expand",
            forward=(source, destination),
            rollback=(
                SqlStep(
                    description="drop the moved tables (and their sequences) and the marker"
                    " table on the destination",
                    statements=tuple(drop_destination),
                    lock="ACCESS EXCLUSIVE",
                    server="destination",
                    hold="milliseconds (the destination takes no application traffic yet)",
                ),
                SqlStep(
                    description="drop the marker table and the fence function on the source",
                    statements=(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(names.marker),
                        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(self.fence_function),
                    ),
                    lock="none",
                ),
            ),
            summary=f"the schema of {len(self.tables)} table(s) on the destination, fenced",
        )

    def dual_write(self, index: int) -> MovePhase:
        return MovePhase(
            index=index,
            kind="dual_write",
            name="dual_write",
            forward=(self.publication("forward"), self.subscribe("forward", copy_data=True)),
            rollback=(self.unsubscribe("forward"), self.drop_publication("forward")),
            summary="publication on the source, subscription (and its slot) on the destination:"
            " the copy starts",
        )

    def backfill(self, index: int) -> MovePhase:
        steps: list[MoveStep] = [
            WaitCopy(
                description="wait until every table is copied (rows, rows/s and ETA in"
                " `migrate status`)",
                preview=(
                    "-- on the destination, until every table is ready ('r'):",
                    "SELECT srrelid::regclass, srsubstate FROM pg_subscription_rel WHERE srsubid ="
                    f" (SELECT oid FROM pg_subscription WHERE subname ="
                    f" {sql.Literal(self.names.forward).as_string()});",
                ),
            )
        ]
        for text in self.schema.after_copy:
            first = " ".join(text.split())
            steps.append(
                SqlStep(
                    description=f"on the destination, after the copy: {first[:90]}"
                    + ("..." if len(first) > 90 else ""),
                    statements=(sql.SQL(text),),
                    lock=_lock_of(text),
                    scans=True,
                    done_if=done_query(text),
                    server="destination",
                    hold="the build (the destination takes no application traffic yet;"
                    " replication waits meanwhile)",
                )
            )
        steps.append(self.catch_up("forward", "streaming"))
        return MovePhase(
            index=index,
            kind="backfill",
            name="backfill",
            forward=tuple(steps),
            rollback=(),
            summary=f"the copy of ~{self.rows:,} rows, then {len(self.schema.after_copy)}"
            " index(es) and constraint(s) on the destination; then streaming",
        )

    @property
    def rows(self) -> int:
        return sum(t.row_estimate or 0 for t in self.tables)

    def verify(self, index: int, spec: VerifyPhase) -> MovePhase:
        keyed = [t for t in self.tables if t.key]
        return MovePhase(
            index=index,
            kind="verify",
            name="verify",
            forward=(
                MoveVerify(
                    description="compare every row of the moved tables on both servers",
                    chunk_size=spec.chunk_size,
                ),
            ),
            rollback=(),
            summary=f"row-hash comparison of {len(keyed)} table(s) across the servers,"
            f" {spec.chunk_size:,} keys a chunk",
        )

    def gate(self, index: int, spec: GatePhase) -> MovePhase:
        step, summary = gate_step(spec)
        return MovePhase(
            index=index, kind="gate", name=spec.name, forward=(step,), rollback=(), summary=summary
        )

    def cutover(self, index: int) -> MovePhase:
        forward: list[MoveStep] = [
            *self.hook("before_fence", "forward"),
            self.catch_up("forward", "close"),
            self.fence("source", starts_window=True),
            self.catch_up("forward", "fenced"),
            self.sync_sequences("forward"),
            self.unsubscribe("forward"),
            self.publication("back"),
            self.subscribe("back", copy_data=False),
            self.unfence("destination"),
            *self.hook("after_fence", "forward"),
        ]
        rollback: list[MoveStep] = [
            *self.hook("before_fence", "back"),
            self.fence("destination"),
            self.catch_up("back", "fenced"),
            self.sync_sequences("back"),
            self.unsubscribe("back"),
            self.drop_publication("back"),
            self.subscribe("forward", copy_data=False),
            self.unfence("source"),
            *self.hook("after_fence", "back"),
        ]
        return MovePhase(
            index=index,
            kind="cutover",
            name="cutover",
            forward=tuple(forward),
            rollback=tuple(rollback),
            summary="fence the source, let the destination catch up, sequences, replication"
            " back to the source, open the destination",
        )

    def contract(self, index: int) -> MovePhase:
        names = self.names
        return MovePhase(
            index=index,
            kind="contract",
            name="contract",
            forward=(
                self.unsubscribe("back"),
                SqlStep(
                    description="drop the publication back, the marker table and the fence"
                    " function on the destination",
                    statements=(
                        sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(names.back)),
                        sql.SQL("DROP TABLE IF EXISTS {}").format(names.marker),
                        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(self.fence_function),
                        self.drop_state_schema_if_empty(),
                    ),
                    lock="none",
                    server="destination",
                ),
                self.unsubscribe("forward"),
                SqlStep(
                    description="drop the publication and the marker table on the source (its"
                    " tables stay there, fenced: drop them when you no longer need them)",
                    statements=(
                        sql.SQL("DROP PUBLICATION IF EXISTS {}").format(
                            sql.Identifier(names.forward)
                        ),
                        sql.SQL("DROP TABLE IF EXISTS {}").format(names.marker),
                    ),
                    lock="none",
                ),
            ),
            rollback=(),
            reversible=False,
            summary="replication, slots and publications dropped on both sides; the source's"
            " tables stay, fenced",
        )

    def compile(self) -> CompiledMove:
        phases: list[MovePhase] = []
        for index, spec in enumerate(self.plan.phases):
            if spec.kind == "expand":
                phases.append(self.expand(index))
            elif spec.kind == "dual_write":
                phases.append(self.dual_write(index))
            elif spec.kind == "backfill":
                phases.append(self.backfill(index))
            elif spec.kind == "verify":
                assert isinstance(spec, VerifyPhase)
                phases.append(self.verify(index, spec))
            elif spec.kind == "gate":
                assert isinstance(spec, GatePhase)
                phases.append(self.gate(index, spec))
            elif spec.kind == "cutover":
                phases.append(self.cutover(index))
            elif spec.kind == "contract":
                phases.append(self.contract(index))
            else:  # the model refuses any other kind in a move
                raise AssertionError(spec.kind)
        return CompiledMove(self.plan, self.names, self.tables, self.schema, tuple(phases))


def _lock_of(statement: str) -> LockLevel:
    head = " ".join(statement.split()).upper()
    if head.startswith("CREATE INDEX") or head.startswith("CREATE UNIQUE INDEX"):
        return "SHARE"
    if "FOREIGN KEY" in head or head.startswith("CREATE TRIGGER"):
        return "SHARE ROW EXCLUSIVE"
    return "ACCESS EXCLUSIVE"


def compile_move(
    plan: Plan,
    names: MoveNames,
    tables: tuple[MovedTable, ...],
    schema: MovedSchema,
    shown: dict[Server, str],
) -> CompiledMove:
    return MoveCompiler(plan, names, tables, schema, shown).compile()
