"""Load the YAML target file into :class:`~monitor.config.MonitorFile`, or say what is wrong.

Every problem in the file is reported at once, one per line as compilers do::

    monitor.yaml:12: targets[3].expect.status[0]: '6xx' is neither a status code nor ...

The YAML is parsed with ruamel.yaml's round-trip loader only because it keeps the line of
every key and item; the data is then turned into plain dicts, `${VAR}` references are
substituted, ``defaults`` are merged into each target, and pydantic validates the result.

The file may come from anywhere, so what it can make the loader do is bounded (README, "The
target file"): only a regular file of at most MAX_FILE_BYTES is read, and before anything is
built from the YAML, a gate over its events refuses what the format does not need and what
could crash the loader or make it unbounded: tags, directives, nesting deeper than MAX_DEPTH,
mappings as keys, reused anchors, aliases that contain themselves or expand past a budget,
and numbers too long to convert.
Problems never show a value that came from the environment, a header value or a password.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor, SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from ruamel.yaml.parser import RoundTripParser
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.scanner import Scanner

from monitor.checktypes import foreign_options, type_of, without_options
from monitor.config import MERGED_MAPPINGS, DefaultOptions, MonitorFile, Target
from monitor.statuspage.options import problems as status_page_problems
from monitor.windows import MaintenanceWindow
from monitor.windows import problems as window_problems

Loc = tuple[str | int, ...]

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# What a file may make the loader do; each is in the README ("The target file").
# The largest file read; also the most that ${VAR} values may add to it.
MAX_FILE_BYTES = 32 * 1024 * 1024
# Nesting of mappings and lists; the format itself needs 5 (targets[0].expect.status[0]).
# Bounds the recursion of the parsers (libyaml's composer crashed the process at ~100,000).
MAX_DEPTH = 32
# Nodes and characters that aliases may repeat in all: this many, or as many as the file has
# characters if it is longer. A few hundred bytes of nested aliases expand past 1 GB.
MIN_ALIAS_BUDGET = 1_000_000
# Plain numbers longer than this are refused before Python converts them (ints of more than
# 4,300 digits raise; nothing in the format needs more than a few).
MAX_NUMBER_CHARS = 100

# The plain scalars YAML reads as numbers (ints in any base, floats); long ones are refused.
_NUMBER = re.compile(
    r"[-+]?(?:0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+"
    r"|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?)"
)
# The password of a URL (any scheme, or none) as written in an error: masked.
_PASSWORD = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.\-]*:)?//)?([^/?#@\s:]*):([^/?#\s]*)@")
# A substituted value at least this long is masked wherever it appears in a message;
# shorter ones would mask unrelated text ("1" in "100-599").
_MIN_MASKED = 4
_COLLECTION_KEY = "a mapping or list as a key is not allowed (keys are names)"
# What the lists that must not be empty hold, for "at least one ... is needed".
_ITEMS = {"targets": "target", "status": "status code or class", "to": "recipient"}
_FILE_KINDS = {
    stat.S_IFDIR: "directory",
    stat.S_IFIFO: "FIFO",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFSOCK: "socket",
}


class ConfigError(Exception):
    """The file cannot be used; ``problems`` holds one ``file:line: path: message`` each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> MonitorFile:
    """Read, substitute, merge and validate ``path``; raise :class:`ConfigError` if it is bad."""
    path = Path(path)
    env = os.environ if environ is None else environ
    return parse_config(_read(path), str(path), env)


def _read(path: Path) -> str:
    """The text of ``path``: a regular file of at most MAX_FILE_BYTES, in UTF-8."""
    too_big = f"{path}: cannot read: it is larger than {_size(MAX_FILE_BYTES)}"
    try:
        # Non-blocking: opening a FIFO to read would otherwise wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        msg = f"{path}: no such file (set it with --config or MONITOR_CONFIG)"
        raise ConfigError([msg]) from None
    except OSError as exc:
        msg = f"{path}: cannot read: {exc}"
        raise ConfigError([msg]) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "special file")
            msg = f"{path}: cannot read: it is a {kind}, not a regular file"
            raise ConfigError([msg])
        if info.st_size > MAX_FILE_BYTES:
            raise ConfigError([too_big])
        # At most one byte past the limit: the file may have grown since fstat (or, as /proc
        # files do, report a size of 0).
        chunks, left = [], MAX_FILE_BYTES + 1
        while chunk := os.read(fd, min(left, 1 << 20)):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        msg = f"{path}: cannot read: {exc}"
        raise ConfigError([msg]) from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError([too_big])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"{path}: cannot read: {exc}"
        raise ConfigError([msg]) from None


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit:,} bytes"


def parse_config(text: str, filename: str, environ: Mapping[str, str]) -> MonitorFile:
    """Validate YAML ``text``; ``filename`` is only used in messages.

    A good file is parsed by libyaml (ruamel's C loader: 50,000 targets in a few seconds).
    Only a file with problems is parsed again by the round-trip loader, which is four times
    slower but knows the line of every key, for the messages. What the gate refuses is said
    at once, from whichever parse found it.
    """
    try:
        try:
            return _parse(text, filename, environ, fast=True)
        except ConfigError:
            return _parse(text, filename, environ, fast=False)
    except _Refused as exc:
        msg = f"{filename}:{exc.line}: {_dotted(exc.loc)}: {exc.text}"
        raise ConfigError([msg]) from None


@dataclass(slots=True)
class _Reading:
    """What turning the parsed YAML into plain data collects besides the data."""

    environ: Mapping[str, str]
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)
    # The text as written of each value that took something from the environment, to show in
    # its place; and every value taken, to mask wherever it still shows.
    written: dict[Loc, str] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    # Characters the environment added so far (bounded by MAX_FILE_BYTES).
    added: int = 0


def _parse(text: str, filename: str, environ: Mapping[str, str], *, fast: bool) -> MonitorFile:
    tree = _yaml(text, filename, fast=fast)
    reading = _Reading(environ)
    data = _plain(tree, (), reading)
    problems = reading.problems
    raw_defaults = data.get("defaults")
    defaults = raw_defaults if isinstance(raw_defaults, dict) else {}
    raw_targets = data.get("targets")
    if isinstance(raw_targets, list):
        data["targets"] = [
            _merge_for_type(defaults, t, ("targets", i), reading) if isinstance(t, dict) else t
            for i, t in enumerate(raw_targets)
        ]
        problems += _duplicate_names(raw_targets, "targets", reading)
    raw_notifiers = data.get("notifiers")
    if isinstance(raw_notifiers, list):
        problems += _duplicate_names(raw_notifiers, "notifiers", reading)
        problems += _unknown_notifiers(data, raw_notifiers, reading)
    problems += [
        (_line_of(loc, reading.lines)[0], f"{_dotted(loc)}: {message}")
        for loc, message in status_page_problems(data)
    ]
    raw_windows = data.get("maintenance")
    if isinstance(raw_windows, list):
        problems += _duplicate_names(raw_windows, "maintenance", reading)

    try:
        # Only the YAML keys (aliases) are accepted, not the Python names such as interval_s.
        config = MonitorFile.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        problems += _explain(exc, data, reading)
        config = None
    if config is not None and config.maintenance:
        labels = {t.name: t.labels for t in config.targets}
        for loc, message in window_problems(config.maintenance, labels, time.time()):
            problems.append((_line_of(loc, reading.lines)[0], f"{_dotted(loc)}: {message}"))
    if problems or config is None:
        problems.sort(key=lambda p: p[0])
        raise ConfigError(
            [f"{filename}:{line}: {_mask(message, reading)}" for line, message in _unique(problems)]
        )
    return config


def _yaml(text: str, filename: str, *, fast: bool) -> dict[Any, Any]:
    """The parsed top-level mapping, through the gate; ConfigError if it is not one."""
    gate = _Gate(max(MIN_ALIAS_BUDGET, len(text)))
    try:
        if fast:
            # libyaml composes the whole document in C before any Python sees it: its events
            # go through the gate in a pass of their own, which costs ~8% of loading 50,000
            # targets. It is needed only for what the gate alone refuses (tags, anchors,
            # directives); nesting, long numbers and bad dates stop libyaml's path anyway.
            yaml = YAML(typ="safe")
            yaml.Resolver = _DepthResolver
            yaml.Constructor = _SafeConstructor
            if _may_have_properties(text):
                for event in yaml.parse(text):
                    gate.feed(event)
            tree = yaml.load(text)
        else:
            # The pure-Python parser hands the composer each event through the gate.
            yaml = YAML(typ="rt", pure=True)
            # The plain scanner: the lines are wanted, not the comments, whose round-trip
            # handling raised NotImplementedError ("overlap in comment") on some bad files.
            yaml.Scanner = Scanner
            yaml.Parser = _GatedParser
            yaml.Constructor = _RoundTripConstructor
            yaml.parser.gate = gate
            tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "invalid YAML"
        msg = f"{filename}:{line}: invalid YAML: {problem}"
        raise ConfigError([msg]) from None
    except YAMLError as exc:
        msg = f"{filename}: invalid YAML: {exc}"
        raise ConfigError([msg]) from None
    if tree is None:
        msg = f"{filename}:1: the file is empty: it needs a 'targets' list"
        raise ConfigError([msg])
    if not isinstance(tree, dict):
        msg = f"{filename}:1: the top level must be a mapping with a 'targets' list"
        raise ConfigError([msg])
    return tree


def _may_have_properties(text: str) -> bool:
    """Whether ``text`` may hold a YAML tag (``!``), anchor (``&``) or directive (``%``).

    Each of these starts a node (or a line), so it follows the start of the text, white space
    or one of ``[{,:`` (a byte-order mark at most). Elsewhere, as in ``?a=1&b=%20`` in a URL,
    the character is text: such files need not pay for the gate's pass (~8% of a load).
    """
    for char in "!&%":
        at = text.find(char)
        while at != -1:
            before = text[at - 1] if at else " "
            if before.isspace() or before in "[{,:\ufeff":
                return True
            at = text.find(char, at + 1)
    return False


class _Refused(Exception):
    """The gate refused the file at ``line``, at ``loc``: no need to parse it again."""

    def __init__(self, line: int, loc: Loc, text: str) -> None:
        self.line, self.loc, self.text = line, loc, text
        super().__init__(text)


class _Frame:
    """A mapping or list the gate is inside."""

    __slots__ = ("anchor", "count", "is_map", "key", "weight")

    def __init__(self, anchor: str | None, *, is_map: bool) -> None:
        self.anchor = anchor
        self.is_map = is_map
        self.count = 0  # keys and values (or items) seen so far
        self.key: str = ""  # the last key of a mapping
        self.weight = 1


class _Gate:
    """Sees every parser event before anything is built from them, and refuses what would
    crash the loader or make it use unbounded time or memory.

    An alias repeats its anchor's whole value: its weight (nodes, plus the characters of
    scalars) is counted every time, which is what building the data would cost, without
    building it. An alias inside its own anchor's value is refused outright.
    """

    __slots__ = ("anchor_lines", "anchors", "budget", "collections", "expanded", "stack")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.expanded = 0
        self.stack: list[_Frame] = []
        # An anchor's weight once its value is complete; its frame while it is still open.
        self.anchors: dict[str, int | _Frame] = {}
        self.anchor_lines: dict[str, int] = {}
        self.collections: set[str] = set()  # anchors of mappings and lists

    def feed(self, event: Any) -> None:
        kind = type(event)
        if kind is ScalarEvent:
            if event.tag is not None:
                self._refuse_tag(event)
            if event.anchor is not None:
                self._define(event)
            value = event.value
            if len(value) > MAX_NUMBER_CHARS and event.implicit[0] and _NUMBER.fullmatch(value):
                msg = (
                    f"a number of {len(value):,} characters: numbers may have at most "
                    f"{MAX_NUMBER_CHARS} (quote it if it is text)"
                )
                raise _Refused(event.start_mark.line + 1, self._loc(), msg)
            self._done(1 + len(value), event.anchor, value)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            if event.tag is not None:
                self._refuse_tag(event)
            if len(self.stack) >= MAX_DEPTH:
                msg = f"nested more than {MAX_DEPTH} levels deep"
                raise _Refused(event.start_mark.line + 1, self._loc(), msg)
            if self._at_key():
                raise _Refused(event.start_mark.line + 1, self._loc(), _COLLECTION_KEY)
            frame = _Frame(event.anchor, is_map=kind is MappingStartEvent)
            if event.anchor is not None:
                self._define(event)
                self.anchors[event.anchor] = frame
            self.stack.append(frame)
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            frame = self.stack.pop()
            self._done(frame.weight, None, "?")
            if frame.anchor is not None and self.anchors.get(frame.anchor) is frame:
                self.anchors[frame.anchor] = frame.weight
                self.collections.add(frame.anchor)
        elif kind is AliasEvent:
            weight = self.anchors.get(event.anchor, 1)  # undefined: the composer says so
            if isinstance(weight, _Frame):
                msg = (
                    f"alias *{event.anchor} is used inside its own anchor &{event.anchor} "
                    "(a value cannot contain itself)"
                )
                raise _Refused(event.start_mark.line + 1, self._loc(), msg)
            if event.anchor in self.collections and self._at_key():
                raise _Refused(event.start_mark.line + 1, self._loc(), _COLLECTION_KEY)
            self.expanded += weight
            if self.expanded > self.budget:
                msg = f"the aliases expand to more than {self.budget:,} nodes and characters"
                raise _Refused(event.start_mark.line + 1, self._loc(), msg)
            self._done(weight, None, f"*{event.anchor}")
        elif kind is DocumentStartEvent:
            if event.version is not None and tuple(event.version) != (1, 2):
                version = ".".join(str(v) for v in event.version)
                msg = f"%YAML {version} is not supported: the file is read as YAML 1.2"
                raise _Refused(event.start_mark.line + 1, (), msg)
            self.anchors.clear()
            self.anchor_lines.clear()
            self.collections.clear()

    def _define(self, event: Any) -> None:
        """A new anchor; reusing a name is refused (YAML allows it, but an alias then means
        whichever came last, and ruamel warns on stderr)."""
        line = event.start_mark.line + 1
        if event.anchor in self.anchors:
            first = self.anchor_lines[event.anchor]
            msg = f"anchor &{event.anchor} is already defined on line {first}: give each its own"
            raise _Refused(line, self._loc(), msg)
        self.anchor_lines[event.anchor] = line

    def _done(self, weight: int, anchor: str | None, key: str) -> None:
        """A node is complete: it weighs in its parent (and its anchor, if it has one)."""
        if anchor is not None:
            self.anchors[anchor] = weight
        if self.stack:
            parent = self.stack[-1]
            parent.weight += weight
            if parent.is_map and parent.count % 2 == 0:
                parent.key = key
            parent.count += 1

    def _at_key(self) -> bool:
        """Whether the next node is a mapping's key."""
        return bool(self.stack) and self.stack[-1].is_map and self.stack[-1].count % 2 == 0

    def _loc(self) -> Loc:
        """Where the next node goes, as the loader's messages show places."""
        loc: list[str | int] = []
        for frame in self.stack:
            if not frame.is_map:
                loc.append(frame.count)
            elif frame.count % 2:
                loc.append(frame.key)
            else:
                break  # a key: the mapping is the place
        return tuple(loc)

    def _refuse_tag(self, event: Any) -> None:
        tag = str(event.tag)
        if tag.startswith("tag:yaml.org,2002:"):
            tag = "!!" + tag.removeprefix("tag:yaml.org,2002:")
        elif not tag.startswith("!"):
            tag = f"!<{tag}>"
        msg = f"YAML tag {tag} is not allowed: the file needs none (quote a value to make it text)"
        raise _Refused(event.start_mark.line + 1, self._loc(), msg)


class _GatedParser(RoundTripParser):
    """The round-trip parser, handing every event to a gate as soon as it is parsed: the
    composer peeks at an event (and warns of a reused anchor) before it takes it."""

    gate: _Gate

    def _next(self) -> None:
        if self.current_event is None and self.state:
            self.current_event = self.state()
            self.gate.feed(self.current_event)

    def check_event(self, *choices: Any) -> bool:
        self._next()
        return bool(super().check_event(*choices))

    def peek_event(self) -> Any:
        self._next()
        return super().peek_event()

    def get_event(self) -> Any:
        self._next()
        return super().get_event()


class _Converting:
    """Constructor changes for both loaders: a repeated key shows no values (a header may
    carry a secret); see _converting for numbers and dates."""

    def check_mapping_key(
        self, node: Any, key_node: Any, mapping: Any, key: Any, value: Any
    ) -> bool:
        try:
            if key not in mapping:
                return True
        except TypeError:  # a key holding a mapping (an alias to one), which cannot be hashed
            raise ConstructorError(None, None, _COLLECTION_KEY, key_node.start_mark) from None
        first = next((k for k, _ in node.value if k.value == key_node.value), key_node)
        where = f" (first on line {first.start_mark.line + 1})" if first is not key_node else ""
        msg = f"duplicate key {key!r}{where}"
        raise ConstructorError(None, None, msg, key_node.start_mark)


class _SafeConstructor(_Converting, SafeConstructor):
    pass


class _RoundTripConstructor(_Converting, RoundTripConstructor):
    pass


def _converting(construct: Any) -> Any:
    """``construct`` (of a number or a date) raising a ConstructorError at the value's line for
    what Python cannot convert (``2024-13-45``), or should not (a number too long: the gate
    says so, but libyaml's path may not have run it). Only these scalars pay for the wrapper."""

    def converted(self: Any, node: Any, *args: Any) -> Any:
        kind = str(node.tag).rpartition(":")[2]
        if kind != "timestamp" and len(node.value) > MAX_NUMBER_CHARS:
            msg = f"a number of {len(node.value):,} characters"
            raise ConstructorError(None, None, msg, node.start_mark)
        try:
            return construct(self, node, *args)
        except (ValueError, ArithmeticError, LookupError) as exc:  # IndexError: ruamel, on "-_"
            # Why a date is no date is worth saying (month 13); Python's words on ints are not.
            why = f" ({exc})" if kind == "timestamp" else ""
            msg = f"{node.value} is not a valid {kind}{why}; quote it if it is text"
            raise ConstructorError(None, None, msg, node.start_mark) from None

    return converted


for _constructor in (_SafeConstructor, _RoundTripConstructor):
    for _kind in ("int", "float", "timestamp"):
        _tag = f"tag:yaml.org,2002:{_kind}"
        _constructor.add_constructor(_tag, _converting(_constructor.yaml_constructors[_tag]))


class _DepthResolver(VersionedResolver):
    """libyaml's composer recurses in C, without limit (100,000 nested lists crashed the
    process): it tells the resolver of every node it enters and leaves, which counts them.
    Too deep is refused to the round-trip path, whose gate says where."""

    depth = 0

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        # Replaces the base method, which does nothing without path resolvers (none here).
        self.depth += 1
        if self.depth > MAX_DEPTH + 1:  # a scalar below MAX_DEPTH collections is one more
            msg = f"nested more than {MAX_DEPTH} levels deep"
            raise YAMLError(msg)

    def ascend_resolver(self) -> None:
        self.depth -= 1


def _plain(node: object, loc: Loc, reading: _Reading) -> Any:
    """Turn parsed nodes into dicts/lists, substituting `${VAR}` and, for the round-trip
    loader's nodes, recording the line of every key and item."""
    if isinstance(node, dict):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            if isinstance(node, CommentedMap):
                try:
                    position = node.lc.key(key)
                except KeyError:  # a key brought in by a YAML merge (<<) has no line of its own
                    position = None
                # A mapping with only merged keys has no positions at all (None).
                line = position[0] if position is not None else node.lc.line
                if line is not None:
                    reading.lines[(*loc, key)] = line + 1
            out[key] = _plain(value, (*loc, key), reading)
        return out
    if isinstance(node, list):
        items = []
        for index, value in enumerate(node):
            if isinstance(node, CommentedSeq):
                position = node.lc.item(index)
                if position is not None:
                    reading.lines[(*loc, index)] = position[0] + 1
            items.append(_plain(value, (*loc, index), reading))
        return items
    if isinstance(node, str):
        return _substitute(str(node), loc, reading)
    return node


def _substitute(text: str, loc: Loc, reading: _Reading) -> str:
    if "$" not in text:  # most values: no regular expression to run
        return text
    taken = False

    def replace(match: re.Match[str]) -> str:
        nonlocal taken
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = reading.environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            msg = f"{_dotted(loc)}: ${{{name}}} is not set in the environment"
            reading.problems.append((_line_of(loc, reading.lines)[0], msg))
            return ""
        reading.added += len(value)
        if reading.added > MAX_FILE_BYTES:
            # Aliases can repeat one ${VAR} many times: what the environment adds is bounded
            # like the file itself. Said once, at the value that passed the limit.
            if reading.added - len(value) <= MAX_FILE_BYTES:
                msg = (
                    f"{_dotted(loc)}: ${{{name}}}: the values taken from the environment add "
                    f"more than {_size(MAX_FILE_BYTES)} to the file"
                )
                reading.problems.append((_line_of(loc, reading.lines)[0], msg))
            return ""
        taken = True
        reading.secrets.add(value)
        return value

    result = _ENV_REF.sub(replace, text)
    if taken:
        reading.written[loc] = text
    return result


def _merge_for_type(
    defaults: dict[str, Any], target: dict[str, Any], loc: Loc, reading: _Reading
) -> dict[str, Any]:
    """``target`` over the ``defaults`` its type of check has (monitor.checktypes).

    The target's own options of another type are problems at their lines, and are left out
    so that the model reports the target's other problems too.
    """
    url = target.get("url")
    kind = type_of(url) if isinstance(url, str) else None
    if kind is None:  # no type yet: the URL's own problem is reported
        return _merge(defaults, target)
    own = foreign_options(kind, target)
    for path, why in own:
        where: Loc = (*loc, *path)
        reading.problems.append((_line_of(where, reading.lines)[0], f"{_dotted(where)}: {why}"))
    inherited = [path for path, _ in foreign_options(kind, defaults)]
    return _merge(
        without_options(defaults, inherited), without_options(target, [p for p, _ in own])
    )


def _merge(defaults: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """A target's keys over ``defaults``; the mappings in MERGED_MAPPINGS merge key by key."""
    merged = {**defaults, **target}
    for key in MERGED_MAPPINGS:
        base, own = defaults.get(key), target.get(key)
        if isinstance(base, dict) and isinstance(own, dict):
            merged[key] = {**base, **own}
    return merged


def _duplicate_names(items: list[Any], key: str, reading: _Reading) -> list[tuple[int, str]]:
    first_line: dict[str, int] = {}
    problems = []
    for index, target in enumerate(items):
        if not isinstance(target, dict) or not isinstance(target.get("name"), str):
            continue
        loc: Loc = (key, index, "name")
        line = _line_of(loc, reading.lines)[0]
        name = target["name"]
        if name in first_line:
            shown, first = _shown(name, loc, reading), first_line[name]
            msg = f"{_dotted(loc)}: duplicate name {shown!r} (first used on line {first})"
            problems.append((line, msg))
        else:
            first_line[name] = line
    return problems


def _unknown_notifiers(
    data: dict[str, Any], notifiers: list[Any], reading: _Reading
) -> list[tuple[int, str]]:
    """Every ``alerts.notifiers`` entry must name a configured notifier."""
    known = {n["name"] for n in notifiers if isinstance(n, dict) and isinstance(n.get("name"), str)}
    places: list[tuple[Loc, Any]] = [(("defaults",), data.get("defaults"))]
    targets = data.get("targets")
    if isinstance(targets, list):  # anything else is reported by the model
        places += [(("targets", i), t) for i, t in enumerate(targets)]
    problems = []
    for loc, owner in places:
        alerts = owner.get("alerts") if isinstance(owner, dict) else None
        names = alerts.get("notifiers") if isinstance(alerts, dict) else None
        if not isinstance(names, list):
            continue
        for index, name in enumerate(names):
            if isinstance(name, str) and name not in known:
                where: Loc = (*loc, "alerts", "notifiers", index)
                line, shown = _line_of(where, reading.lines)
                names_known = ", ".join(sorted(str(k) for k in known))
                choices = f"notifiers: {names_known}" if known else "no notifiers are configured"
                named = _shown(name, shown, reading)
                msg = f"{_dotted(shown)}: no notifier named {named!r} ({choices})"
                problems.append((line, msg))
    return problems


def _explain(
    exc: ValidationError, data: dict[str, Any], reading: _Reading
) -> list[tuple[int, str]]:
    errors = exc.errors()
    locs = [_real_loc(e["loc"], data, missing=e["type"] == "missing") for e in errors]
    by_loc: dict[tuple[int, Loc], list[str]] = {}
    for error, loc in zip(errors, locs, strict=True):
        # pydantic also says a tuple is "too short" when its items failed: noise.
        if error["type"] == "too_short" and any(o[: len(loc)] == loc != o for o in locs):
            continue
        line, shown = _line_of(loc, reading.lines)
        if error["type"] == "extra_forbidden":
            message = f"unknown key{_suggest(shown)}"
        elif error["type"] == "missing":
            message = "required key is missing"
        elif error["type"] == "too_short" and shown and isinstance(shown[-1], str):
            # Only lists that must not be empty have a minimum length.
            message = f"at least one {_ITEMS.get(shown[-1], 'value')} is needed"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            message = message[:1].lower() + message[1:]
            value = error.get("input")
            if isinstance(value, str) and error["loc"][-1:] != ("[key]",):
                # The value as the file writes it: ${VAR} rather than what it stands for.
                message = message.replace(repr(value), repr(_shown(value, shown, reading)))
        by_loc.setdefault((line, shown), []).append(message)
    # A union's members each fail in their own words: one line, joined by "or".
    return [
        (line, f"{_dotted(shown)}: {' or '.join(dict.fromkeys(messages))}")
        for (line, shown), messages in by_loc.items()
    ]


def _real_loc(loc: Loc, data: object, *, missing: bool) -> Loc:
    """Drop pydantic's union tags (``int``, ``function-after[...]``) that are not in the data."""
    real: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part is loc[-1]:
            if missing:
                real.append(part)
            break
        else:
            continue  # a union tag ("int", "webhook"): not a place in the file
        real.append(part)
    return tuple(real)


def _suggest(loc: Loc) -> str:
    """`` 'intervall' (did you mean 'interval'?)`` for a misspelt key."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    key = loc[-1]
    model = _model_at(loc[:-1])
    if model is None:
        return f" {key!r}"
    known = [f.alias or name for name, f in model.model_fields.items()]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
    return f" {key!r}{hint}"


def _model_at(loc: Loc) -> type[BaseModel] | None:
    model: type[BaseModel] = MonitorFile
    for part in loc:
        if isinstance(part, int):
            continue
        if model is MonitorFile and part == "targets":
            model = Target
            continue
        if model is MonitorFile and part == "defaults":
            model = DefaultOptions
            continue
        if model is MonitorFile and part == "maintenance":
            model = MaintenanceWindow
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _line_of(loc: Loc, lines: dict[Loc, int]) -> tuple[int, Loc]:
    """The line of ``loc`` (or of its nearest ancestor), and the path to show for it.

    A value a target inherited from ``defaults`` is reported once, at its line in
    ``defaults``, rather than once per target.
    """
    own = _longest(loc, lines)
    if len(loc) > 2 and loc[0] == "targets":
        inherited: Loc = ("defaults", *loc[2:])
        from_defaults = _longest(inherited, lines)
        if from_defaults is not None and from_defaults[1] - 1 > (own[1] - 2 if own else -1):
            return from_defaults[0], inherited
    return (own[0] if own else 1), loc


def _longest(loc: Loc, lines: dict[Loc, int]) -> tuple[int, int] | None:
    for size in range(len(loc), 0, -1):
        line = lines.get(loc[:size])
        if line is not None:
            return line, size
    return None


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _shown(value: str, loc: Loc, reading: _Reading) -> str:
    """``value`` at ``loc`` as a message may show it: as written in the file if it took
    something from the environment, ``***`` for a header value, a password masked."""
    if len(loc) > 1 and loc[-2] == "headers":
        return "***"
    return _PASSWORD.sub(r"\1\2:***@", reading.written.get(loc, value))


def _mask(message: str, reading: _Reading) -> str:
    """``message`` without any value the environment gave (a last guard: values are shown as
    written where the loader knows their place)."""
    for secret in sorted(reading.secrets, key=len, reverse=True):
        if len(secret) >= _MIN_MASKED:
            message = message.replace(secret, "***")
    return message


def _unique(problems: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return list(dict.fromkeys(problems))
