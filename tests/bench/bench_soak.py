"""Soak: the daemon against a hostile target farm, with faults in phases; figures over time.

    python tests/bench/bench_soak.py                       # 300 targets, 120 s of phases
    python tests/bench/bench_soak.py --duration 90 --keep  # shorter; keep the logs

What it does (every step bounded in time; see tests/bench/README.md, "Soak"):

1. starts a *farm* (this script in a hidden ``--serve-farm`` mode, its own process group): one
   asyncio TCP server on 127.0.0.1 answering ``/k/<kind>/<i>`` as ``ok``, ``slow`` (after
   2 s), ``hang`` (never), ``reset`` (TCP RST), ``garbage`` (not HTTP), ``endless`` (a body
   that never ends), ``gzip`` (1 GiB of zeros as ~1 MB of gzip), ``loop`` (a redirect loop),
   ``500``, ``flap`` (503 for a while, then 200, over and over);
2. starts a webhook receiver in this process (a thread) that records every message it
   accepts, and answers 503 while the notifier is "down";
3. starts the daemon (``python -m monitor run``, own process group, JSON logs to a file) on
   ``--targets`` targets cycling through the kinds, interval 5 s, timeout 2 s,
   ``failure_threshold`` 2, all alerting the webhook;
4. runs the phases, each a share of ``--duration``: baseline, store-locked (a second SQLite
   connection holds ``BEGIN EXCLUSIVE`` on the state file), store-full (the state file is on
   a small tmpfs; a filler file takes the rest of it), notifier-down (503), idle-conns
   (``--idle-connections`` idle TCP connections to the daemon's port, re-opened when cut),
   recovery (the flapping stops part-way so that every flap incident can close);
5. samples every 2 s: RSS and open fds (``/proc``), and from ``/metrics`` the asyncio tasks,
   the store gauges, the notification queue, checks/s and schedule lateness;
6. waits (bounded) for the queues to drain, stops the daemon with SIGTERM, reads what is left
   in the state file's outbox, the daemon's log and prints a summary.

Only 127.0.0.1 is used. Every process it starts runs in its own process group and is killed
in a ``finally``; the tmpfs is unmounted there too. It asserts nothing about timing. Exit
status: 0 if the daemon stayed up and exited 0 on SIGTERM, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import math
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_daemon import (  # a sibling script, not a package
    HOST,
    BenchError,
    daemon_env,
    ensure_alive,
    kill_group,
    revision,
    scrape,
    stop_daemon,
    tail,
    wait_http_ok,
    wait_startup,
)

KINDS = ("ok", "slow", "hang", "reset", "garbage", "endless", "gzip", "loop", "500", "flap")
# (name, share of --duration)
PHASES = (
    ("baseline", 0.15),
    ("store-locked", 0.15),
    ("store-full", 0.15),
    ("notifier-down", 0.15),
    ("idle-conns", 0.15),
    ("recovery", 0.25),
)
FAULT_SHARE = 0.6  # of a fault's phase: then it ends, and the rest of the phase shows recovery
CATCH_SHARE = 0.2  # of a store phase: wait this long at most for a delivery to hold (below)
FLAP_STOP_SHARE = 0.3  # of the recovery phase: then every flapping target answers 200
SAMPLE_EVERY_S = 2.0
INTERVAL_S = 5
TIMEOUT_S = 2
FAILURE_THRESHOLD = 2
SLOW_S = 2.0
FLAP_DOWN_S = 10.0
FLAP_UP_S = 14.0
NOTIFIER = "hook"
INCIDENT_STATES = ("down", "degraded")
GARBAGE = b"SSH-2.0-OpenSSH_9.6 this is not HTTP\r\n\r\n"
ENDLESS_CAP = 1 << 30  # a backstop: the client must stop reading long before


def progress(text: str) -> None:
    print(f"soak: {text}", file=sys.stderr, flush=True)


# -- the farm (a child process) -----------------------------------------------------------


def gzip_bomb() -> bytes:
    """1 GiB of zeros as ~1 MB of gzip, in ~0.5 s: after a full flush every 1 MiB block of
    zeros compresses to the same bytes, so one is repeated."""
    block = b"\0" * (1 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; the gzip frame is below
    first = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    again = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    last = packer.compress(block) + packer.flush()
    crc = 0
    for _ in range(1024):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + first + again * 1022 + last + struct.pack("<II", crc, 0)


def _response(status: str, body: bytes = b"", extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body


def serve_farm(fd: int, flap_down_s: float, flap_up_s: float) -> None:
    """Farm mode (``--serve-farm``): every hostile kind on one inherited listening socket.

    SIGUSR1 stops the flapping (``flap`` answers 200 from then on); SIGTERM stops the farm.
    """
    ok = _response("200 OK", b"ok\n")
    bomb = gzip_bomb()
    bomb_response = _response("200 OK", bomb, "Content-Encoding: gzip\r\n")
    error_500 = _response("500 Internal Server Error", b"boom\n")
    error_503 = _response("503 Service Unavailable", b"flapping\n")
    endless_head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
    chunk = b"y" * 65536
    flapping = True

    def failing(i: int) -> bool:
        return flapping and (time.time() + i * 7.3) % (flap_down_s + flap_up_s) < flap_down_s

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            _, kind, number = head.split(b" ", 2)[1].decode().rsplit("/", 2)
            i = int(number)
            if kind == "ok":
                writer.write(ok)
            elif kind == "slow":
                await asyncio.sleep(SLOW_S)
                writer.write(ok)
            elif kind == "hang":
                while await reader.read(65536):
                    pass
                return
            elif kind == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            elif kind == "garbage":
                writer.write(GARBAGE)
            elif kind == "endless":
                writer.write(endless_head)
                sent = 0
                while sent < ENDLESS_CAP:
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)
            elif kind == "gzip":
                writer.write(bomb_response)
            elif kind == "loop":
                writer.write(_response("302 Found", extra=f"Location: /k/loop/{i}\r\n"))
            elif kind == "500":
                writer.write(error_500)
            elif kind == "flap":
                writer.write(error_503 if failing(i) else ok)
            else:
                writer.write(_response("404 Not Found"))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            # The farm is stopping. Ending normally spares the traceback Python 3.11's
            # start_server callback prints for every cancelled handler.
            pass
        finally:
            writer.close()

    async def main() -> None:
        nonlocal flapping
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def stop_flapping() -> None:
            nonlocal flapping
            flapping = False

        loop.add_signal_handler(signal.SIGUSR1, stop_flapping)
        server = await asyncio.start_server(handle, sock=socket.socket(fileno=fd))
        await stop.wait()
        server.close()

    asyncio.run(main())


def start_farm(procs: list[subprocess.Popen[bytes]]) -> tuple[subprocess.Popen[bytes], str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        sock.listen(4096)
        base = f"http://{HOST}:{sock.getsockname()[1]}"
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--serve-farm",
                str(sock.fileno()),
                "--flap-down",
                str(FLAP_DOWN_S),
                "--flap-up",
                str(FLAP_UP_S),
            ],
            pass_fds=[sock.fileno()],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        procs.append(proc)
        wait_http_ok(f"{base}/k/ok/0", time.monotonic() + 30, [proc])
    finally:
        sock.close()
    return proc, base


# -- the webhook receiver (a thread of this process) ---------------------------------------


@dataclass(frozen=True)
class Message:
    t: float  # seconds since the soak started
    phase: str
    event: str
    target: str
    state: str
    previous_state: str
    incident_id: str


class Receiver:
    """An aiohttp server on its own thread and loop; 503 while ``down``.

    :meth:`catch` makes it hold the next message it gets, unanswered, until :meth:`let_go`:
    a fault can then start while a delivery is in flight (the answer is a 200 after it).
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.rejected = 0  # attempts answered 503
        self.down = False
        self.caught: Message | None = None
        self._catching = False
        self._caught = threading.Event()
        self._let_go = threading.Event()
        self.phase = "start"
        self.t0 = time.monotonic()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            try:
                asyncio.run(self._main(ready))
            except BaseException as exc:
                self._error = exc
                ready.set()

        self._thread = threading.Thread(target=run, name="webhook-receiver", daemon=True)
        self._thread.start()
        if not ready.wait(30) or self._error is not None or not self.port:
            msg = f"the webhook receiver did not start: {self._error!r}"
            raise BenchError(msg)

    async def _main(self, ready: threading.Event) -> None:
        from aiohttp import web

        async def hook(request: web.Request) -> web.Response:
            body = await request.json()
            if self.down:
                self.rejected += 1
                return web.Response(status=503, text="the notifier is down\n")
            message = Message(
                t=time.monotonic() - self.t0,
                phase=self.phase,
                event=str(body.get("event")),
                target=str(body.get("target")),
                state=str(body.get("state")),
                previous_state=str(body.get("previous_state")),
                incident_id=str(body.get("incident_id")),
            )
            if self._catching:
                self._catching = False
                self.caught = message
                self._caught.set()
                for _ in range(300):  # 3 s at most; the notifier's timeout is 5 s
                    if self._let_go.is_set():
                        break
                    await asyncio.sleep(0.01)
            self.messages.append(message)
            return web.Response(text="ok\n")

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((HOST, 0))
        await web.SockSite(runner, sock).start()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.port = sock.getsockname()[1]
        ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            sock.close()

    def catch(self) -> None:
        self.caught = None
        self._caught.clear()
        self._let_go.clear()
        self._catching = True

    def has_caught(self) -> bool:
        return self._caught.is_set()

    def let_go(self) -> None:
        self._catching = False
        self._let_go.set()

    def stop(self) -> None:
        self.let_go()
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)


# -- idle connections ---------------------------------------------------------------------


class IdleConnections:
    """Plain TCP connections to the daemon's port that never send a byte."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self._socks: dict[int, socket.socket] = {}
        self.opened = 0  # connect() calls
        self.cut = 0  # closed by the daemon (EOF or reset)
        self.open_failures = 0  # connect() itself failed (e.g. EMFILE here)
        self.max_established = 0

    def top_up(self) -> None:
        """Re-open up to ``count`` connections (the cut ones are replaced)."""
        while len(self._socks) < self.count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex((HOST, self.port))
            self.opened += 1
            if code not in (0, errno.EINPROGRESS):
                self.open_failures += 1
                sock.close()
                break
            self._socks[sock.fileno()] = sock

    def poll(self) -> tuple[int, int]:
        """Drop the connections the daemon closed; (established, still connecting)."""
        poller = select.poll()
        for fd in self._socks:
            poller.register(fd, select.POLLIN | select.POLLOUT | select.POLLERR | select.POLLHUP)
        established = 0
        ready = dict(poller.poll(0))
        for fd, sock in list(self._socks.items()):
            events = ready.get(fd, 0)
            closed = bool(events & (select.POLLERR | select.POLLHUP))
            if not closed and events & select.POLLIN:
                try:
                    closed = sock.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    closed = True
            if closed:
                self.cut += 1
                sock.close()
                del self._socks[fd]
            elif events & select.POLLOUT:
                established += 1
        self.max_established = max(self.max_established, established)
        return established, len(self._socks) - established

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()


# -- the state store faults ---------------------------------------------------------------


class StoreFaults:
    """A second connection that locks the daemon's state file; a filler that fills its disk."""

    def __init__(self, state_file: Path, tmpfs: Path | None) -> None:
        self.state_file = state_file
        self.tmpfs = tmpfs
        self._lock: sqlite3.Connection | None = None
        self.lock_wait_s = math.nan
        self.filler: Path | None = tmpfs / "filler" if tmpfs is not None else None
        self.filler_bytes = 0
        self.checkpoint: tuple[int, int, int] | None = None
        self.wal_bytes_before = 0

    def lock(self) -> None:
        t0 = time.monotonic()
        db = sqlite3.connect(self.state_file, timeout=30, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        self._lock = db
        self.lock_wait_s = time.monotonic() - t0

    def unlock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(sqlite3.Error):
                self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None

    def fill(self) -> None:
        """Empty the WAL into the database, then fill the tmpfs to the last byte.

        The checkpoint matters: SQLite reuses the frames of a WAL it has checkpointed, so a
        full disk would not refuse a single write until the WAL had to grow again.
        """
        if self.filler is None:
            return
        wal = Path(f"{self.state_file}-wal")
        self.wal_bytes_before = wal.stat().st_size if wal.exists() else 0
        db = sqlite3.connect(self.state_file, timeout=30, isolation_level=None)
        try:
            row = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            self.checkpoint = (int(row[0]), int(row[1]), int(row[2]))
        finally:
            db.close()
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (65536, 4096, 1):  # to the last byte the file system gives
                while True:
                    try:
                        written = os.write(fd, b"\0" * size)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
                    if not written:
                        break
                    self.filler_bytes += written
        finally:
            os.close(fd)

    def unfill(self) -> None:
        if self.filler is not None:
            self.filler.unlink(missing_ok=True)

    def release(self) -> None:
        self.unlock()
        self.unfill()


def mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``path``; None if done, else why not."""
    path.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if done.returncode != 0:
        text = (done.stderr or done.stdout).strip()
        return text.splitlines()[0] if text else f"exit {done.returncode}"
    return None


def unmount(path: Path) -> None:
    for args in (["umount", str(path)], ["umount", "-l", str(path)]):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if subprocess.run(args, capture_output=True, timeout=30, check=False).returncode == 0:
                return
    progress(f"could not unmount {path}")


# -- /metrics -----------------------------------------------------------------------------

_SERIES = re.compile(rb"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
Series = dict[str, list[tuple[dict[str, str], float]]]


def parse_metrics(body: bytes) -> Series:
    out: Series = {}
    for line in body.splitlines():
        if not line or line.startswith(b"#"):
            continue
        match = _SERIES.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match.group(2).decode())) if match.group(2) else {}
        out.setdefault(match.group(1).decode(), []).append((labels, float(match.group(3))))
    return out


def total(series: Series, name: str, **want: str) -> float:
    return sum(
        v for labels, v in series.get(name, []) if all(labels.get(k) == x for k, x in want.items())
    )


def lateness_buckets(series: Series) -> dict[float, float]:
    return {
        float(labels["le"]): v
        for labels, v in series.get("monitor_schedule_lateness_seconds_bucket", [])
    }


def bucket_bounds(now: dict[float, float], before: dict[float, float]) -> tuple[float, float]:
    """From a histogram's delta: (the bucket bound that holds the p99, the max's bound)."""
    delta = sorted((le, now[le] - before.get(le, 0.0)) for le in now)
    count = delta[-1][1] if delta else 0.0
    if count <= 0:
        return math.nan, math.nan
    p99 = next(le for le, c in delta if c >= 0.99 * count)
    top = next(le for le, c in delta if c >= count)
    return p99, top


# -- sampling -----------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    phase: str
    rss_mib: float
    fds: int
    scrape_s: float = math.nan
    scrape_error: str = ""
    tasks: float = math.nan
    store_up: float = math.nan
    writes_pending: float = math.nan
    notifications_pending: float = math.nan
    in_flight: float = math.nan
    checks_per_s: float = math.nan
    error_checks: float = math.nan  # reason="error" checks since the previous sample
    late_p99: float = math.nan
    late_max: float = math.nan
    received: int = 0
    idle: str = ""


@dataclass
class Sampler:
    pid: int
    port: int
    receiver: Receiver
    t0: float
    samples: list[Sample] = field(default_factory=list)
    last_series: Series | None = None
    last_at: float = 0.0
    last: Series | None = None  # the latest good scrape

    def take(self, phase: str, idle: IdleConnections | None) -> Sample:
        now = time.monotonic()
        sample = Sample(
            t=now - self.t0,
            phase=phase,
            rss_mib=_vm_rss_kib(self.pid) / 1024,
            fds=len(os.listdir(f"/proc/{self.pid}/fd")),
        )
        if idle is not None:
            established, connecting = idle.poll()
            sample.idle = f"{established}+{connecting}/{idle.cut}"
            idle.top_up()
        got = None
        for attempt in range(2):  # a failed scrape is counted, and tried once more
            try:
                got = scrape(self.port)
                break
            except OSError as exc:
                if not attempt:
                    sample.scrape_error = str(exc)[:80]
                    time.sleep(0.2)
        if got is not None:
            at = time.monotonic() - got.seconds / 2
            sample.scrape_s = got.seconds
            series = parse_metrics(got.body)
            self.last = series
            sample.tasks = total(series, "monitor_asyncio_tasks")
            sample.store_up = total(series, "monitor_state_store_up")
            sample.writes_pending = total(series, "monitor_state_writes_pending")
            sample.notifications_pending = total(series, "monitor_notifications_pending")
            sample.in_flight = total(series, "monitor_checks_in_flight")
            if self.last_series is not None:
                prev = self.last_series
                span = at - self.last_at
                checks = total(series, "monitor_checks_total")
                sample.checks_per_s = (checks - total(prev, "monitor_checks_total")) / span
                errors = total(series, "monitor_checks_total", reason="error")
                sample.error_checks = errors - total(prev, "monitor_checks_total", reason="error")
                sample.late_p99, sample.late_max = bucket_bounds(
                    lateness_buckets(series), lateness_buckets(prev)
                )
            self.last_series, self.last_at = series, at
        sample.received = len(self.receiver.messages)
        self.samples.append(sample)
        print(_sample_line(sample), flush=True)
        return sample


def _vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _f(value: float, fmt: str = ".0f") -> str:
    return "-" if math.isnan(value) else format(value, fmt)


def _le(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


def _sample_line(s: Sample) -> str:
    failed = f"scrape failed: {s.scrape_error}" if s.scrape_error else ""
    if math.isnan(s.scrape_s):
        metrics = failed
    else:
        metrics = " ".join(
            (
                f"tasks {_f(s.tasks):>4}",
                f"store_up {_f(s.store_up)}",
                f"writes_pend {_f(s.writes_pending):>3}",
                f"notif_pend {_f(s.notifications_pending):>3}",
                f"checks/s {_f(s.checks_per_s, '5.1f')}",
                f"err {_f(s.error_checks):>3}",
                f"late p99<={_le(s.late_p99):>6} max<={_le(s.late_max):>6}",
                f"in_flight {_f(s.in_flight):>3}",
            )
        )
        if failed:
            metrics += f" ({failed}; the retry worked)"
    idle = f" idle {s.idle}" if s.idle else ""
    return (
        f"{s.t:6.1f}s {s.phase:<13} rss {s.rss_mib:6.1f} MiB fds {s.fds:4d} {metrics}"
        f" msgs {s.received}{idle}"
    )


# -- the daemon's config ------------------------------------------------------------------


def kind_of(i: int) -> str:
    return KINDS[i % len(KINDS)]


def write_config(path: Path, farm: str, hook: str, targets: int) -> None:
    lines = [
        "notifiers:",
        f"  - {{name: {NOTIFIER}, type: webhook, url: '{hook}', timeout: 5s}}",
        "defaults:",
        f"  interval: {INTERVAL_S}s",
        f"  timeout: {TIMEOUT_S}s",
        f"  alerts: {{notifiers: [{NOTIFIER}], failure_threshold: {FAILURE_THRESHOLD}}}",
        "targets:",
    ]
    for i in range(targets):
        kind = kind_of(i)
        # The body must be read for the bomb and the endless body to bite: expect a text.
        expect = ", expect: {body_contains: 'x'}" if kind in ("gzip", "endless") else ""
        lines.append(f"  - {{name: {kind}-{i}, url: '{farm}/k/{kind}/{i}'{expect}}}")
    path.write_text("\n".join(lines) + "\n")


# -- after the run: the log, the outbox, the messages --------------------------------------


@dataclass
class LogReport:
    errors: Counter[str] = field(default_factory=Counter)
    error_texts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (event, error)
    warnings: Counter[str] = field(default_factory=Counter)
    expected: Counter[tuple[str, str]] = field(default_factory=Counter)  # (incident, event)
    state_changes: int = 0
    incident_to_incident: int = 0  # degraded <-> down: the closed id is not in the log
    reasons: dict[str, Counter[str]] = field(default_factory=dict)  # kind -> reason -> n
    max_duration: dict[str, float] = field(default_factory=dict)
    checks_by_phase: Counter[str] = field(default_factory=Counter)
    errors_by_phase: Counter[str] = field(default_factory=Counter)
    max_lateness: dict[str, float] = field(default_factory=dict)  # phase -> s (check lines)
    check_gap_s: float = 0.0
    check_gap_at: str = ""
    store_events: list[str] = field(default_factory=list)
    unparsed: int = 0
    unparsed_samples: list[str] = field(default_factory=list)


def phase_at(bounds: list[tuple[str, float, float]], ts: float) -> str:
    for name, start, end in bounds:
        if start <= ts < end:
            return name
    if bounds and ts < bounds[0][1]:
        return "start"
    return "stop"


def read_log(path: Path, bounds: list[tuple[str, float, float]], wall0: float) -> LogReport:
    report = LogReport()
    last_check: float | None = None
    with path.open("rb") as log:
        for raw in log:
            try:
                event: dict[str, Any] = json.loads(raw)
            except ValueError:
                report.unparsed += 1
                if len(report.unparsed_samples) < 5:
                    report.unparsed_samples.append(raw.decode(errors="replace").rstrip()[:200])
                continue
            name, level = str(event.get("event")), str(event.get("level"))
            try:
                ts = datetime.fromisoformat(str(event["timestamp"])).timestamp()
            except (KeyError, ValueError):
                ts = math.nan
            phase = phase_at(bounds, ts)
            if name == "check":
                kind = str(event.get("target", "?")).split("-", 1)[0]
                reason = str(event.get("reason"))
                report.reasons.setdefault(kind, Counter())[reason] += 1
                duration = float(event.get("duration_s", 0.0))
                report.max_duration[kind] = max(report.max_duration.get(kind, 0.0), duration)
                report.checks_by_phase[phase] += 1
                late = float(event.get("lateness_s", 0.0))
                report.max_lateness[phase] = max(report.max_lateness.get(phase, 0.0), late)
                if reason == "error":
                    report.errors_by_phase[phase] += 1
                if last_check is not None and ts - last_check > report.check_gap_s:
                    report.check_gap_s = ts - last_check
                    report.check_gap_at = f"{phase}, t={ts - wall0:.1f}s"
                last_check = ts
                continue
            if level == "error":
                report.errors[name] += 1
                text = str(event.get("error", event.get("consequence", "")))[:160]
                report.error_texts[(name, text)] += 1
            elif level == "warning":
                report.warnings[name] += 1
            if name in ("state_store_write_failed", "state_store_recovered"):
                report.store_events.append(f"{name} at t={ts - wall0:.1f}s ({phase})")
            if name == "state_change":
                report.state_changes += 1
                before, after = str(event.get("from")), str(event.get("to"))
                incident = str(event.get("incident_id"))
                if after in INCIDENT_STATES:
                    report.expected[(incident, "firing")] += 1
                    if before in INCIDENT_STATES:
                        report.incident_to_incident += 1
                elif before in INCIDENT_STATES:
                    report.expected[(incident, "resolved")] += 1
    return report


def read_outbox(state_file: Path) -> list[tuple[str, str, str]]:
    """(incident_id, event, target) of every message still queued in the state file."""
    if not state_file.exists():
        return []
    db = sqlite3.connect(state_file, timeout=10)
    try:
        rows = db.execute("SELECT payload FROM outbox ORDER BY id").fetchall()
    except sqlite3.Error as exc:
        progress(f"cannot read the outbox: {exc}")
        return []
    finally:
        db.close()
    out = []
    for (payload,) in rows:
        note = json.loads(payload)
        out.append((str(note["incident_id"]), str(note["kind"]), str(note["target"])))
    return out


# -- the run ------------------------------------------------------------------------------


@dataclass
class Result:
    config: dict[str, Any]
    samples: list[Sample]
    messages: list[Message]
    rejected: int
    outbox: list[tuple[str, str, str]]
    final_states: dict[str, str]
    log: LogReport
    exit_code: int | None
    stop_s: float
    died: str
    tmpfs_note: str
    faults: StoreFaults | None
    idle: IdleConnections | None
    drained: bool
    caught: list[str]
    stderr_tail: str
    logs: str | None


@contextlib.contextmanager
def nofile_for_children(soft: int | None) -> Iterator[None]:
    """While starting a child: the soft open-file limit ``soft`` (children inherit it)."""
    if soft is None:
        yield
        return
    mine = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, mine[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, mine)


class DaemonDied(Exception):
    """The daemon exited during the soak."""


def start_fault(
    name: str,
    args: argparse.Namespace,
    faults: StoreFaults,
    receiver: Receiver,
    port: int,
    tmpfs_note: str,
) -> IdleConnections | None:
    """What a phase does at its start; the idle connections for idle-conns."""
    if name == "store-locked":
        faults.lock()
        progress(f"state file locked (BEGIN EXCLUSIVE after {faults.lock_wait_s:.2f} s)")
    elif name == "store-full":
        if faults.filler is None:
            progress(f"store-full: {tmpfs_note}")
        else:
            faults.fill()
            progress(
                f"tmpfs filled: WAL was {faults.wal_bytes_before / 1024:.0f} KiB, checkpoint "
                f"{faults.checkpoint}, filler {faults.filler_bytes / 1024:.0f} KiB"
            )
    elif name == "notifier-down":
        receiver.down = True
    elif name == "idle-conns":
        idle = IdleConnections(port, args.idle_connections)
        idle.top_up()
        return idle
    return None


def end_fault(
    name: str, faults: StoreFaults, receiver: Receiver, idle: IdleConnections | None
) -> None:
    if name == "store-locked":
        faults.unlock()
        progress("state file unlocked")
    elif name == "store-full":
        faults.unfill()
        progress("filler deleted")
    elif name == "notifier-down":
        receiver.down = False
        progress("the notifier answers 200 again")
    elif name == "idle-conns" and idle is not None:
        idle.poll()
        idle.close()
        progress("idle connections closed")


def run_soak(args: argparse.Namespace) -> Result:
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    log_path, err_path = tmp / "daemon.log", tmp / "daemon.stderr"
    files: list[TextIO] = []
    daemon: subprocess.Popen[bytes] | None = None
    farm: subprocess.Popen[bytes] | None = None
    receiver = Receiver()
    idle: IdleConnections | None = None
    faults: StoreFaults | None = None
    mounted: Path | None = None
    failed = True
    try:
        # Room for the idle connections on this side; the daemon gets --daemon-nofile.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = args.idle_connections + 512
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        # The state file: on a small tmpfs if this process may mount one.
        tmpfs_note = ""
        state_dir = tmp
        if args.tmpfs_size:
            why = mount_tmpfs(tmp / "store", args.tmpfs_size)
            if why is None:
                mounted = state_dir = tmp / "store"
                tmpfs_note = f"tmpfs of {args.tmpfs_size}"
            else:
                tmpfs_note = f"skipped: cannot mount tmpfs ({why})"
                progress(tmpfs_note)
        else:
            tmpfs_note = "skipped: --tmpfs-size ''"
        state_file = state_dir / "monitor-state.db"
        faults = StoreFaults(state_file, mounted)

        farm, farm_url = start_farm(procs)
        progress(f"farm at {farm_url} (pid {farm.pid})")
        receiver.start()
        hook = f"http://{HOST}:{receiver.port}/hook"
        config = tmp / "targets.yaml"
        write_config(config, farm_url, hook, args.targets)

        stdout = log_path.open("w")
        stderr = err_path.open("w")
        files += [stdout, stderr]
        command = [
            sys.executable,
            "-m",
            "monitor",
            "run",
            "--config",
            str(config),
            "--listen",
            f"{HOST}:0",
            "--log-format",
            "json",
            "--state-file",
            str(state_file),
        ]
        with nofile_for_children(args.daemon_nofile or None):
            daemon = subprocess.Popen(
                command,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=daemon_env(None),
                cwd=tmp,
                start_new_session=True,
            )
        procs.append(daemon)
        watched = [daemon, farm]
        deadline = time.monotonic() + 60
        port = wait_startup(log_path, deadline, watched)
        wait_http_ok(f"http://{HOST}:{port}/readyz", deadline, watched)
        daemon_limit = Path(f"/proc/{daemon.pid}/limits").read_text()
        nofile = next((ln for ln in daemon_limit.splitlines() if "open files" in ln), "?")
        progress(f"daemon pid {daemon.pid} ready on port {port}; {' '.join(nofile.split())}")

        t0 = time.monotonic()
        wall0 = time.time()
        receiver.t0 = t0
        sampler = Sampler(daemon.pid, port, receiver, t0)
        bounds: list[tuple[str, float, float]] = []
        died = ""
        drained = False
        caught: list[str] = []  # what the store faults caught in flight

        def tick(phase: str, connections: IdleConnections | None) -> Sample:
            """One sample; DaemonDied if the daemon is gone."""
            assert daemon is not None and farm is not None
            if daemon.poll() is not None:
                raise DaemonDied(f"the daemon exited with code {daemon.returncode} ({phase})")
            ensure_alive([farm])
            try:
                return sampler.take(phase, connections)
            except OSError:  # its /proc entry went away
                if daemon.poll() is not None:
                    raise DaemonDied(f"the daemon exited with code {daemon.returncode}") from None
                raise

        try:
            at = 0.0
            for name, share in PHASES:
                length = args.duration * share
                start, end = t0 + at, t0 + at + length
                at += length
                receiver.phase = name
                progress(f"phase {name} ({length:.1f} s)")
                bounds.append((name, wall0 + (start - t0), wall0 + (end - t0)))
                # A store fault starts while a delivery is in flight: the receiver holds the
                # next message until the fault is in place, then answers 200.
                catch_until = None
                if name == "store-locked" or (name == "store-full" and faults.filler):
                    receiver.catch()
                    catch_until = start + length * CATCH_SHARE
                else:
                    idle = start_fault(name, args, faults, receiver, port, tmpfs_note) or idle
                fault_end: float | None = start + length * FAULT_SHARE
                flap_stop = start + length * FLAP_STOP_SHARE if name == "recovery" else None
                next_sample = time.monotonic()
                while (now := time.monotonic()) < end:
                    if catch_until is not None and (receiver.has_caught() or now >= catch_until):
                        start_fault(name, args, faults, receiver, port, tmpfs_note)
                        held = receiver.caught
                        receiver.let_go()
                        catch_until = None
                        caught.append(
                            f"{name}: started {now - start:.1f} s into the phase while the "
                            f"receiver held {held.event} {held.incident_id} (answered 200 then)"
                            if held is not None
                            else f"{name}: no delivery in flight within {now - start:.1f} s"
                        )
                        progress(caught[-1])
                    if fault_end is not None and now >= fault_end:
                        end_fault(name, faults, receiver, idle)
                        fault_end = None
                    if flap_stop is not None and now >= flap_stop:
                        farm.send_signal(signal.SIGUSR1)
                        progress("flapping stopped: every flap target answers 200 from now on")
                        flap_stop = None
                    if now >= next_sample:
                        holding = name == "idle-conns" and fault_end is not None
                        tick(name, idle if holding else None)
                        next_sample += SAMPLE_EVERY_S
                    time.sleep(max(0.0, min(0.1, next_sample - now, end - now)))
                if fault_end is not None:
                    end_fault(name, faults, receiver, idle)

            # Drain: until nothing waits (writes, messages), bounded.
            receiver.phase = "drain"
            bounds.append(("drain", wall0 + (time.monotonic() - t0), math.inf))
            progress(f"draining (at most {args.drain_timeout:g} s)")
            drain_end = time.monotonic() + args.drain_timeout
            next_sample = time.monotonic()
            while time.monotonic() < drain_end:
                if time.monotonic() >= next_sample:
                    sample = tick("drain", None)
                    next_sample += SAMPLE_EVERY_S
                    if sample.notifications_pending == 0 and sample.writes_pending == 0:
                        drained = True
                        break
                time.sleep(0.1)
        except DaemonDied as exc:
            died = str(exc)
            progress(died)
        final_states: dict[str, str] = {}
        if sampler.last is not None:
            for labels, value in sampler.last.get("monitor_state", []):
                if value == 1:
                    final_states[labels.get("target", "?")] = labels.get("state", "?")

        if died:
            code, stop_s = daemon.returncode, 0.0
        else:
            progress("stopping the daemon with SIGTERM")
            code, stop_s = stop_daemon(daemon, 30)
        if faults is not None:
            faults.release()
        outbox = read_outbox(state_file)
        report = read_log(log_path, bounds, wall0)
        failed = code != 0 or bool(died)
        return Result(
            config={
                "targets": args.targets,
                "duration_s": args.duration,
                "idle_connections": args.idle_connections,
                "daemon_nofile": args.daemon_nofile or "inherited",
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "revision": revision(),
            },
            samples=sampler.samples,
            messages=list(receiver.messages),
            rejected=receiver.rejected,
            outbox=outbox,
            final_states=final_states,
            log=report,
            exit_code=code,
            stop_s=stop_s,
            died=died,
            tmpfs_note=tmpfs_note,
            faults=faults,
            idle=idle,
            drained=drained,
            caught=caught,
            stderr_tail=tail(err_path),
            logs=str(tmp) if args.keep or failed else None,
        )
    except BaseException:
        if daemon is not None:
            progress(f"failed; daemon stderr tail:\n{tail(err_path)}")
            progress(f"daemon stdout tail:\n{tail(log_path, 5)}")
        raise
    finally:
        if idle is not None:
            idle.close()
        if faults is not None:
            faults.release()
        if daemon is not None:
            kill_group(daemon)  # still running only if something went wrong
        if farm is not None and farm.poll() is None:
            farm.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                farm.wait(timeout=5)
            kill_group(farm)
        receiver.stop()
        for file in files:
            file.close()
        if mounted is not None:
            if args.keep or failed:  # keep the state file with the logs
                with contextlib.suppress(OSError):
                    for item in mounted.iterdir():
                        shutil.copy2(item, tmp / item.name)
            unmount(mounted)
        if args.keep or failed:
            progress(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# -- the summary --------------------------------------------------------------------------


def _range(values: list[float], fmt: str = ".0f") -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return format(lo, fmt) if lo == hi else f"{format(lo, fmt)}-{format(hi, fmt)}"


def _worst_le(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    return _le(max(values)) if values else "-"


def summary(r: Result) -> str:
    c = r.config
    out = [
        "",
        f"uptime-monitor soak: {c['targets']} targets ({', '.join(KINDS)}), interval "
        f"{INTERVAL_S} s, timeout {TIMEOUT_S} s, failure_threshold {FAILURE_THRESHOLD}, "
        f"phases over {c['duration_s']:g} s",
        f"{c['cpus']} CPUs, Python {c['python']}, revision {c['revision']}, daemon open-file "
        f"limit {c['daemon_nofile']}, state store: {r.tmpfs_note}",
        "",
    ]
    phases = [name for name, _ in PHASES] + ["drain"]
    head = (
        f"{'phase':<13} {'RSS MiB':>11} {'fds':>9} {'tasks':>9} {'checks/s':>9} {'err':>4}"
        f" {'late p99<=':>10} {'max<=':>6} {'store_up':>8} {'writes':>6} {'notif':>5}"
        f" {'msgs':>5} {'scrape':>6}"
    )
    out += [head, "-" * len(head)]
    msgs_by_phase = Counter(m.phase for m in r.messages)
    for phase in phases:
        ss = [s for s in r.samples if s.phase == phase]
        if not ss:
            continue
        ok = [s for s in ss if not math.isnan(s.scrape_s)]
        first_ok = sum(not s.scrape_error for s in ss)
        rates = [s.checks_per_s for s in ok if not math.isnan(s.checks_per_s)]
        rate = f"{sum(rates) / len(rates):.1f}" if rates else "-"
        errs = sum(s.error_checks for s in ok if not math.isnan(s.error_checks))
        out.append(
            f"{phase:<13} {_range([s.rss_mib for s in ss], '.1f'):>11}"
            f" {_range([float(s.fds) for s in ss]):>9} {_range([s.tasks for s in ok]):>9}"
            f" {rate:>9} {errs:>4.0f} {_worst_le([s.late_p99 for s in ok]):>10}"
            f" {_worst_le([s.late_max for s in ok]):>6} {_range([s.store_up for s in ok]):>8}"
            f" {_range([s.writes_pending for s in ok]):>6}"
            f" {_range([s.notifications_pending for s in ok]):>5}"
            f" {msgs_by_phase.get(phase, 0):>5} {first_ok}/{len(ss):<4}"
        )
    out.append(
        "(ranges are min-max over the phase's samples; err = checks with reason error; "
        "late = bucket bounds of monitor_schedule_lateness_seconds; scrape = first tries ok/all)"
    )

    # -- faults --
    out.append("")
    f = r.faults
    held = f"the first {FAULT_SHARE:.0%} of its phase"
    if f is not None:
        out.append(
            f"store-locked: BEGIN EXCLUSIVE held for {held} (got it after {f.lock_wait_s:.2f} s)"
        )
        if f.filler is not None:
            out.append(
                f"store-full: WAL of {f.wal_bytes_before / 1024:.0f} KiB checkpointed "
                f"{f.checkpoint}, then a {f.filler_bytes / 1024:.0f} KiB filler for {held}"
            )
        else:
            out.append(f"store-full: {r.tmpfs_note}")
    out += [f"  {line}" for line in r.caught]
    out.append("store events: " + ("; ".join(r.log.store_events) if r.log.store_events else "none"))
    if r.idle is not None:
        tried = [s for s in r.samples if s.phase == "idle-conns" and s.idle]
        failed = [s for s in tried if s.scrape_error]
        retried = sum(not math.isnan(s.scrape_s) for s in failed)
        why = Counter(s.scrape_error for s in failed)
        out.append(
            f"idle-conns: {r.idle.count} idle connections for {held}, re-opened when cut (every "
            f"{SAMPLE_EVERY_S:g} s, just before the scrape): {r.idle.opened} connects, "
            f"{r.idle.cut} cut by the daemon, {r.idle.open_failures} failed connects; at most "
            f"{r.idle.max_established} open on this side at a sample (the daemon's backlog too)"
        )
        out.append(
            f"  scrapes meanwhile: {len(tried) - len(failed)}/{len(tried)} ok at the first try; "
            f"{retried}/{len(failed)} failed ones worked when tried again 0.2 s later"
            + "".join(f"; {n}x {e}" for e, n in why.items())
        )
    out.append(f"notifier-down: 503 for {held}: {r.rejected} delivery attempts answered 503")

    # -- checks --
    out.append("")
    out.append("checks by kind (reasons from the log; max duration):")
    for kind in KINDS:
        reasons = r.log.reasons.get(kind, Counter())
        text = ", ".join(f"{k} {v}" for k, v in reasons.most_common())
        out.append(f"  {kind:<8} {text or '-'}; max {r.log.max_duration.get(kind, 0.0):.2f} s")
    late = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in r.log.max_lateness.items())
    out.append(f"largest lateness_s of a check line, by phase: {late}")
    by_phase = sorted(r.log.errors_by_phase.items())
    out.append(
        "checks with reason error, by phase: "
        + (", ".join(f"{k} {v}" for k, v in by_phase) or "none")
    )
    out.append(
        f"longest gap between two check log lines: {r.log.check_gap_s:.2f} s ({r.log.check_gap_at})"
    )

    # -- messages --
    out.append("")
    out += _message_summary(r)

    # -- the daemon --
    out.append("")
    code = r.exit_code if r.exit_code is not None else "did not exit"
    out.append(f"daemon exit code after SIGTERM: {code} (in {r.stop_s:.2f} s){r.died}")
    errors_text = ", ".join(f"{k} x{v}" for k, v in r.log.errors.most_common()) or "none"
    out.append(f"error-level log events: {errors_text}")
    for (name, text), count in r.log.error_texts.most_common(10):
        out.append(f"  {name} x{count}: {text}")
    warnings_text = ", ".join(f"{k} x{v}" for k, v in r.log.warnings.most_common()) or "none"
    out.append(f"warning-level log events: {warnings_text}")
    out.append(f"unparsed log lines: {r.log.unparsed}")
    for line in r.log.unparsed_samples:
        out.append(f"  {line}")
    if r.stderr_tail:
        out.append("daemon stderr (tail):")
        out += [f"  {line}" for line in r.stderr_tail.splitlines()]
    if r.logs:
        out.append(f"logs: {r.logs}")
    return "\n".join(out)


def _message_summary(r: Result) -> list[str]:
    out = []
    by_kind = Counter((m.event, m.state) for m in r.messages)
    text = ", ".join(f"{e}/{s} {n}" for (e, s), n in sorted(by_kind.items()))
    out.append(f"messages received: {len(r.messages)} ({text or 'none'})")
    pairs = Counter((m.incident_id, m.event) for m in r.messages if m.event != "reminder")
    duplicates = {k: n for k, n in pairs.items() if n > 1}
    dup_text = ", ".join(f"{i} {e} x{n}" for (i, e), n in list(duplicates.items())[:10])
    out.append(f"duplicates of (incident_id, event): {len(duplicates)} {dup_text}".rstrip())
    outbox = Counter((i, e) for i, e, _ in r.outbox)
    expected = r.log.expected
    lost = sorted(set(expected) - set(pairs) - set(outbox))
    unexpected = sorted(set(pairs) - set(expected))
    out.append(
        f"state changes logged: {r.log.state_changes}; messages they imply: {len(expected)}; "
        f"received: {len(set(pairs) & set(expected))}; still in the outbox at exit: "
        f"{len(set(outbox))}; lost (neither): {len(lost)}; received but never logged: "
        f"{len(unexpected)}"
    )
    for incident, event in lost[:10]:
        out.append(f"  lost: {event} {incident}")
    for incident, event in unexpected[:10]:
        out.append(f"  not in the log: {event} {incident}")
    if r.log.incident_to_incident:
        out.append(
            f"  ({r.log.incident_to_incident} degraded<->down changes: their RESOLVED is not "
            "counted above)"
        )
    fired = {m.incident_id: m.target for m in r.messages if m.event == "firing"}
    resolved = {m.incident_id for m in r.messages if m.event == "resolved"}
    order: dict[tuple[str, str], int] = {}
    for index, m in enumerate(r.messages):
        order.setdefault((m.incident_id, m.event), index)
    backwards = [
        i for i in fired if i in resolved and order[(i, "resolved")] < order[(i, "firing")]
    ]
    still_open = {i: t for i, t in fired.items() if i not in resolved}
    open_by_target = Counter(still_open.values())
    down_at_end = {t for t, s in r.final_states.items() if s in INCIDENT_STATES}
    queued_resolve = {i for (i, e) in outbox if e == "resolved"}
    open_but_up = [
        i for i, t in still_open.items() if t not in down_at_end and i not in queued_resolve
    ]
    down_without = sorted(down_at_end - set(open_by_target) - {t for _, _, t in r.outbox})
    kinds_open = Counter(t.split("-", 1)[0] for t in still_open.values())
    open_text = ", ".join(f"{k} {n}" for k, n in sorted(kinds_open.items()))
    out.append(
        f"incidents: {len(fired)} opened, {len(fired) - len(still_open)} resolved, "
        f"{len(still_open)} still open ({open_text})"
    )
    out.append(
        f"  resolved without a firing received: {len(resolved - set(fired))}; resolved before "
        f"its firing: {len(backwards)}; targets with >1 open incident: "
        f"{sum(n > 1 for n in open_by_target.values())}"
    )
    out.append(
        f"  still open but the target is up at the end: {len(open_but_up)}; down at the end "
        f"without an open incident: {len(down_without)}"
    )
    for i in open_but_up[:10]:
        out.append(f"    open, target up: {i}")
    for t in down_without[:10]:
        out.append(f"    down, no incident: {t}")
    flap_open = [i for i, t in still_open.items() if t.startswith("flap-")]
    out.append(
        f"  flap incidents still open after the flapping stopped: {len(flap_open)}"
        + ("" if r.drained else "  (the queues did not drain in time)")
    )
    return out


def print_messages(messages: list[Message]) -> None:
    print("\nmessages received (in order):")
    for m in messages:
        print(
            f"{m.t:6.1f}s {m.phase:<13} {m.event:<8} {m.target:<12} {m.previous_state:>8} -> "
            f"{m.state:<8} {m.incident_id}"
        )


# -- the command line ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--targets", type=int, default=300, help="number of targets (300)")
    p.add_argument("--duration", type=float, default=120.0, help="all phases together, s (120)")
    p.add_argument(
        "--idle-connections", type=int, default=1100, help="idle connections held (1100)"
    )
    p.add_argument(
        "--daemon-nofile",
        type=int,
        default=1024,
        help="the daemon's soft open-file limit (1024, a common default; 0: inherit this one's)",
    )
    p.add_argument(
        "--tmpfs-size",
        default="8m",
        help="size of the tmpfs for the state file (8m; '' for none, in the temp dir)",
    )
    p.add_argument(
        "--drain-timeout", type=float, default=30.0, help="wait for empty queues at most, s (30)"
    )
    p.add_argument("--no-messages", action="store_true", help="do not list every message")
    p.add_argument("--keep", action="store_true", help="keep the temporary dir with the logs")
    p.add_argument("--serve-farm", type=int, help=argparse.SUPPRESS)  # farm mode: the fd
    p.add_argument("--flap-down", type=float, default=FLAP_DOWN_S, help=argparse.SUPPRESS)
    p.add_argument("--flap-up", type=float, default=FLAP_UP_S, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.serve_farm is not None:
        serve_farm(args.serve_farm, args.flap_down, args.flap_up)
        return 0
    if args.targets < len(KINDS) or args.duration <= 0 or args.idle_connections < 0:
        print(f"soak: --targets must be >= {len(KINDS)}, --duration > 0", file=sys.stderr)
        return 2

    def on_term(_sig: int, _frame: object) -> None:
        raise SystemExit(143)  # runs the cleanup in run_soak's finally

    signal.signal(signal.SIGTERM, on_term)
    try:
        result = run_soak(args)
    except BenchError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    if not args.no_messages:
        print_messages(result.messages)
    print(summary(result))
    return 0 if result.exit_code == 0 and not result.died else 1


if __name__ == "__main__":
    sys.exit(main())
