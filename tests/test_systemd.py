"""The systemd notify protocol without a daemon process: datagrams on real local sockets."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from monitor.systemd import SystemdNotifier


class TestNotifyProtocol:
    def test_sending_never_blocks_when_nobody_reads(self, tmp_path: Path) -> None:
        """A socket nobody reads fills up; further messages are dropped, not waited for."""
        unread = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        unread.bind(str(tmp_path / "unread.sock"))
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "unread.sock")})
        results = [notifier.watchdog() for _ in range(5000)]
        assert results[0] is True
        assert results[-1] is False  # the queue is full: dropped, and we are still here
        unread.close()
        notifier.close()

    def test_watchdog_for_another_process_is_ignored(self) -> None:
        """WATCHDOG_PID naming another process disables our watchdog pings; ours enables."""
        other = SystemdNotifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
        mine = SystemdNotifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())})
        assert other.watchdog_interval_s is None
        assert mine.watchdog_interval_s == 0.5

    def test_without_notify_socket_nothing_is_sent(self) -> None:
        """Outside systemd every call is a no-op."""
        notifier = SystemdNotifier({})
        assert (notifier.ready("x"), notifier.watchdog(), notifier.stopping()) == (False,) * 3

    def test_abstract_socket_address(self) -> None:
        """An @name NOTIFY_SOCKET is a Linux abstract socket."""
        name = f"uptime-monitor-test-{os.getpid()}"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind("\0" + name)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready("fine") is True
        assert server.recv(100) == b"READY=1\nSTATUS=fine"
        server.close()
        notifier.close()
