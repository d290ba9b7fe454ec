"""The systemd notify protocol, spoken directly (no libsystemd): READY, RELOADING, STOPPING,
STATUS and the watchdog.

A datagram to ``$NOTIFY_SOCKET``; the socket is non-blocking, so a full or unread socket
costs a dropped message, never a stalled event loop. Without ``NOTIFY_SOCKET`` (not under
systemd, or ``Type=simple``) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("monitor.systemd")


class SystemdNotifier:
    """Sends ``KEY=value`` lines to the service manager, if there is one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        self._socket: socket.socket | None = None
        if address.startswith(("/", "@")):
            # "@name" is a Linux abstract socket: a leading NUL byte.
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)
        self.watchdog_interval_s = _watchdog_interval_s(env)

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` as one message; False if there is no manager or it was not sent."""
        if self._socket is None or self._address is None:
            return False
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except (BlockingIOError, OSError) as exc:
            # Never block or fail the daemon over a status message; the next one may pass.
            log.debug("sd_notify_failed", error=str(exc))
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (>= 253, Type=notify-reload) match this to the reload.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """Half of ``WATCHDOG_USEC``, as systemd advises; None if the watchdog is not for us."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. a wrapper that exec'd us... or not)
    return int(usec) / 1e6 / 2
