"""Probes: how a target is checked, one module per type, picked by the URL's scheme.

:func:`monitor.checktypes.type_of` maps a scheme to a type (``http`` and ``https`` to http,
``tcp`` to tcp, ``tls`` to tls); :class:`monitor.checks.Checker` runs the type's probe under
its one semaphore, so every check counts in ``in_flight`` and waits its turn alike. HTTP's
probe is still the Checker's own code in :mod:`monitor.checks`; the others live here:

- :mod:`~monitor.probes.tcp`: tcp://host:port, optionally STARTTLS (smtp, imap, pop3);
- :mod:`~monitor.probes.tls`: tls://host:port;
- :mod:`~monitor.probes.stream`: what those two share (connect, TLS, send and expect);
- :mod:`~monitor.probes.starttls`: the STARTTLS exchanges;
- :mod:`~monitor.probes.base`: the result and its reasons, the :class:`Probe` protocol,
  and the :class:`ProbeKit` of TLS contexts and certificate expiries the probes share;
- :mod:`~monitor.probes.ws`: ws:// and wss:// URLs (a WebSocket, timed by HTTP's hooks).

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
from monitor.probes.tcp import TcpProbe
from monitor.probes.tls import TlsProbe
from monitor.probes.ws import WsProbe

# Every type but http, whose probe is the Checker itself (monitor.checks).
PROBES: dict[str, type[Probe]] = {"tcp": TcpProbe, "tls": TlsProbe, "ws": WsProbe}
