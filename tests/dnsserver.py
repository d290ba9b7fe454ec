"""A real DNS server for tests: udp and tcp on one port of 127.0.0.1 (or ::1), answers made
with dnspython's message API.

:func:`dns_server` runs a :data:`Handler` (a query and its transport in, the answer's wire
bytes out, or None to stay silent) and yields a :class:`DnsServer` with its port and the
queries it received. :func:`zone` is the handler of a small zone: the records it is given,
NXDOMAIN for other names, NOERROR without records for other types of a known name.
:func:`answer` builds an answer to a query from records in presentation form;
:func:`free_udp_port` is a udp port nothing listens on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

# b"" closes a tcp connection without an answer (and is an empty datagram over udp).
Handler = Callable[[dns.message.Message, str], bytes | None]
# name -> type -> records of that type in presentation form ("10 mail.example.com.")
Records = Mapping[str, Mapping[str, list[str]]]


@dataclass
class DnsServer:
    port: int
    queries: list[tuple[str, dns.message.Message]] = field(default_factory=list)

    def transports(self) -> list[str]:
        """The transport of each query received, in order."""
        return [transport for transport, _ in self.queries]


def answer(
    query: dns.message.Message,
    records: Mapping[str, list[str]] | None = None,
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    *,
    truncated: bool = False,
) -> bytes:
    """The answer to ``query``: ``records`` (type -> texts) under its name, ``rcode``, the TC
    bit if ``truncated``."""
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    name = query.question[0].name
    for rdtype, texts in (records or {}).items():
        response.answer.append(dns.rrset.from_text_list(name, 300, "IN", rdtype, texts))
    if truncated:
        response.flags |= dns.flags.TC
    return response.to_wire(max_size=65535)  # not the query's EDNS size: tcp takes more


def zone(records: Records) -> Handler:
    """Answers from ``records``, as an authoritative server would."""
    known = {name.lower().rstrip(".") + ".": types for name, types in records.items()}

    def handle(query: dns.message.Message, _transport: str) -> bytes:
        question = query.question[0]
        types = known.get(question.name.to_text().lower())
        if types is None:
            return answer(query, rcode=dns.rcode.NXDOMAIN)
        rdtype = dns.rdatatype.to_text(question.rdtype)
        return answer(query, {rdtype: types[rdtype]} if rdtype in types else {})

    return handle


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer, handler: Handler, delay_s: float) -> None:
        self.server, self.handler, self.delay_s = server, handler, delay_s
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        self.server.queries.append(("udp", query))
        reply = self.handler(query, "udp")
        if reply is not None and self.transport is not None:
            asyncio.get_running_loop().call_later(self.delay_s, self.transport.sendto, reply, addr)


@asynccontextmanager
async def dns_server(
    handler: Handler, host: str = "127.0.0.1", delay_s: float = 0.0
) -> AsyncIterator[DnsServer]:
    """``handler`` over udp and tcp on one free port of ``host`` (a truncated udp answer is
    asked again on the same port over tcp); each answer is sent ``delay_s`` late."""
    loop = asyncio.get_running_loop()
    server = DnsServer(port=0)
    writers: set[asyncio.StreamWriter] = set()

    async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                query = dns.message.from_wire(await reader.readexactly(size))
                server.queries.append(("tcp", query))
                reply = handler(query, "tcp")
                if not reply:
                    if reply is None:
                        await reader.read()  # silent until the client goes
                    break
                await asyncio.sleep(delay_s)
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        writer.close()

    for _ in range(50):  # a free udp port may be taken for tcp: try another
        transport, _protocol = await loop.create_datagram_endpoint(
            lambda: _Udp(server, handler, delay_s), local_addr=(host, 0)
        )
        server.port = transport.get_extra_info("sockname")[1]
        try:
            tcp = await asyncio.start_server(on_tcp, host, server.port)
        except OSError as exc:
            transport.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        break
    else:
        msg = "no port free for both udp and tcp"
        raise RuntimeError(msg)
    try:
        yield server
    finally:
        transport.close()
        tcp.close()
        for writer in writers:  # silent handlers wait for their clients: not for ever
            writer.close()
        await tcp.wait_closed()


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A udp port nothing listens on: a datagram to it is answered by ICMP port unreachable."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
