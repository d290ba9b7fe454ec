"""Probes: how a target is checked, one module per type, picked by the URL's scheme.

:func:`monitor.checktypes.type_of` maps a scheme to a type (``http`` and ``https`` to http,
the others to their own name); :class:`monitor.checks.Checker` runs the type's probe under
its one semaphore, so every check counts in ``in_flight`` and waits its turn alike. Each
type's probe lives here:

- :mod:`~monitor.probes.http`: http:// and https:// (its phase clock in
  :mod:`~monitor.probes.httptiming`, its verdict on the answer in
  :mod:`~monitor.probes.httpexpect`);
- :mod:`~monitor.probes.tcp`: tcp://host:port, optionally STARTTLS (smtp, imap, pop3);
- :mod:`~monitor.probes.tls`: tls://host:port;
- :mod:`~monitor.probes.dns`: dns://resolver[:port], a query (dnspython, in
  :mod:`~monitor.probes.dnscheck`, imported at the first dns:// check);
- :mod:`~monitor.probes.icmp`: icmp://host, echo requests (ping);
- :mod:`~monitor.probes.grpc`: grpc://host:port and grpcs://host:port, the gRPC health check
  (grpc is imported only once such a target is checked);
- :mod:`~monitor.probes.ws`: ws:// and wss:// URLs (a WebSocket, timed by HTTP's hooks);
- :mod:`~monitor.probes.stream`: what those two share (connect, TLS, send and expect);
- :mod:`~monitor.probes.starttls`: the STARTTLS exchanges;
- :mod:`~monitor.probes.base`: the result and its reasons, the :class:`Probe` protocol
  (and :class:`~monitor.probes.base.Closing` for a probe that holds something between
  checks, as HTTP's sessions), and the :class:`ProbeKit` of TLS contexts and certificate
  expiries the probes share.

Every probe keeps HTTP's contract: a result that never raises, a ``reason`` from the fixed
set, phase timings, the certificate's expiry when it spoke TLS.

A new type plugs in with: its scheme and the options only it has in
:mod:`monitor.checktypes` (``ProbeType``, ``_TYPE_OF_SCHEME``, its URL's rule,
``OPTIONS_OF_TYPES``) and its options model in :mod:`monitor.config`; a module here with a
class that follows :class:`Probe`; its entry in :data:`PROBES`. Metrics (its phases and
the ``type`` label), logs, alerting and ``uptime-monitor check`` then handle it as they are.
"""

from __future__ import annotations

from monitor.probes.base import Probe
from monitor.probes.dns import DnsProbe
from monitor.probes.grpc import GrpcProbe
from monitor.probes.http import HttpProbe
from monitor.probes.icmp import IcmpProbe
from monitor.probes.tcp import TcpProbe
from monitor.probes.tls import TlsProbe
from monitor.probes.ws import WsProbe

PROBES: dict[str, type[Probe]] = {
    "tcp": TcpProbe,
    "tls": TlsProbe,
    "dns": DnsProbe,
    "icmp": IcmpProbe,
    "http": HttpProbe,
    "grpc": GrpcProbe,
    "ws": WsProbe,
}
