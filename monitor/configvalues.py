"""The value types of the target file: durations, status codes, bounded regular expressions,
readable files, names, label names and header names, and the strict base of every model.

Each type validates once at load time and carries its JSON Schema, so the models in
:mod:`monitor.config` and :mod:`monitor.probeoptions` only combine them.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


# The longest duration anywhere in the file. Every duration is at most a year: far beyond any
# sensible interval or warning, and well within what the scheduler's datetimes can hold
# (an interval of 1e15 s overflowed them and crashed start-up and reload).
MAX_DURATION_S = 366 * 86400.0


def parse_duration(value: object, *, max_s: float = MAX_DURATION_S) -> float:
    """Read ``500ms``, ``30s``, ``5m``, ``1h30m``, ``14d`` or plain seconds as seconds; at
    most ``max_s`` (history's retentions go beyond a year)."""
    too_long = f"a duration must be at most {max_s / 86400:g}d"
    if isinstance(value, bool):
        msg = "expected a duration such as 30s, 5m or 1h30m"
        raise ValueError(msg)
    if isinstance(value, int) and abs(value) > 10**12:  # float() of a huge int overflows
        raise ValueError(too_long)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_S[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                msg = f"{value!r} is not a duration: use e.g. 500ms, 30s, 5m, 1h30m or seconds"
                raise ValueError(msg) from None
    else:
        msg = "expected a duration such as 30s, 5m or 1h30m"
        raise ValueError(msg)
    if not math.isfinite(seconds) or seconds <= 0:
        msg = "a duration must be a finite number greater than zero"
        raise ValueError(msg)
    if seconds > max_s:
        raise ValueError(too_long)
    return seconds


def duration_schema(max_s: float, description: str) -> dict[str, Any]:
    """The JSON Schema of a duration that :func:`parse_duration` reads with ``max_s``: one
    for every kind of duration (a check's, a retention, a maintenance window's)."""
    return {
        "anyOf": [
            {"type": "number", "exclusiveMinimum": 0, "maximum": max_s},
            {
                "type": "string",
                "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h|d))+\s*$|^\s*\d+(\.\d+)?\s*$",
            },
        ],
        "description": description,
    }


_DURATION_SCHEMA = duration_schema(
    MAX_DURATION_S, "seconds, or a duration such as 500ms, 30s, 5m, 1h30m"
)

Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]

_STATUS_CLASS = re.compile(r"^[1-5]xx$")


def _check_status(value: int | str) -> int | str:
    if isinstance(value, int):
        if not 100 <= value <= 599:
            msg = f"{value} is not an HTTP status code (100-599)"
            raise ValueError(msg)
        return value
    text = value.strip().lower()
    if text.isdigit():
        return _check_status(int(text))
    if not _STATUS_CLASS.match(text):
        msg = f"{value!r} is neither a status code nor a class such as 2xx"
        raise ValueError(msg)
    return text


StatusSpec = Annotated[int | str, AfterValidator(_check_status)]
STATUS_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "integer"}, {"type": "string"}]}


def one_or_more(value: object) -> object:
    """``status: 200`` is the list ``[200]``: one code or class needs no brackets."""
    return (value,) if isinstance(value, int | str) else value


# body_regex is compiled for every target at load and by every check: its length and its
# repetition counts are bounded (``a{99999999999}`` raised OverflowError, not re.error;
# the checks' tests match ``b{2000}``).
MAX_REGEX_CHARS = 1000
MAX_REGEX_REPEAT = 10_000
# Escapes and character classes first, so that ``\{`` and ``[{]`` are not repetitions.
_REGEX_REPEAT = re.compile(r"\\.|\[\^?\]?(?:\\.|[^\]\\])*\]|\{(\d*)(?:,(\d*))?\}")


def compile_regex(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_REGEX_CHARS:
        msg = (
            f"a regular expression may be at most {MAX_REGEX_CHARS:,} characters long "
            f"(this one has {len(value):,})"
        )
        raise ValueError(msg)
    for match in _REGEX_REPEAT.finditer(value):
        if any(len(n) > 6 or int(n) > MAX_REGEX_REPEAT for n in match.groups() if n):
            msg = (
                f"repetition {match.group(0)} is too large: counts may be at most "
                f"{MAX_REGEX_REPEAT:,}"
            )
            raise ValueError(msg)
    try:
        # As the checks compile it: bytes, to match the body without decoding it.
        re.compile(value.encode())
    except (re.error, ValueError) as exc:  # ValueError: (?u), or a lone surrogate
        msg = f"invalid regular expression: {exc}"
        raise ValueError(msg) from None
    except RecursionError:
        msg = "the regular expression is nested too deeply"
        raise ValueError(msg) from None
    return value


def _readable_file(value: str) -> str:
    """A file the config names must be there now: found at load time with its line, not as
    an error on every check or delivery later."""
    path = Path(value)
    if not path.exists():
        msg = f"{value!r}: no such file"
        raise ValueError(msg)
    if not path.is_file():
        msg = f"{value!r} is not a file"
        raise ValueError(msg)
    if not os.access(path, os.R_OK):
        msg = f"{value!r} cannot be read by this user"
        raise ValueError(msg)
    return value


ReadableFile = Annotated[str, AfterValidator(_readable_file)]


class Strict(BaseModel):
    # Unknown keys are errors (a typo must not silently disable an expectation); models are
    # frozen so a running check can never see a half-applied change.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


_NAME = r"^[A-Za-z0-9_.\-]+$"
_NAME_RE = re.compile(_NAME)
_NAME_MAX = 200


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        msg = f"name {name!r} may only have letters, digits, _ . and -"
        raise ValueError(msg)
    if len(name) > _NAME_MAX:
        msg = f"a name may be at most {_NAME_MAX} characters long (this one has {len(name):,})"
        raise ValueError(msg)
    return name


Name = Annotated[
    str,
    AfterValidator(_check_name),
    WithJsonSchema({"type": "string", "pattern": _NAME, "maxLength": _NAME_MAX}),
]
# The scheme is case-insensitive, as RFC 3986 says.
_URL = re.compile(
    r"(?i)^(https?)://(?:[^@/\s]+@)?(\[[0-9A-Fa-f:.]+\]|[^:/?#\s\[\]]+)(:\d{1,5})?([/?#]\S*)?$"
)

# Label names the monitor itself puts on its series; a target's own labels may not reuse them.
RESERVED_LABELS = (
    "target",
    "location",
    "url",
    "type",
    "method",
    "reason",
    "phase",
    "state",
    "le",
)
_LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
_LABEL_NAME_RE = re.compile(_LABEL_NAME)


def _check_label_name(key: str) -> str:
    # Each key on its own, so that every bad one is reported, at its line.
    if not _LABEL_NAME_RE.match(key):
        msg = (
            f"label name {key!r} must start with a letter or _ and have only letters, digits and _"
        )
        raise ValueError(msg)
    if key in RESERVED_LABELS or key.startswith("__"):
        msg = f"label {key!r} is reserved (the monitor sets {', '.join(RESERVED_LABELS)})"
        raise ValueError(msg)
    return key


LabelName = Annotated[
    str,
    AfterValidator(_check_label_name),
    WithJsonSchema({"type": "string", "pattern": _LABEL_NAME}),
]

# RFC 9110: a header name is a token; a value may not break the request's lines.
_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
_HEADER_NAME_RE = re.compile(_HEADER_NAME)
_HEADER_VALUE = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"
_HEADER_VALUE_RE = re.compile(_HEADER_VALUE)


def _check_header_name(name: str) -> str:
    if not _HEADER_NAME_RE.match(name):
        msg = f"header name {name!r} may only have letters, digits and !#$%&'*+-.^_`|~"
        raise ValueError(msg)
    return name


def _check_header_value(value: str) -> str:
    # The value is not in the message: headers carry secrets.
    if not _HEADER_VALUE_RE.match(value):
        msg = "a header value may not contain line breaks or other control characters"
        raise ValueError(msg)
    return value


Headers = dict[
    Annotated[
        str,
        AfterValidator(_check_header_name),
        WithJsonSchema({"type": "string", "pattern": _HEADER_NAME}),
    ],
    Annotated[
        str,
        AfterValidator(_check_header_value),
        WithJsonSchema({"type": "string", "pattern": _HEADER_VALUE}),
    ],
]

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def check_url(value: str) -> str:
    match = _URL.match(value.strip())
    if match is None:
        msg = f"{value!r} is not an http:// or https:// URL with a host"
        raise ValueError(msg)
    port = match.group(3)
    if port is not None and not 0 < int(port[1:]) < 65536:
        msg = f"port {port[1:]} is out of range"
        raise ValueError(msg)
    return value.strip()


# A header name as a key of its own (``expect.headers``), checked as a request header's.
HeaderName = Annotated[
    str,
    AfterValidator(_check_header_name),
    WithJsonSchema({"type": "string", "pattern": _HEADER_NAME}),
]
