"""Run ``uptime-monitor run`` as a real process and read its JSON log lines as they come."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

Event = dict[str, Any]


class Daemon:
    """A running daemon: its log events, its metrics port, and a way to stop it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[Event] = []
        self.raw: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self.port = 0

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            text = line.decode(errors="replace")
            self.raw.append(text)
            try:
                self.events.append(json.loads(text))
            except ValueError:
                self.events.append({"event": "unparsed", "line": text})
            self._changed.set()
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[Event], bool], count: int = 1, timeout_s: float = 20
    ) -> list[Event]:
        """Wait until ``count`` events match ``predicate``; return them."""
        async with asyncio.timeout(timeout_s):
            while True:
                found = [e for e in self.events if predicate(e)]
                if len(found) >= count:
                    return found
                if self._reader.done():
                    msg = f"daemon exited ({self.process.returncode}): {''.join(self.raw)[-3000:]}"
                    raise AssertionError(msg)
                self._changed.clear()
                await self._changed.wait()

    async def get(self, path: str) -> tuple[int, str]:
        """GET a path on the metrics port: (status, body)."""
        return await self._request("GET", path)

    async def post(self, path: str) -> tuple[int, str]:
        """POST (empty body) to a path on the metrics port: (status, body). POST /-/reload
        answers 403 unless the daemon runs with --web-enable-lifecycle."""
        return await self._request("POST", path)

    async def _request(self, method: str, path: str) -> tuple[int, str]:
        def send() -> tuple[int, str]:
            url = f"http://127.0.0.1:{self.port}{path}"
            data = b"" if method == "POST" else None
            request = urllib.request.Request(url, data=data, method=method)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        # In a thread: urllib blocks, and the daemon's log reader must keep running.
        return await asyncio.to_thread(send)

    async def exited(self, timeout_s: float = 30) -> int:
        """Wait for the process to end by itself; its exit code."""
        async with asyncio.timeout(timeout_s):
            code = await self.process.wait()
            await self._reader
        return code

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15) -> int:
        """Send ``sig`` and wait for the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(sig)
        async with asyncio.timeout(timeout_s):
            code = await self.process.wait()
            await self._reader
        return code


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "monitor", *args]


@asynccontextmanager
async def run_daemon(
    config: Path, *extra: str, env: dict[str, str] | None = None, wait_ready: bool = True
) -> AsyncIterator[Daemon]:
    """Start the daemon on ``config`` with a free metrics port; kill it if the test fails."""
    if "--state-file" not in extra:
        extra = (*extra, "--state-file", str(config.parent / "state.db"))
    process = await asyncio.create_subprocess_exec(
        *command(
            "run",
            "--config",
            str(config),
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            *extra,
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        cwd=config.parent,  # nothing the daemon writes lands in the repository
    )
    daemon = Daemon(process)
    try:
        if wait_ready:
            (startup,) = await daemon.wait_for(lambda e: e.get("event") == "startup")
            daemon.port = int(str(startup["listen"]).rpartition(":")[2])
        yield daemon
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        daemon._reader.cancel()


def first_slot_name(prefix: str = "t") -> str:
    """A target name whose stable slot fires right at start (first runs are otherwise spread
    over the interval, so a lone 60 s target may wait up to a minute)."""
    from monitor.scheduling import MAX_SLOTS_PER_INTERVAL, slot_of

    return next(
        f"{prefix}{i}"
        for i in range(100_000)
        if slot_of(f"{prefix}{i}", MAX_SLOTS_PER_INTERVAL) == 0
    )


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in an exposition, whatever the label order; None if absent.

    Per-target series also carry ``location`` (``default`` for a single instance): a test
    that names a target but no location means that one."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = [labels]
    if "target" in labels and "location" not in labels:
        wanted.append({**labels, "location": "default"})
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels in wanted:
                return float(s.value)
    return None


def label_sets(text: str, name: str) -> list[dict[str, str]]:
    """The label sets of every series called ``name`` in an exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        dict(s.labels)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


async def run_command(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``uptime-monitor ARGS`` run to its end (at most 60 s) outside the repository, with
    ``env`` added to the environment: its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        *command(*args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=tempfile.gettempdir(),
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def assert_promtool_accepts(text: str) -> None:
    """`promtool check metrics` finds nothing wrong with the exposition ``text``; without
    promtool this passes, but not in CI (`make test` installs it)."""
    promtool = shutil.which("promtool")
    if promtool is None and os.environ.get("CI"):
        pytest.fail("promtool is missing: `make test` installs the Debian package prometheus")
    if promtool is None:
        return
    check_metrics = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await check_metrics.communicate(text.encode())
    assert (check_metrics.returncode, out) == (0, b"")
