"""HTTP's verdict on an answer: the body read within its limit, then ``expect`` judged.

In order, the first that fails is the verdict: the status (reason ``status``), the response
headers of ``expect.headers`` (``response``), ``body_contains`` and ``body_regex``
(``body``), ``expect.json`` (``body``), then ``max_latency`` (``latency``). What an error
shows of the answer is bounded (:func:`shown`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from monitor.config import Target
from monitor.httpoptions import JsonAssertion
from monitor.probes.base import Reason, slower_than_allowed

_CHUNK_BYTES = 64 * 1024
_SHOWN_CHARS = 80  # of a value found, in an error


@dataclass(frozen=True, slots=True)
class Answer:
    """The final response: its status, headers, and the body as far as it was kept."""

    status: int
    reason: str  # the status line's phrase
    headers: CIMultiDictProxy[str]
    body: bytes
    complete: bool  # the whole body was read (False: cut at max_body_bytes, or not needed)


async def read_body(response: aiohttp.ClientResponse, target: Target) -> tuple[bytes, bool]:
    """Read at most ``max_body_bytes``, stopping early once ``body_contains`` is found and
    nothing else needs the body. Returns what was kept (nothing if no expectation reads
    it) and whether it is the whole body.

    A target that streams gigabytes costs at most one chunk more than the limit.
    """
    expect = target.expect
    needle = expect.body_contains.encode() if expect.body_contains is not None else None
    whole = expect.body_regex is not None or bool(expect.json_assertions)
    keep = needle is not None or whole
    buffer = bytearray()
    read = 0
    while read < target.max_body_bytes:
        chunk = await response.content.read(min(_CHUNK_BYTES, target.max_body_bytes - read))
        if not chunk:
            return bytes(buffer), True
        read += len(chunk)
        if keep:
            buffer += chunk
            if not whole and needle is not None and needle in buffer:
                return bytes(buffer), False
    # At the limit: one byte more says whether that was all of it (JSON needs all of it).
    complete = bool(expect.json_assertions) and not await response.content.read(1)
    if not complete:
        # Over the limit: drop the connection rather than drain an endless body.
        response.close()
    return bytes(buffer), complete


def judge(target: Target, answer: Answer, elapsed_s: float) -> tuple[Reason, str]:
    """The verdict on ``answer`` and, unless it is ok, the error in words."""
    expect = target.expect
    if not expect.status_ok(answer.status):
        wanted = ", ".join(str(s) for s in expect.status)
        return "status", f"status {answer.status}, expected {wanted}"
    for name, pattern in expect.headers.items():
        wrong = _header_problem(answer.headers, name, pattern)
        if wrong:
            return "response", wrong
    if not _body_ok(target, answer.body):
        wanted = " and ".join(
            f"{key} {value!r}"
            for key, value in (("contain", expect.body_contains), ("match", expect.body_regex))
            if value is not None
        )
        return "body", f"body does not {wanted} (first {target.max_body_bytes} bytes)"
    if expect.json_assertions:
        wrong = _json_problem(target, answer)
        if wrong:
            return "body", wrong
    slow = slower_than_allowed(target, elapsed_s)
    return ("latency", slow) if slow else ("ok", "")


def _body_ok(target: Target, body: bytes) -> bool:
    expect = target.expect
    if expect.body_contains is not None and expect.body_contains.encode() not in body:
        return False
    return expect.body_regex is None or re.search(expect.body_regex.encode(), body) is not None


def _header_problem(headers: CIMultiDictProxy[str], name: str, pattern: str) -> str:
    """Why the response's header ``name`` (any case) fails ``pattern``; "" if one of its
    values matches."""
    values = headers.getall(name, [])
    if not values:
        return f"header {name} is missing (expected to match {pattern!r})"
    if any(re.search(pattern, value) for value in values):
        return ""
    return f"header {name} is {shown(', '.join(values))}, expected to match {pattern!r}"


def _json_problem(target: Target, answer: Answer) -> str:
    """What is wrong with the body as JSON or with an assertion on it; "" if nothing."""
    if not answer.complete:
        return f"body is longer than max_body_bytes ({target.max_body_bytes}): not read as JSON"
    try:
        document = orjson.loads(answer.body)
    except orjson.JSONDecodeError as exc:
        return f"body is not JSON ({exc}): {len(answer.body)} bytes, {shown(answer.body)}"
    for assertion in target.expect.json_assertions:
        wrong = _assertion_problem(assertion, assertion.query.findall(document))
        if wrong:
            return f"expect.json {assertion.path}: {wrong}"
    return ""


def _assertion_problem(assertion: JsonAssertion, found: list[Any]) -> str:
    if assertion.exists is not None:
        if assertion.exists and not found:
            return "found nothing, expected something"
        if not assertion.exists and found:
            return f"found {_json_text(found[0], bounded=True)}, expected nothing"
        return ""
    if assertion.matches is not None:
        wanted = f"a match of {assertion.matches!r}"
        if not found:
            return f"found nothing, expected {wanted}"
        for value in found:
            text = value if isinstance(value, str) else _json_text(value)
            if re.search(assertion.matches, text) is None:
                return f"found {_json_text(value, bounded=True)}, expected {wanted}"
        return ""
    expected = _json_text(assertion.equals, bounded=True)
    if not found:
        return f"found nothing, expected {expected}"
    for value in found:
        if not same_json(value, assertion.equals):
            return f"found {_json_text(value, bounded=True)}, expected {expected}"
    return ""


def same_json(a: object, b: object) -> bool:
    """JSON equality: numbers by value (1 is 1.0), but true is not 1 as it is in Python."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same_json, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[key], b[key]) for key in a)
    return type(a) is type(b) and a == b


def _json_text(value: object, *, bounded: bool = False) -> str:
    """``value`` as compact JSON: what ``matches`` reads for anything but a string; as an
    error shows it, its first 80 characters."""
    text = orjson.dumps(value).decode()
    if bounded and len(text) > _SHOWN_CHARS:
        return text[:_SHOWN_CHARS] + "..."
    return text


def shown(data: str | bytes) -> str:
    """The first 80 characters (bytes) of ``data``, quoted, as an error shows them."""
    more = "..." if len(data) > _SHOWN_CHARS else ""
    return f"{data[:_SHOWN_CHARS]!r}{more}"
