"""HTTP's verdict on an answer: the body read within its limit, then ``expect`` judged."""

from __future__ import annotations

import re

import aiohttp

from monitor.config import Target
from monitor.probes.base import Reason

_CHUNK_BYTES = 64 * 1024


async def read_body(response: aiohttp.ClientResponse, target: Target) -> bool:
    """Read at most ``max_body_bytes``, stopping early once the expectations are met.

    Returns whether ``body_contains`` and ``body_regex`` matched (True when neither is set).
    A target that streams gigabytes costs at most one chunk more than the limit.
    """
    expect = target.expect
    needle = expect.body_contains.encode() if expect.body_contains is not None else None
    pattern = re.compile(expect.body_regex.encode()) if expect.body_regex is not None else None
    keep = needle is not None or pattern is not None
    buffer = bytearray()
    read = 0
    while read < target.max_body_bytes:
        chunk = await response.content.read(min(_CHUNK_BYTES, target.max_body_bytes - read))
        if not chunk:
            break
        read += len(chunk)
        if keep:
            buffer += chunk
            if pattern is None and needle is not None and needle in buffer:
                return True
    else:
        # Over the limit: drop the connection rather than drain an endless body.
        response.close()
    if needle is not None and needle not in buffer:
        return False
    return pattern is None or pattern.search(buffer) is not None


def judge(target: Target, status: int, body_ok: bool, elapsed_s: float) -> Reason:
    if not target.expect.status_ok(status):
        return "status"
    if not body_ok:
        return "body"
    if target.expect.max_latency_s is not None and elapsed_s > target.expect.max_latency_s:
        return "latency"
    return "ok"


def describe(target: Target, reason: Reason, status: int) -> str:
    expect = target.expect
    if reason == "status":
        wanted = ", ".join(str(s) for s in expect.status)
        return f"status {status}, expected {wanted}"
    if reason == "body":
        wanted = " and ".join(
            f"{key} {value!r}"
            for key, value in (("contain", expect.body_contains), ("match", expect.body_regex))
            if value is not None
        )
        return f"body does not {wanted} (first {target.max_body_bytes} bytes)"
    return f"slower than max_latency {expect.max_latency_s:g}s"
