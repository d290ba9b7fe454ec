"""Load the YAML target file into :class:`~monitor.config.MonitorFile`, or say what is wrong.

Every problem in the file is reported at once, one per line as compilers do::

    monitor.yaml:12: targets[3].expect.status[0]: '6xx' is neither a status code nor ...

The YAML is parsed with ruamel.yaml's round-trip loader only because it keeps the line of
every key and item; the data is then turned into plain dicts, `${VAR}` references are
substituted, ``defaults`` are merged into each target, and pydantic validates the result.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from monitor.config import MERGED_MAPPINGS, DefaultOptions, MonitorFile, Target

Loc = tuple[str | int, ...]

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# The largest file read.
MAX_FILE_BYTES = 32 * 1024 * 1024
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

    A good file is parsed once, by libyaml (ruamel's C loader: 50,000 targets in a few
    seconds). Only a file with problems is parsed again by the round-trip loader, which is
    four times slower but knows the line of every key, for the messages.
    """
    try:
        return _parse(text, filename, environ, fast=True)
    except ConfigError:
        return _parse(text, filename, environ, fast=False)


def _parse(text: str, filename: str, environ: Mapping[str, str], *, fast: bool) -> MonitorFile:
    try:
        tree = YAML(typ="safe").load(text) if fast else YAML(typ="rt", pure=True).load(text)
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

    lines: dict[Loc, int] = {}
    problems: list[tuple[int, str]] = []
    data = _plain(tree, (), lines, environ, problems)
    raw_defaults = data.get("defaults")
    defaults = raw_defaults if isinstance(raw_defaults, dict) else {}
    raw_targets = data.get("targets")
    if isinstance(raw_targets, list):
        data["targets"] = [_merge(defaults, t) if isinstance(t, dict) else t for t in raw_targets]
        problems += _duplicate_names(raw_targets, "targets", lines)
    raw_notifiers = data.get("notifiers")
    if isinstance(raw_notifiers, list):
        problems += _duplicate_names(raw_notifiers, "notifiers", lines)
        problems += _unknown_notifiers(data, raw_notifiers, lines)

    try:
        # Only the YAML keys (aliases) are accepted, not the Python names such as interval_s.
        config = MonitorFile.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        problems += _explain(exc, data, lines)
        config = None
    if problems or config is None:
        problems.sort(key=lambda p: p[0])
        raise ConfigError([f"{filename}:{line}: {text}" for line, text in _unique(problems)])
    return config


def _plain(
    node: object,
    loc: Loc,
    lines: dict[Loc, int],
    environ: Mapping[str, str],
    problems: list[tuple[int, str]],
) -> Any:
    """Turn parsed nodes into dicts/lists, substituting `${VAR}` and, for the round-trip
    loader's nodes, recording the line of every key and item."""
    if isinstance(node, dict):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            if isinstance(node, CommentedMap):
                try:
                    line, _col = node.lc.key(key)
                except KeyError:  # a key brought in by a YAML merge (<<) has no line of its own
                    line = node.lc.line
                lines[(*loc, key)] = line + 1
            out[key] = _plain(value, (*loc, key), lines, environ, problems)
        return out
    if isinstance(node, list):
        items = []
        for index, value in enumerate(node):
            if isinstance(node, CommentedSeq):
                lines[(*loc, index)] = node.lc.item(index)[0] + 1
            items.append(_plain(value, (*loc, index), lines, environ, problems))
        return items
    if isinstance(node, str):
        return _substitute(str(node), loc, lines, environ, problems)
    return node


def _substitute(
    text: str,
    loc: Loc,
    lines: dict[Loc, int],
    environ: Mapping[str, str],
    problems: list[tuple[int, str]],
) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            msg = f"{_dotted(loc)}: ${{{name}}} is not set in the environment"
            problems.append((_line_of(loc, lines)[0], msg))
            return ""
        return value

    return _ENV_REF.sub(replace, text)


def _merge(defaults: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """A target's keys over ``defaults``; the mappings in MERGED_MAPPINGS merge key by key."""
    merged = {**defaults, **target}
    for key in MERGED_MAPPINGS:
        base, own = defaults.get(key), target.get(key)
        if isinstance(base, dict) and isinstance(own, dict):
            merged[key] = {**base, **own}
    return merged


def _duplicate_names(items: list[Any], key: str, lines: dict[Loc, int]) -> list[tuple[int, str]]:
    first_line: dict[str, int] = {}
    problems = []
    for index, target in enumerate(items):
        if not isinstance(target, dict) or not isinstance(target.get("name"), str):
            continue
        loc: Loc = (key, index, "name")
        line = _line_of(loc, lines)[0]
        name = target["name"]
        if name in first_line:
            msg = f"{_dotted(loc)}: duplicate name {name!r} (first used on line {first_line[name]})"
            problems.append((line, msg))
        else:
            first_line[name] = line
    return problems


def _unknown_notifiers(
    data: dict[str, Any], notifiers: list[Any], lines: dict[Loc, int]
) -> list[tuple[int, str]]:
    """Every ``alerts.notifiers`` entry must name a configured notifier."""
    known = {n.get("name") for n in notifiers if isinstance(n, dict)}
    places: list[tuple[Loc, Any]] = [(("defaults",), data.get("defaults"))]
    places += [(("targets", i), t) for i, t in enumerate(data.get("targets") or [])]
    problems = []
    for loc, owner in places:
        alerts = owner.get("alerts") if isinstance(owner, dict) else None
        names = alerts.get("notifiers") if isinstance(alerts, dict) else None
        if not isinstance(names, list):
            continue
        for index, name in enumerate(names):
            if isinstance(name, str) and name not in known:
                where: Loc = (*loc, "alerts", "notifiers", index)
                line, shown = _line_of(where, lines)
                choices = ", ".join(sorted(str(k) for k in known)) or "none are configured"
                problems.append((line, f"{_dotted(shown)}: no notifier named {name!r} ({choices})"))
    return problems


def _explain(
    exc: ValidationError, data: dict[str, Any], lines: dict[Loc, int]
) -> list[tuple[int, str]]:
    errors = exc.errors()
    locs = [_real_loc(e["loc"], data, missing=e["type"] == "missing") for e in errors]
    by_loc: dict[tuple[int, Loc], list[str]] = {}
    for error, loc in zip(errors, locs, strict=True):
        # pydantic also says a tuple is "too short" when its items failed: noise.
        if error["type"] == "too_short" and any(o[: len(loc)] == loc != o for o in locs):
            continue
        line, shown = _line_of(loc, lines)
        if error["type"] == "extra_forbidden":
            message = f"unknown key{_suggest(shown)}"
        elif error["type"] == "missing":
            message = "required key is missing"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            message = message[:1].lower() + message[1:]
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


def _unique(problems: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return list(dict.fromkeys(problems))
