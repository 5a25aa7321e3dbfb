"""Reading a plan file: YAML with positions, `${VAR}` substitution, then validation into `Plan`.

Every failure is one `PlanError` whose `where` is `file:line:column`, so a user (or an editor
reading the CLI output) can jump straight to the offending key or value.
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from pgshift.errors import PlanError, PlanErrors
from pgshift.plan.model import PHASE_KINDS, PhaseBase, Plan, PlanRuleError, Settings

YamlPath = tuple[str | int, ...]
Position = tuple[int, int]

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_BOOL = "tag:yaml.org,2002:bool"
_MERGE = "tag:yaml.org,2002:merge"
# Resolvers PyYAML's SafeLoader has that a plan must not use: YAML 1.1 booleans turn a column
# named `on` or `yes` into True; timestamps turn `2024-05-01` in a description into a date; the
# `=` value and `!`/`&`/`*` yaml tags have no safe constructor.
_DROPPED = {
    _BOOL,
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:value",
    "tag:yaml.org,2002:yaml",
}

# A plan is small; aliases expanding past this are a mistake or an alias bomb.
_MAX_VALUES = 100_000
_VARIABLE = re.compile(r"\$\$\{|\$\{([^}]*)(\}?)")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _PlanLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core booleans (true/false only) and a record of which scalars
    were written plain and untagged, the only ones re-read after `${VAR}` substitution."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.plain: set[yaml.ScalarNode] = set()

    def compose_scalar_node(self, anchor: Any) -> yaml.ScalarNode:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        node = super().compose_scalar_node(anchor)
        if getattr(event, "tag", None) is None and node.style is None:
            self.plain.add(node)
        return node


_PlanLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PlanLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass(frozen=True)
class PlanSource:
    """Where each part of a plan is written. Paths are YAML paths: mapping keys and sequence
    indexes, as in pydantic error locations (`("phases", 2, "backfill", "batch_size")`)."""

    file: str
    # (line, column), 1-based, where each value or sequence item starts; () is the document
    positions: dict[YamlPath, Position]
    # (line, column) of each mapping key, for errors about the key itself
    key_positions: dict[YamlPath, Position]

    def position(self, path: YamlPath = (), *, at_key: bool = False) -> Position:
        """The position of the deepest written prefix of `path`: a missing key is shown at
        the mapping that lacks it."""
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if at_key and end == len(path) and prefix in self.key_positions:
                return self.key_positions[prefix]
            if prefix in self.positions:
                return self.positions[prefix]
        return (1, 1)

    def where(self, path: YamlPath = (), *, at_key: bool = False) -> str:
        """`file:line:column` of `path`'s value, or of its key with `at_key`."""
        line, column = self.position(path, at_key=at_key)
        return f"{self.file}:{line}:{column}"


@dataclass(frozen=True)
class LoadedPlan:
    """A valid plan with where it came from; `text` is the file as written."""

    plan: Plan
    source: PlanSource
    text: str
    # of the normalized plan: comments and formatting do not change it, any meaning does
    sha256: str

    def position_in(self, path: YamlPath, line: int, column: int) -> Position:
        """The file position of (`line`, `column`), 1-based, inside the text at `path`: exact
        for a literal block (`|`) and a one-line value, else the value's own position."""
        value_line, value_column = self.source.position(path)
        lines = self.text.splitlines()
        written = lines[value_line - 1] if value_line - 1 < len(lines) else ""
        first = written[value_column - 1 : value_column]
        if first == "|":
            body = [text for text in lines[value_line:] if text.strip()]
            indent = len(body[0]) - len(body[0].lstrip(" ")) if body else 0
            return value_line + line, indent + column
        rest = written[value_column - 1 :].rstrip()
        one_line = first != ">" and (rest[-1:] == first if first in "'\"" else True)
        if line == 1 and first and one_line:
            quoted = 1 if first in "'\"" else 0
            return value_line, value_column + quoted + column - 1
        return value_line, value_column

    def where_in(self, path: YamlPath, line: int, column: int) -> str:
        """`file:line:column` of `position_in`."""
        at_line, at_column = self.position_in(path, line, column)
        return f"{self.source.file}:{at_line}:{at_column}"


def load_plan(path: str | Path, env: Mapping[str, str] | None = None) -> LoadedPlan:
    """Read and validate the plan file at `path`; raise `PlanError` for anything wrong."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise PlanError(f"plan file {name} does not exist") from None
    except IsADirectoryError:
        raise PlanError(f"plan file {name} is a directory") from None
    except OSError as exc:
        raise PlanError(f"cannot read plan file {name}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise PlanError(
            f"plan file is not UTF-8 text (byte 0x{raw[exc.start]:02x})", f"{name}:{line}:{column}"
        ) from None
    return load_plan_text(text, name, env)


def load_plan_text(
    text: str, filename: str = "<plan>", env: Mapping[str, str] | None = None
) -> LoadedPlan:
    """Validate plan `text`; `filename` is only used in error locations."""
    lines = _Lines(text)
    where_start = f"{filename}:1:1"
    loader: _PlanLoader | None = None
    try:
        try:
            loader = _PlanLoader(text)  # rejects unprintable characters already
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            line, column = _mark(exc.problem_mark or exc.context_mark)
            raise PlanError(_yaml_message(exc, text), f"{filename}:{line}:{column}") from None
        except yaml.reader.ReaderError as exc:
            line, column = lines.position(exc.position)
            raise PlanError(
                f"invalid YAML: unacceptable character #x{exc.character:04x} ({exc.reason})",
                f"{filename}:{line}:{column}",
            ) from None
        except yaml.YAMLError as exc:
            raise PlanError(f"invalid YAML: {_one_line(str(exc))}", where_start) from None
        if root is None:
            raise PlanError("the plan file is empty; a plan starts with `version: 1`", where_start)
        builder = _Builder(loader, lines, filename, os.environ if env is None else env)
        data = builder.build(root, ())
    except RecursionError:
        raise PlanError("the plan nests too deeply", where_start) from None
    finally:
        if loader is not None:
            loader.dispose()

    source = PlanSource(filename, builder.positions, builder.key_positions)
    if not isinstance(data, dict):
        raise PlanError(
            f"a plan is a mapping of keys (version, name, table, ...), found {_describe(data)}",
            source.where(),
        )
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        raise _explained(exc.errors(), source) from None
    # what the plan says, defaults left out: a setting a newer pgshift adds (with its default)
    # does not make a migration's plan look changed
    digest = hashlib.sha256(plan.model_dump_json(exclude_defaults=True).encode()).hexdigest()
    return LoadedPlan(plan=plan, source=source, text=text, sha256=digest)


class _Lines:
    """Character index -> 1-based (line, column), counting lines as PyYAML does for `\\n`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def position(self, index: int) -> Position:
        line = bisect.bisect_right(self._starts, index)
        return line, index - self._starts[line - 1] + 1


def _mark(mark: yaml.Mark | None) -> Position:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _yaml_message(exc: yaml.MarkedYAMLError, text: str) -> str:
    problem = _one_line(str(exc.problem or "syntax error"))
    context = _one_line(str(exc.context or ""))
    if problem.startswith("but ") and context:  # "expected a single document ..., but found"
        message = f"invalid YAML: {context}, {problem}"
    else:
        message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    if "'\\t'" in problem:
        message += "; indent with spaces, not tabs"
    mark = exc.problem_mark
    if mark is not None and text[max(mark.index - 1, 0) : mark.index + 1] == "${":
        # `{` ends a plain scalar inside [...] or {...}
        message += "; quote a ${VAR} written inside [...] or {...}"
    return message


class _Builder:
    """Turns the composed node tree into plain data, recording positions, rejecting duplicate
    keys (which PyYAML lets the last one win) and substituting `${VAR}` in string values."""

    def __init__(
        self, loader: _PlanLoader, lines: _Lines, filename: str, env: Mapping[str, str]
    ) -> None:
        self.loader = loader
        self.lines = lines
        self.filename = filename
        self.env = env
        self.positions: dict[YamlPath, Position] = {}
        self.key_positions: dict[YamlPath, Position] = {}
        self._open: set[yaml.Node] = set()
        self._count = 0

    def error(self, message: str, position: Position) -> PlanError:
        return PlanError(message, f"{self.filename}:{position[0]}:{position[1]}")

    def build(self, node: yaml.Node, path: YamlPath) -> Any:
        self._count += 1
        if self._count > _MAX_VALUES:
            raise self.error(
                f"the plan expands to more than {_MAX_VALUES} values (aliases?)",
                _mark(node.start_mark),
            )
        self.positions[path] = _mark(node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if node in self._open:
            # the node's own mark is the anchor; the key the alias sits under is the mistake
            where = self.key_positions.get(path, _mark(node.start_mark))
            raise self.error("an alias refers to a value that contains it", where)
        self._open.add(node)
        try:
            if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
                return self._mapping(node, path)
            raise self.error(f"unsupported YAML tag {_tag(node.tag)}", _mark(node.start_mark))
        finally:
            self._open.discard(node)

    def _mapping(self, node: yaml.MappingNode, path: YamlPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        # `<<: *defaults` merge keys: sources applied last-first so the earlier ones win, and
        # keys written in the mapping itself win over all of them
        merges = [value for key, value in node.value if key.tag == _MERGE]
        for merge in merges:
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for merged in reversed(sources):
                if not isinstance(merged, yaml.MappingNode):
                    raise self.error(
                        "`<<` merges a mapping or a list of mappings", _mark(merged.start_mark)
                    )
                result.update(self.build(merged, path))
        self.positions[path] = _mark(node.start_mark)

        written: dict[str, Position] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self._key(key_node, path)
            position = _mark(key_node.start_mark)
            if key in written:
                first = written[key][0]
                raise self.error(
                    f"duplicate key {key!r}{_inside(path)} (first written at line {first})",
                    position,
                )
            written[key] = position
            self.key_positions[(*path, key)] = position
            result[key] = self.build(value_node, (*path, key))
        return result

    def _key(self, node: yaml.Node, path: YamlPath) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(f"a key{_inside(path)} must be plain text", _mark(node.start_mark))
        if node.tag != _STR:
            raise self.error(
                f"key {node.value!r}{_inside(path)} must be text; quote it ('{node.value}')",
                _mark(node.start_mark),
            )
        return str(node.value)

    def _scalar(self, node: yaml.ScalarNode, path: YamlPath) -> Any:
        if node.tag == _STR and "$" in node.value:
            value = self._substitute(node, path)
            tag = _STR
            if node in self.loader.plain:
                # as if the value had been written there: `batch_size: ${N}` gives a number,
                # `"${N}"` stays text
                tag = self.loader.resolve(  # type: ignore[no-untyped-call]
                    yaml.ScalarNode, value, (True, False)
                )
            node = yaml.ScalarNode(tag, value, node.start_mark, node.end_mark, style=node.style)
        if node.tag == _MERGE:  # `<<` written as a value rather than a key
            return str(node.value)
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError):
            raise self.error(
                f"cannot read {node.value!r} as {_tag(node.tag)}", _mark(node.start_mark)
            ) from None

    def _substitute(self, node: yaml.ScalarNode, path: YamlPath) -> str:
        text: str = node.value

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name, closed = match.group(1), match.group(2)
            if not closed:
                problem = "'${' is not closed"
            elif not _VARIABLE_NAME.fullmatch(name):
                problem = f"'${{{name}}}' is not a variable: a name is letters, digits and _"
            elif name in self.env:
                return self.env[name]
            else:
                problem = f"environment variable {name} is not set"
                if path:
                    problem += f" (used in {_dotted(path)})"
                raise self.error(problem, self._locate(node, match))
            raise self.error(
                f"{problem}; write '$${{' for a literal '${{'", self._locate(node, match)
            )

        return _VARIABLE.sub(replace, text)

    def _locate(self, node: yaml.ScalarNode, match: re.Match[str]) -> Position:
        """The position of the reference in the file. The scalar's text may differ from its
        source (quotes, folding), so look for the same match in the source and fall back to
        the scalar's start when escapes make them disagree."""
        start, end = node.start_mark, node.end_mark
        if start is None or end is None:
            return _mark(start)
        ordinal = sum(1 for _ in _VARIABLE.finditer(node.value, 0, match.start()))
        written = list(_VARIABLE.finditer(self.lines.text, start.index, end.index))
        if ordinal < len(written) and written[ordinal].group(0) == match.group(0):
            return self.lines.position(written[ordinal].start())
        return _mark(start)


def _tag(tag: str) -> str:
    """`tag:yaml.org,2002:set` -> `!!set`, as it is written."""
    return tag.replace("tag:yaml.org,2002:", "!!")


def _dotted(path: YamlPath) -> str:
    """`("phases", 2, "backfill")` -> `phases[2].backfill`, the path as a user reads it."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _inside(path: YamlPath) -> str:
    return f" in {_dotted(path)}" if path else ""


def _describe(value: Any) -> str:
    """What a user wrote, in words: `the text 'lots'`, `a list`, `an empty value`."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the text {shown!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _suggest(word: object, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# pydantic error type -> what the plan should have held
_EXPECTED = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


def _explained(errors: list[ErrorDetails], source: PlanSource) -> PlanError:
    """Every error of the plan, each once, in the file's order: one PlanError, or PlanErrors."""
    found: dict[str, PlanError] = {}
    for error in _reported_errors(errors):
        explained = _explain(error, source)
        found.setdefault(str(explained), explained)
    ordered = sorted(found.values(), key=lambda e: _position_of(e.where))
    return ordered[0] if len(ordered) == 1 else PlanErrors(ordered)


def _position_of(where: str | None) -> tuple[int, int]:
    """(line, column) of a `file:line:column`, for sorting."""
    parts = (where or "").rsplit(":", 2)
    try:
        return int(parts[-2]), int(parts[-1])
    except (IndexError, ValueError):
        return (0, 0)


def _reported_errors(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """pydantic's errors, less a missing key that sits beside an unknown one (`nmae: x` is a
    misspelling of `name`, reported once as such)."""
    misspelt = {tuple(e["loc"][:-1]) for e in errors if e["type"] == "extra_forbidden"}
    return [e for e in errors if not (e["type"] == "missing" and tuple(e["loc"][:-1]) in misspelt)]


def _explain(error: ErrorDetails, source: PlanSource) -> PlanError:
    """One pydantic error as one line a user can act on, located in the file."""
    kind = error["type"]
    loc: YamlPath = tuple(error["loc"])
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    at_key = False
    if loc and loc[-1] == "[key]":  # the dict key itself is wrong
        loc, at_key = loc[:-1], True
    dotted = _dotted(loc)
    cause = ctx.get("error")

    if isinstance(cause, PlanRuleError):
        return PlanError(_one_line(str(cause)), source.where(cause.at, at_key=True))
    if kind == "extra_forbidden":
        return PlanError(_unknown_key(loc), source.where(loc, at_key=True))
    if kind == "missing":
        message = f"missing required key {loc[-1]!r}{_inside(loc[:-1])}"
        if loc == ("version",):
            message += " (the plan format version: write `version: 1`)"
        return PlanError(message, source.where(loc))
    if kind == "union_tag_invalid":
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", ""))) or list(PHASE_KINDS)
        tag = ctx.get("tag", value)
        hint = _suggest(tag, tags) or f"; the kinds are {', '.join(tags)}"
        return PlanError(f"unknown phase kind {tag!r}{_inside(loc)}{hint}", source.where(loc))

    if kind in ("value_error", "assertion_error"):
        text = _one_line(str(cause)) if cause is not None else _clean(error["msg"])
        if not loc:
            message = text
        elif text.startswith(f"{loc[-1]} "):
            message = dotted + text[len(str(loc[-1])) :]
        else:
            message = f"{dotted}: {text}"
        # a validator of a whole model (a sql phase without down) is shown at its key
        return PlanError(message, source.where(loc, at_key=_model_at(loc) is not None))
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        if loc == ("version",) and isinstance(value, int) and not isinstance(value, bool):
            message = f"unsupported plan version {value}; this pgshift reads version 1"
        else:
            choices = re.findall(r"'([^']*)'", expected)
            hint = _suggest(value, choices) if isinstance(value, str) else ""
            message = f"{dotted}: expected {expected}, found {_describe(value)}{hint}"
    elif kind in _EXPECTED:
        message = f"{dotted}: expected {_EXPECTED[kind]}, found {_describe(value)}"
        if kind == "list_type" and isinstance(value, str):
            message += f" (write [{value}])"
    elif kind in _BOUNDS:
        bound, words = _BOUNDS[kind]
        message = f"{dotted}: must be {words} {ctx.get(bound)}, found {_describe(value)}"
    elif kind == "too_short":
        least = ctx.get("min_length", 1)
        message = f"{dotted}: needs at least {least} {'entry' if least == 1 else 'entries'}"
    elif kind == "too_long":
        message = f"{dotted}: holds at most {ctx.get('max_length')} entries"
    else:
        message = f"{dotted}: {_clean(error['msg'])}" if loc else _clean(error["msg"])
    return PlanError(message, source.where(loc, at_key=at_key))


def _unknown_key(loc: YamlPath) -> str:
    key, parent = loc[-1], loc[:-1]
    model = _model_at(parent)
    allowed = _allowed_keys(model) if model is not None else []
    if not parent:
        message = f"unknown top-level key {key!r}"
        hint = _suggest(key, allowed)
        if not hint and key in Settings.model_fields:
            hint = f"; it belongs under settings (settings: {{{key}: ...}})"
        elif not hint and key in PHASE_KINDS:
            hint = f"; phases are listed under phases (phases: [..., {key}])"
        elif not hint:
            hint = f"; expected one of {', '.join(allowed)}"
        return message + hint
    message = f"unknown key {key!r} in {_dotted(parent)}"
    if model is not None and not allowed:
        return f"{message}; {parent[-1]} takes no options"
    hint = _suggest(key, allowed)
    if not hint and allowed:
        hint = f"; expected one of {', '.join(allowed)}"
    return message + hint


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    """The keys a plan may write for `model`: aliases where set, without a phase's `kind`
    (the kind is the key the options sit under)."""
    return [
        field.alias or name
        for name, field in model.model_fields.items()
        if not (name == "kind" and issubclass(model, PhaseBase))
    ]


def _model_at(path: YamlPath) -> type[BaseModel] | None:
    """The model that validates the mapping at `path`, following the plan's annotations;
    within `phases`, the discriminator tag in the path picks the phase class."""
    current: Any = Plan
    for part in path:
        current = _step(_unwrap(current), part)
        if current is None:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Strip `Annotated[...]` and `| None` down to the type that holds the structure."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _step(annotation: Any, part: str | int) -> Any:
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    if origin is list and isinstance(part, int):
        return get_args(annotation)[0]
    if origin is dict and isinstance(part, str):
        return get_args(annotation)[1]
    if origin in (Union, types.UnionType) and isinstance(part, str):
        for member in get_args(annotation):
            member = _unwrap(member)
            if isinstance(member, type) and issubclass(member, BaseModel):
                kind = member.model_fields.get("kind")
                tags = get_args(kind.annotation) if kind is not None else ()
                if get_origin(kind.annotation if kind else None) is Literal and part in tags:
                    return member
    return None


def _clean(message: str) -> str:
    """pydantic's `Value error, ...` / `Assertion failed, ...` prefixes are noise to a user."""
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    return _one_line(message)


def _one_line(message: str) -> str:
    return " ".join(message.split())
