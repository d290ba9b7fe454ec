"""Options only HTTP targets have, beyond the request's own: ``expect.json`` (JSONPath
assertions on a JSON body), ``expect.headers`` (patterns for response headers) and
``proxy`` (the HTTP proxy a target is checked through).

JSONPath is RFC 9535's, as python-jsonpath implements it in strict mode. The library takes
~65 ms to import: it is imported only when a target has ``expect.json`` (``validate`` and
``--help`` stay fast), and each path is compiled once, when the file is loaded.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, Field, JsonValue, model_validator

from monitor.configvalues import (
    MAX_REGEX_CHARS,
    HeaderName,
    Strict,
    check_url,
    compile_regex,
)

if TYPE_CHECKING:
    from jsonpath import CompoundJSONPath, JSONPath, JSONPathEnvironment

    Query = JSONPath | CompoundJSONPath

# As long as a regular expression may be: a path is compiled for every target at load.
MAX_JSONPATH_CHARS = MAX_REGEX_CHARS
_PROXY = re.compile(
    r"(?i)^(https?)://(?:[^@/\s]+@)?(\[[0-9A-Fa-f:.]+\]|[^:/?#@\s\[\]]+)(:\d{1,5})?/?$"
)
_CHOICES = ("equals", "matches", "exists")


@lru_cache(maxsize=16_384)
def compile_jsonpath(path: str) -> Query:
    """``path`` compiled (RFC 9535); once per path, at load, and found again by the checks.
    Raises ValueError in words for a path that is not one."""
    import jsonpath  # noqa: PLC0415 - ~65 ms: only for a target that has expect.json

    if len(path) > MAX_JSONPATH_CHARS:
        msg = f"a JSONPath may be at most {MAX_JSONPATH_CHARS:,} characters long"
        raise ValueError(msg)
    if not path.startswith("$"):
        msg = f"{path!r} is not a JSONPath: it starts with $ (e.g. $.status)"
        raise ValueError(msg)
    try:
        query: Query = _environment().compile(path)
        return query
    except jsonpath.JSONPathError as exc:
        words = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        index = exc.token.index if exc.token is not None else -1
        where = f" at character {index + 1}" if index >= 0 else ""
        msg = f"{path!r} is not a JSONPath: {words}{where}"
        raise ValueError(msg) from None
    except RecursionError:
        msg = f"the JSONPath {path[:40]!r}... is nested too deeply"
        raise ValueError(msg) from None


@lru_cache(maxsize=1)
def _environment() -> JSONPathEnvironment:
    import jsonpath  # noqa: PLC0415 - see compile_jsonpath

    return jsonpath.JSONPathEnvironment(strict=True)  # RFC 9535, no extensions


def _check_jsonpath(path: str) -> str:
    compile_jsonpath(path)
    return path


class JsonAssertion(Strict):
    """One assertion on a JSON body: a JSONPath and exactly one of equals, matches, exists."""

    path: Annotated[str, AfterValidator(_check_jsonpath)] = Field(
        description="JSONPath (RFC 9535) of the values, e.g. $.status or $.checks[*].ok",
        json_schema_extra={"maxLength": MAX_JSONPATH_CHARS},
    )
    equals: JsonValue = Field(
        default=None,
        description="every value the path finds equals this JSON value (at least one found)",
    )
    matches: Annotated[str | None, AfterValidator(compile_regex)] = Field(
        default=None,
        description="regular expression every value found must match: a string as it is, "
        "anything else as compact JSON (true, 42, null)",
        json_schema_extra={"maxLength": MAX_REGEX_CHARS},
    )
    exists: bool | None = Field(
        default=None, description="true: the path finds something; false: it finds nothing"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> JsonAssertion:
        given = [key for key in _CHOICES if key in self.model_fields_set]
        if len(given) != 1:
            said = f"it has {' and '.join(given)}" if given else "it has none"
            msg = f"an assertion has exactly one of equals, matches or exists ({said})"
            raise ValueError(msg)
        if "exists" in given and self.exists is None:
            msg = "exists is true or false"
            raise ValueError(msg)
        return self

    @property
    def query(self) -> Query:
        """The compiled path (compiled at load; the cache finds it)."""
        return compile_jsonpath(self.path)


ExpectedHeaders = dict[
    HeaderName,
    Annotated[
        str,
        AfterValidator(compile_regex),
        Field(json_schema_extra={"maxLength": MAX_REGEX_CHARS}),
    ],
]


def check_proxy_url(value: str) -> str:
    """``http://[user:password@]host[:port]``: an HTTP proxy, which carries https targets
    through CONNECT. Messages show the value as the loader masks it (no password)."""
    match = _PROXY.match(value.strip())
    if match is None:
        msg = f"{value!r} is not a proxy URL: http://[user:password@]host[:port]"
        raise ValueError(msg)
    if match.group(1).lower() == "https":
        msg = (
            f"{value!r}: only http:// proxies are supported (an http:// proxy carries https "
            "targets too, through CONNECT)"
        )
        raise ValueError(msg)
    return check_url(value)  # the port's range, as for every URL


ProxyUrl = Annotated[str, AfterValidator(check_proxy_url)]
