"""Load the YAML target file into :class:`~monitor.config.MonitorFile`, or say what is wrong.

Every problem in the file is reported at once, one per line as compilers do::

    monitor.yaml:12: targets[3].expect.status[0]: '6xx' is neither a status code nor ...

The YAML is parsed with ruamel.yaml's round-trip loader only because it keeps the line of
every key and item; the data is then turned into plain dicts, `${VAR}` references are
substituted, ``defaults`` are merged into each target, and pydantic validates the result.

The file may come from anywhere, so what it can make the loader do is bounded (README, "The
target file"): only a regular file of at most MAX_FILE_BYTES is read, the YAML goes through
the gate of :mod:`monitor.yamlgate` before anything is built from it, and what the
environment adds is bounded like the file.
Problems never show a value that came from the environment, a header value or a password.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from monitor.checktypes import foreign_options, type_of, without_options
from monitor.config import MERGED_MAPPINGS, MonitorFile
from monitor.configplaces import dotted, line_of, real_loc, suggest
from monitor.statuspage.options import problems as status_page_problems
from monitor.windows import problems as window_problems
from monitor.yamlgate import Loc, Refused, parse

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# What a file may make the loader do; each is in the README ("The target file").
# The largest file read; also the most that ${VAR} values may add to it.
MAX_FILE_BYTES = 32 * 1024 * 1024
# The password of a URL (any scheme, or none) as written in an error: masked.
_PASSWORD = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.\-]*:)?//)?([^/?#@\s:]*):([^/?#\s]*)@")
# A substituted value at least this long is masked wherever it appears in a message;
# shorter ones would mask unrelated text ("1" in "100-599").
_MIN_MASKED = 4
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
    except Refused as exc:
        msg = f"{filename}:{exc.line}: {dotted(exc.loc)}: {exc.text}"
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
        (line_of(loc, reading.lines)[0], f"{dotted(loc)}: {message}")
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
            problems.append((line_of(loc, reading.lines)[0], f"{dotted(loc)}: {message}"))
    if problems or config is None:
        problems.sort(key=lambda p: p[0])
        raise ConfigError(
            [f"{filename}:{line}: {_mask(message, reading)}" for line, message in _unique(problems)]
        )
    return config


def _yaml(text: str, filename: str, *, fast: bool) -> dict[Any, Any]:
    """The parsed top-level mapping (see :func:`monitor.yamlgate.parse`); ConfigError if it
    is no YAML or not a mapping (what the gate refuses raises Refused)."""
    try:
        tree = parse(text, fast=fast)
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
            msg = f"{dotted(loc)}: ${{{name}}} is not set in the environment"
            reading.problems.append((line_of(loc, reading.lines)[0], msg))
            return ""
        reading.added += len(value)
        if reading.added > MAX_FILE_BYTES:
            # Aliases can repeat one ${VAR} many times: what the environment adds is bounded
            # like the file itself. Said once, at the value that passed the limit.
            if reading.added - len(value) <= MAX_FILE_BYTES:
                msg = (
                    f"{dotted(loc)}: ${{{name}}}: the values taken from the environment add "
                    f"more than {_size(MAX_FILE_BYTES)} to the file"
                )
                reading.problems.append((line_of(loc, reading.lines)[0], msg))
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
        reading.problems.append((line_of(where, reading.lines)[0], f"{dotted(where)}: {why}"))
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
        line = line_of(loc, reading.lines)[0]
        name = target["name"]
        if name in first_line:
            shown, first = _shown(name, loc, reading), first_line[name]
            msg = f"{dotted(loc)}: duplicate name {shown!r} (first used on line {first})"
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
                line, shown = line_of(where, reading.lines)
                names_known = ", ".join(sorted(str(k) for k in known))
                choices = f"notifiers: {names_known}" if known else "no notifiers are configured"
                named = _shown(name, shown, reading)
                msg = f"{dotted(shown)}: no notifier named {named!r} ({choices})"
                problems.append((line, msg))
    return problems


def _explain(
    exc: ValidationError, data: dict[str, Any], reading: _Reading
) -> list[tuple[int, str]]:
    errors = exc.errors()
    locs = [real_loc(e["loc"], data, missing=e["type"] == "missing") for e in errors]
    by_loc: dict[tuple[int, Loc], list[str]] = {}
    for error, loc in zip(errors, locs, strict=True):
        # pydantic also says a tuple is "too short" when its items failed: noise.
        if error["type"] == "too_short" and any(o[: len(loc)] == loc != o for o in locs):
            continue
        line, shown = line_of(loc, reading.lines)
        if error["type"] == "extra_forbidden":
            message = f"unknown key{suggest(shown)}"
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
        (line, f"{dotted(shown)}: {' or '.join(dict.fromkeys(messages))}")
        for (line, shown), messages in by_loc.items()
    ]


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
