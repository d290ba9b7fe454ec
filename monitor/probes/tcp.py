"""tcp://host:port: connect; optionally STARTTLS and TLS; optionally send, and expect a reply.

Without ``tcp`` options a check passes once the connection is made. ``tcp.send`` is sent as
soon as the connection (and TLS, with ``tcp.starttls``) is ready; ``tcp.expect`` is searched
in the reply as it arrives. With ``tcp.starttls`` the exchange of that protocol
(:mod:`monitor.probes.starttls`) asks for TLS, which is then verified as tls:// does.
"""

from __future__ import annotations

from monitor.probes import starttls
from monitor.probes.stream import Connection, StreamProbe


class TcpProbe(StreamProbe):
    @staticmethod
    async def talk(conn: Connection) -> None:
        protocol = conn.target.tcp.starttls
        if protocol is not None:
            await starttls.EXCHANGES[protocol](conn)
            await conn.start_tls()
        await conn.converse()
