"""Places in the target file: the line of a key or item, how a message names it, and the key
a misspelt one was meant to be. Pure functions of the path (a Loc) and the lines the loader
recorded."""

from __future__ import annotations

import difflib

from pydantic import BaseModel

from monitor.config import DefaultOptions, MonitorFile, Target
from monitor.windows import MaintenanceWindow
from monitor.yamlgate import Loc


def real_loc(loc: Loc, data: object, *, missing: bool) -> Loc:
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


def suggest(loc: Loc) -> str:
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


def line_of(loc: Loc, lines: dict[Loc, int]) -> tuple[int, Loc]:
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


def dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"
