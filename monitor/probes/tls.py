"""tls://host:port: connect and complete a TLS handshake; optionally send, and expect a reply.

The handshake is verified as for https (``tls.verify``, ``tls.ca_file``, the host name) and
the leaf certificate's expiry is reported; ``tls.cert_file`` presents a client certificate.
``tcp.send`` and ``tcp.expect`` then talk over TLS, as for tcp://.

Under TLS 1.3 a server checks a client certificate after the handshake has completed on
the client's side: a server that refuses it is only seen when the probe reads, so set
``tcp.expect`` (for example to the server's banner) to see such a refusal as reason tls.
"""

from __future__ import annotations

from monitor.probes.stream import Connection, StreamProbe


class TlsProbe(StreamProbe):
    @staticmethod
    async def talk(conn: Connection) -> None:
        await conn.start_tls()
        await conn.converse()
