"""STARTTLS: the plain-text exchange that asks a server to switch to TLS, per protocol.

Each exchange is the shortest the protocol allows, then the probe does the TLS handshake
(:meth:`~monitor.probes.stream.Connection.start_tls`) and verifies it as tls:// does:

- ``smtp`` (RFC 3207): greeting 220, ``EHLO`` answered 250 and offering STARTTLS,
  ``STARTTLS`` answered 220;
- ``imap`` (RFC 3501): greeting ``* OK``, ``a1 STARTTLS`` answered ``a1 OK``;
- ``pop3`` (RFC 2595): greeting ``+OK``, ``STLS`` answered ``+OK``.

A server that answers otherwise fails with reason ``response``, naming what it said. Bytes a
server sends after its go-ahead and before the handshake are dropped unread: they cannot be
trusted (the plain-text injection of CVE-2011-0411).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from monitor.probeoptions import StartTLS
from monitor.probes.stream import Connection, Mismatch, excerpt

_REPLY_LIMIT = 64 * 1024  # bytes of one answer; these are a line or a few
# The last line of an SMTP reply: three digits, then a space or the line's end.
_SMTP_LAST = re.compile(rb"(?:\A|\n)(\d{3})(?: [^\n]*)?\r?\n\Z")
_LINE = re.compile(rb"\n\Z")
_IMAP_TAGGED = re.compile(rb"(?:\A|\n)a1 [^\n]*\n\Z")


async def smtp(conn: Connection) -> None:
    conn.step("tls", "starting SMTP")
    greeting = await _smtp_reply(conn, "the greeting")
    _want(greeting.startswith(b"220"), "SMTP greeting is not 220", greeting)
    await conn.send(b"EHLO " + _address_literal(conn) + b"\r\n", "sending EHLO")
    ehlo = await _smtp_reply(conn, "the answer to EHLO")
    _want(ehlo.startswith(b"250"), "SMTP answer to EHLO is not 250", ehlo)
    offered = any(line[4:].strip().upper() == b"STARTTLS" for line in ehlo.splitlines())
    _want(offered, "the SMTP server does not offer STARTTLS", ehlo)
    await conn.send(b"STARTTLS\r\n", "sending STARTTLS")
    answer = await _smtp_reply(conn, "the answer to STARTTLS")
    _want(answer.startswith(b"220"), "SMTP answer to STARTTLS is not 220", answer)


async def imap(conn: Connection) -> None:
    conn.step("tls", "starting IMAP")
    greeting = await _line(conn, "the greeting")
    _want(greeting.upper().startswith(b"* OK"), "IMAP greeting is not * OK", greeting)
    await conn.send(b"a1 STARTTLS\r\n", "sending STARTTLS")
    answer = await conn.read_until(
        lambda got: _IMAP_TAGGED.search(got) is not None,
        _REPLY_LIMIT,
        "the answer to STARTTLS",
        "the answer to STARTTLS is incomplete",
    )
    tagged = answer.splitlines()[-1]
    _want(tagged.upper().startswith(b"A1 OK"), "IMAP answer to STARTTLS is not OK", answer)


async def pop3(conn: Connection) -> None:
    conn.step("tls", "starting POP3")
    greeting = await _line(conn, "the greeting")
    _want(greeting.startswith(b"+OK"), "POP3 greeting is not +OK", greeting)
    await conn.send(b"STLS\r\n", "sending STLS")
    answer = await _line(conn, "the answer to STLS")
    _want(answer.startswith(b"+OK"), "POP3 answer to STLS is not +OK", answer)


EXCHANGES: dict[StartTLS, Callable[[Connection], Awaitable[None]]] = {
    "smtp": smtp,
    "imap": imap,
    "pop3": pop3,
}


async def _smtp_reply(conn: Connection, awaiting: str) -> bytes:
    return await conn.read_until(
        lambda got: _SMTP_LAST.search(got) is not None,
        _REPLY_LIMIT,
        awaiting,
        f"{awaiting} is incomplete",
    )


async def _line(conn: Connection, awaiting: str) -> bytes:
    return await conn.read_until(
        lambda got: _LINE.search(got) is not None,
        _REPLY_LIMIT,
        awaiting,
        f"{awaiting} is incomplete",
    )


def _want(condition: bool, words: str, answer: bytes) -> None:
    if not condition:
        msg = f"{words}: {excerpt(answer)}"
        raise Mismatch(msg)


def _address_literal(conn: Connection) -> bytes:
    """EHLO's argument: this end's address as an RFC 5321 literal, which needs no DNS."""
    address = conn.local_address()
    return f"[IPv6:{address}]".encode() if ":" in address else f"[{address}]".encode()
