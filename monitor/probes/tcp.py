"""tcp://host:port: connect; optionally STARTTLS and TLS; optionally send, and expect a reply.

Without ``tcp`` options a check passes once the connection is made. ``tcp.send`` is sent as
soon as the connection (and TLS, with ``tcp.starttls``) is ready; ``tcp.expect`` is searched
in the reply as it arrives. With ``tcp.starttls`` the exchange of that protocol
(:mod:`monitor.probes.starttls`) asks for TLS, which is then verified as tls:// does.
"""

from __future__ import annotations

from typing import ClassVar

from monitor.config import Target
from monitor.probes import starttls
from monitor.probes.base import CheckResult, ProbeKit
from monitor.probes.stream import STREAM_PHASES, Connection, run


class TcpProbe:
    phases: ClassVar[tuple[str, ...]] = STREAM_PHASES

    def __init__(self, kit: ProbeKit) -> None:
        self._kit = kit

    async def check(self, target: Target) -> CheckResult:
        return await run(self._kit, target, self._talk)

    @staticmethod
    async def _talk(conn: Connection) -> None:
        protocol = conn.target.tcp.starttls
        if protocol is not None:
            await starttls.EXCHANGES[protocol](conn)
            await conn.start_tls()
        await conn.converse()
