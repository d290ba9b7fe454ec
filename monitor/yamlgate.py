"""What a YAML text may make the loader do: a gate over the parser's events, and the two
parsers it guards.

The file may come from anywhere (README, "The target file"). Before anything is built from
the YAML, the gate refuses what the format does not need and what could crash the loader or
make it unbounded: tags, directives, nesting deeper than MAX_DEPTH, mappings as keys, reused
anchors, aliases that contain themselves or expand past a budget, and numbers too long to
convert. :func:`parse` reads a text with libyaml (fast, no lines) or with ruamel.yaml's
round-trip parser (every key's line, for messages); :mod:`monitor.loader` says what is wrong.
"""

from __future__ import annotations

import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor, SafeConstructor
from ruamel.yaml.error import YAMLError
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

Loc = tuple[str | int, ...]

# What a file may make the loader do; each is in the README ("The target file").
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
COLLECTION_KEY = "a mapping or list as a key is not allowed (keys are names)"


def may_have_properties(text: str) -> bool:
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


class Refused(Exception):
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


class Gate:
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
                raise Refused(event.start_mark.line + 1, self._loc(), msg)
            self._done(1 + len(value), event.anchor, value)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            if event.tag is not None:
                self._refuse_tag(event)
            if len(self.stack) >= MAX_DEPTH:
                msg = f"nested more than {MAX_DEPTH} levels deep"
                raise Refused(event.start_mark.line + 1, self._loc(), msg)
            if self._at_key():
                raise Refused(event.start_mark.line + 1, self._loc(), COLLECTION_KEY)
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
                raise Refused(event.start_mark.line + 1, self._loc(), msg)
            if event.anchor in self.collections and self._at_key():
                raise Refused(event.start_mark.line + 1, self._loc(), COLLECTION_KEY)
            self.expanded += weight
            if self.expanded > self.budget:
                msg = f"the aliases expand to more than {self.budget:,} nodes and characters"
                raise Refused(event.start_mark.line + 1, self._loc(), msg)
            self._done(weight, None, f"*{event.anchor}")
        elif kind is DocumentStartEvent:
            if event.version is not None and tuple(event.version) != (1, 2):
                version = ".".join(str(v) for v in event.version)
                msg = f"%YAML {version} is not supported: the file is read as YAML 1.2"
                raise Refused(event.start_mark.line + 1, (), msg)
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
            raise Refused(line, self._loc(), msg)
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
        raise Refused(event.start_mark.line + 1, self._loc(), msg)


class GatedParser(RoundTripParser):
    """The round-trip parser, handing every event to a gate as soon as it is parsed: the
    composer peeks at an event (and warns of a reused anchor) before it takes it."""

    gate: Gate

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
            raise ConstructorError(None, None, COLLECTION_KEY, key_node.start_mark) from None
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


def parse(text: str, *, fast: bool) -> Any:
    """The parsed document of ``text`` (None if empty), through the gate.

    Raises :class:`Refused` for what the gate refuses, and ruamel's ``MarkedYAMLError`` or
    ``YAMLError`` for text that is no YAML.
    """
    gate = Gate(max(MIN_ALIAS_BUDGET, len(text)))
    if fast:
        # libyaml composes the whole document in C before any Python sees it: its events go
        # through the gate in a pass of their own, which costs ~8% of loading 50,000
        # targets. It is needed only for what the gate alone refuses (tags, anchors,
        # directives); nesting, long numbers and bad dates stop libyaml's path anyway.
        yaml = YAML(typ="safe")
        yaml.Resolver = _DepthResolver
        yaml.Constructor = _SafeConstructor
        if may_have_properties(text):
            for event in yaml.parse(text):
                gate.feed(event)
        return yaml.load(text)
    # The pure-Python parser hands the composer each event through the gate.
    yaml = YAML(typ="rt", pure=True)
    # The plain scanner: the lines are wanted, not the comments, whose round-trip handling
    # raised NotImplementedError ("overlap in comment") on some bad files.
    yaml.Scanner = Scanner
    yaml.Parser = GatedParser
    yaml.Constructor = _RoundTripConstructor
    yaml.parser.gate = gate
    return yaml.load(text)
