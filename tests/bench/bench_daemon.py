"""End-to-end benchmark of the daemon: N loopback targets, one bounded run, one summary table.

    python tests/bench/bench_daemon.py                      # 2,000 targets, 10 s, 40 s window
    python tests/bench/bench_daemon.py --targets 10000 --interval 60 --duration 60 --json

What it does, in order (every step bounded in time; see tests/bench/README.md):

1. binds a listening socket on 127.0.0.1 port 0 and starts ``--server-workers`` target server
   processes sharing it (a tiny aiohttp app answering ``200 ok``; ``--server nginx`` uses nginx
   instead if it is installed);
2. writes a YAML file with ``--targets`` targets ``/t/{i}`` and starts the daemon as
   ``python -m monitor run --listen 127.0.0.1:0 --log-format json``, stdout to a file;
3. waits for the ``startup`` log line (the bound port) and ``/readyz``, warms up one interval;
4. measures over the window: checks/s, daemon CPU (``/proc/<pid>/stat``), peak RSS
   (``VmHWM``), schedule lateness (the ``lateness_s`` of the JSON check lines), optionally
   scraping ``/metrics`` every 5 s as Prometheus would;
5. times a few ``/metrics`` scrapes after the window (plain text, and as Prometheus asks);
6. stops the daemon with SIGTERM and requires exit code 0.

Only 127.0.0.1 is used. Every process it starts is in its own process group and is killed in
a ``finally``. Exit status: 0 if the daemon exited 0 and checks were seen, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
SCRAPE_EVERY_S = 5.0
SETTLE_S = 2.0  # after the window's opening /metrics snapshot, before the window starts
HTTP_TIMEOUT_S = 60.0
# What Prometheus 2.x sends by default: OpenMetrics preferred, gzip accepted.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


class BenchError(Exception):
    """The benchmark could not run to the end (the daemon died, a wait timed out, ...)."""


# -- the target server --------------------------------------------------------------------


def serve_fd(fd: int) -> None:
    """Worker mode (``--serve-fd``): answer ``200 ok`` on an inherited listening socket."""
    from aiohttp import web

    async def handler(_request: web.BaseRequest) -> web.Response:
        return web.Response(text="ok\n")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sock = socket.socket(fileno=fd)
        server = web.Server(handler, access_log=None)
        listener = await loop.create_server(server, sock=sock)
        await stop.wait()
        listener.close()
        await server.shutdown(1.0)

    asyncio.run(main())


@dataclass
class TargetServer:
    kind: str
    base_url: str
    procs: list[subprocess.Popen[bytes]]

    def pids(self) -> list[int]:
        """The worker processes, plus (nginx) the master's children."""
        pids: list[int] = []
        for proc in self.procs:
            pids.append(proc.pid)
            pids.extend(_children(proc.pid))
        return pids


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def start_aiohttp_server(workers: int, procs: list[subprocess.Popen[bytes]]) -> TargetServer:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        sock.listen(4096)
        port = sock.getsockname()[1]
        own: list[subprocess.Popen[bytes]] = []
        for _ in range(workers):
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--serve-fd", str(sock.fileno())],
                pass_fds=[sock.fileno()],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
            procs.append(proc)
            own.append(proc)
        server = TargetServer("aiohttp", f"http://{HOST}:{port}", own)
        # The socket listens already; wait until a worker answers before letting go of it.
        wait_http_ok(f"{server.base_url}/t/0", time.monotonic() + 30, own)
    finally:
        sock.close()
    return server


def start_nginx_server(
    workers: int, tmp: Path, procs: list[subprocess.Popen[bytes]]
) -> TargetServer:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if nginx is None:
        msg = "--server nginx: no nginx on PATH or in /usr/sbin"
        raise BenchError(msg)
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""daemon off;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    server {{
        listen {HOST}:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
"""
    )
    proc = subprocess.Popen(
        [nginx, "-p", str(tmp), "-c", str(conf)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    procs.append(proc)
    server = TargetServer("nginx", f"http://{HOST}:{port}", [proc])
    wait_http_ok(f"{server.base_url}/t/0", time.monotonic() + 30, [proc])
    return server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# -- small helpers ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            total += cpu_seconds(pid)
    return total


def vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    msg = f"no {key} in /proc/{pid}/status"
    raise BenchError(msg)


def ensure_alive(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        code = proc.poll()
        if code is not None:
            what = " ".join(str(arg) for arg in proc.args[1:4])  # type: ignore[index]
            msg = f"process '{what}' (pid {proc.pid}) exited early with code {code}"
            raise BenchError(msg)


def sleep_watching(seconds: float, procs: list[subprocess.Popen[bytes]]) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        ensure_alive(procs)
        time.sleep(min(0.25, left))
    ensure_alive(procs)


def wait_http_ok(url: str, deadline: float, procs: list[subprocess.Popen[bytes]]) -> None:
    last = ""
    while time.monotonic() < deadline:
        ensure_alive(procs)
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    msg = f"{url} did not answer 200 in time ({last or 'no answer'})"
    raise BenchError(msg)


@dataclass
class Scrape:
    started: float  # wall clock
    seconds: float
    wire_bytes: int
    body: bytes  # decompressed


def scrape(port: int, headers: dict[str, str] | None = None) -> Scrape:
    request = urllib.request.Request(f"http://{HOST}:{port}/metrics", headers=headers or {})
    started = time.time()
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        raw = response.read()
        encoding = response.headers.get("Content-Encoding", "")
    seconds = time.perf_counter() - t0
    body = gzip.decompress(raw) if encoding == "gzip" else raw
    return Scrape(started, seconds, len(raw), body)


_REASON = re.compile(rb'reason="([^"]*)"')


def parse_counters(body: bytes) -> dict[str, float]:
    """Sums of the few series the benchmark compares: checks by reason, skipped, lateness."""
    out: dict[str, float] = Counter()
    for line in body.splitlines():
        if line.startswith(b"monitor_checks_total{"):
            head, _, value = line.rpartition(b" ")
            match = _REASON.search(head)
            reason = match.group(1).decode() if match else "?"
            out[f"checks:{reason}"] += float(value)
            out["checks"] += float(value)
        elif line.startswith(
            (
                b"monitor_checks_skipped_total ",
                b"monitor_schedule_lateness_seconds_count ",
                b"monitor_schedule_lateness_seconds_sum ",
            )
        ):
            name, _, value = line.partition(b" ")
            out[name.decode()] += float(value.split()[0])
    return dict(out)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (nan if empty)."""
    if not values:
        return math.nan
    return values[max(0, math.ceil(pct / 100 * len(values)) - 1)]


def median(values: list[float]) -> float:
    return percentile(sorted(values), 50)


# -- the daemon ---------------------------------------------------------------------------


def write_config(
    path: Path, base_url: str, targets: int, interval_s: float, *, reuse_connections: bool = False
) -> None:
    timeout_s = min(5.0, interval_s)
    lines = [
        "defaults:",
        f"  interval: {interval_s:g}s",
        f"  timeout: {timeout_s:g}s",
    ]
    if reuse_connections:
        lines.append("  reuse_connections: true")
    lines.append("targets:")
    lines += [f"  - {{name: t{i}, url: '{base_url}/t/{i}'}}" for i in range(targets)]
    path.write_text("\n".join(lines) + "\n")


def daemon_env(max_concurrency: int | None) -> dict[str, str]:
    # Nothing from the caller's MONITOR_* settings may change what is measured. The daemon
    # runs in the temporary directory (relative paths such as its state file land there), so
    # the repository goes on PYTHONPATH in case the package is not installed.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if max_concurrency is not None:
        env["MONITOR_MAX_CONCURRENCY"] = str(max_concurrency)
    return env


def wait_startup(log_path: Path, deadline: float, procs: list[subprocess.Popen[bytes]]) -> int:
    """The port from the daemon's ``startup`` line (it listens on port 0)."""
    while time.monotonic() < deadline:
        ensure_alive(procs)
        with log_path.open("rb") as log:
            for line in log:
                if b'"startup"' in line:
                    event = json.loads(line)
                    return int(event["listen"].rpartition(":")[2])
        time.sleep(0.2)
    msg = "the daemon logged no startup line in time"
    raise BenchError(msg)


def revision() -> str:
    """``git describe --always --dirty`` of the repository, or ``?``."""
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return done.stdout.strip() or "?"


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_daemon(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[int | None, float]:
    """SIGTERM, then wait; returns (exit code or None if it did not exit, seconds taken)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - t0
    return code, time.monotonic() - t0


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        print(f"bench: pid {proc.pid} did not die", file=sys.stderr)


# -- the log ------------------------------------------------------------------------------


@dataclass
class LogStats:
    window_checks: int = 0
    window_failed: int = 0
    window_reasons: Counter[str] = field(default_factory=Counter)
    lateness: list[float] = field(default_factory=list)
    lateness_scrape: list[float] = field(default_factory=list)
    lateness_quiet: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    run_checks: int = 0
    run_failed: int = 0
    run_reasons: Counter[str] = field(default_factory=Counter)
    failure_samples: list[str] = field(default_factory=list)
    other_events: Counter[str] = field(default_factory=Counter)  # "level event"
    unparsed_lines: int = 0
    unparsed_samples: list[str] = field(default_factory=list)


def read_log(path: Path, t0: float, t1: float, scrapes: list[tuple[float, float]]) -> LogStats:
    """Check lines whose check *started* in [t0, t1) count for the window.

    A check is "due during a scrape" if its due time (start - lateness) falls while a scrape
    of the window was being answered (plus 50 ms).
    """
    stats = LogStats()
    with path.open("rb") as log:
        for raw in log:
            try:
                event: dict[str, Any] = json.loads(raw)
            except ValueError:
                stats.unparsed_lines += 1
                if len(stats.unparsed_samples) < 5:
                    stats.unparsed_samples.append(raw.decode(errors="replace").rstrip()[:300])
                continue
            if event.get("event") != "check":
                stats.other_events[f"{event.get('level', '?')} {event.get('event', '?')}"] += 1
                continue
            ok = bool(event.get("ok"))
            reason = str(event.get("reason"))
            stats.run_checks += 1
            stats.run_reasons[reason] += 1
            if not ok:
                stats.run_failed += 1
                if len(stats.failure_samples) < 5:
                    stats.failure_samples.append(
                        f"{event.get('target')}: {reason} {event.get('error', '')}"[:300]
                    )
            duration_s = float(event.get("duration_s", 0.0))
            lateness_s = float(event.get("lateness_s", 0.0))
            start = datetime.fromisoformat(event["timestamp"]).timestamp() - duration_s
            if not t0 <= start < t1:
                continue
            stats.window_checks += 1
            stats.window_reasons[reason] += 1
            stats.window_failed += not ok
            stats.lateness.append(lateness_s)
            stats.durations.append(duration_s)
            due = start - lateness_s
            during = any(a <= due <= b + 0.05 for a, b in scrapes)
            (stats.lateness_scrape if during else stats.lateness_quiet).append(lateness_s)
    for values in (stats.lateness, stats.lateness_scrape, stats.lateness_quiet, stats.durations):
        values.sort()
    return stats


# -- the run ------------------------------------------------------------------------------


def progress(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    log_path, err_path = tmp / "daemon.log", tmp / "daemon.stderr"
    daemon: subprocess.Popen[bytes] | None = None
    failed = True
    files: list[TextIO] = []
    try:
        if args.server == "nginx":
            server = start_nginx_server(args.server_workers, tmp, procs)
        else:
            server = start_aiohttp_server(args.server_workers, procs)
        progress(f"target server: {server.kind} x{args.server_workers} at {server.base_url}")
        rev = revision()
        config = tmp / "targets.yaml"
        write_config(config, server.base_url, args.targets, args.interval)

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
        ]
        t_start = time.monotonic()
        daemon = subprocess.Popen(
            command,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=daemon_env(args.max_concurrency),
            cwd=tmp,
            start_new_session=True,
        )
        procs.append(daemon)
        watched = [daemon, *server.procs]
        deadline = time.monotonic() + args.ready_timeout
        port = wait_startup(log_path, deadline, watched)
        wait_http_ok(f"http://{HOST}:{port}/readyz", deadline, watched)
        ready_s = time.monotonic() - t_start
        progress(f"daemon pid {daemon.pid} ready on port {port} after {ready_s:.1f} s")

        progress(f"warming up for one interval ({args.interval:g} s)")
        sleep_watching(args.interval, watched)

        # -- the window --
        snap0 = scrape(port)
        sleep_watching(SETTLE_S, watched)
        progress(
            f"measuring for {args.duration:g} s"
            + (f", scraping /metrics every {SCRAPE_EVERY_S:g} s" if args.scrape_during else "")
        )
        bench_cpu0 = sum(os.times()[:2])
        daemon_cpu0, server_cpu0 = cpu_seconds(daemon.pid), cpu_of(server.pids())
        t0, m0 = time.time(), time.monotonic()
        window_scrapes: list[Scrape] = []
        next_scrape = m0 + SCRAPE_EVERY_S
        end = m0 + args.duration
        while (now := time.monotonic()) < end:
            ensure_alive(watched)
            if args.scrape_during and now >= next_scrape:
                window_scrapes.append(scrape(port, PROMETHEUS_HEADERS))
                next_scrape += SCRAPE_EVERY_S
                continue
            wake = min(end, next_scrape) if args.scrape_during else end
            time.sleep(max(0.0, min(0.25, wake - now)))
        t1, m1 = time.time(), time.monotonic()
        daemon_cpu1, server_cpu1 = cpu_seconds(daemon.pid), cpu_of(server.pids())
        bench_cpu1 = sum(os.times()[:2])
        rss_end_kib = vm_kib(daemon.pid, "VmRSS")
        snap1 = scrape(port)
        window_s = m1 - m0

        # -- /metrics render timing, after the window --
        progress(f"timing {args.scrapes} scrapes of each kind")
        plain = [scrape(port) for _ in range(args.scrapes)]
        prom = [scrape(port, PROMETHEUS_HEADERS) for _ in range(args.scrapes)]
        ensure_alive(watched)
        peak_rss_kib = vm_kib(daemon.pid, "VmHWM")

        progress("stopping the daemon with SIGTERM")
        code, stop_s = stop_daemon(daemon, args.stop_timeout)
        stats = read_log(
            log_path, t0, t1, [(s.started, s.started + s.seconds) for s in window_scrapes]
        )
        failed = code != 0 or stats.window_checks == 0
        counters0, counters1 = parse_counters(snap0.body), parse_counters(snap1.body)
        snap_span_s = (snap1.started + snap1.seconds / 2) - (snap0.started + snap0.seconds / 2)
        delta = {k: counters1.get(k, 0.0) - counters0.get(k, 0.0) for k in counters1}
        daemon_cpu_s = daemon_cpu1 - daemon_cpu0
        return {
            "config": {
                "targets": args.targets,
                "interval_s": args.interval,
                "duration_s": args.duration,
                "scrape_during": args.scrape_during,
                "max_concurrency": args.max_concurrency,
                "server": f"{server.kind} x{args.server_workers}",
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "revision": rev,
            },
            "ready_s": ready_s,
            "window_s": window_s,
            "expected_checks_per_s": args.targets / args.interval,
            "checks_per_s_log": stats.window_checks / window_s,
            "checks_per_s_metrics": delta.get("checks", 0.0) / snap_span_s,
            "window_checks": stats.window_checks,
            "window_failed": stats.window_failed,
            "window_reasons": dict(stats.window_reasons),
            "skipped_checks_window": delta.get("monitor_checks_skipped_total", 0.0),
            "daemon_cpu_s": daemon_cpu_s,
            "daemon_cpu_pct": 100 * daemon_cpu_s / window_s,
            "daemon_cpu_s_per_1000_checks": (
                1000 * daemon_cpu_s / stats.window_checks if stats.window_checks else math.nan
            ),
            "daemon_rss_end_mib": rss_end_kib / 1024,
            "daemon_peak_rss_mib": peak_rss_kib / 1024,
            "lateness_s": _quantiles(stats.lateness),
            "lateness_due_during_scrape_s": _quantiles(stats.lateness_scrape),
            "lateness_otherwise_s": _quantiles(stats.lateness_quiet),
            "late_over_100ms": sum(v > 0.1 for v in stats.lateness),
            "late_over_1s": sum(v > 1.0 for v in stats.lateness),
            "check_duration_s": _quantiles(stats.durations),
            "scrape_text": _scrape_stats(plain),
            "scrape_prometheus": _scrape_stats(prom),
            "scrapes_during_window": {
                "count": len(window_scrapes),
                "max_s": max((s.seconds for s in window_scrapes), default=math.nan),
            },
            "server_cpu_pct": 100 * (server_cpu1 - server_cpu0) / window_s,
            "bench_cpu_pct": 100 * (bench_cpu1 - bench_cpu0) / window_s,
            "exit_code": code,
            "stop_s": stop_s,
            "run_checks": stats.run_checks,
            "run_failed": stats.run_failed,
            "run_reasons": dict(stats.run_reasons),
            "failure_samples": stats.failure_samples,
            "other_log_events": dict(stats.other_events),
            "unparsed_log_lines": stats.unparsed_lines,
            "unparsed_samples": stats.unparsed_samples,
            "daemon_stderr_tail": tail(err_path),
            "logs": str(tmp) if args.keep else None,
        }
    except BaseException:
        if daemon is not None:
            progress(f"failed; daemon stderr tail:\n{tail(err_path)}")
            progress(f"daemon stdout tail:\n{tail(log_path, 5)}")
        raise
    finally:
        if daemon is not None:
            kill_group(daemon)  # still running only if something went wrong
        servers = [proc for proc in procs if proc is not daemon and proc.poll() is None]
        for proc in servers:
            proc.terminate()
        for proc in servers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            kill_group(proc)
        for file in files:
            file.close()
        if args.keep or failed:
            progress(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _quantiles(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": values[-1] if values else math.nan,
    }


def _scrape_stats(scrapes: list[Scrape]) -> dict[str, float]:
    times = [s.seconds for s in scrapes]
    return {
        "min_s": min(times),
        "median_s": median(times),
        "wire_bytes": scrapes[-1].wire_bytes,
        "body_bytes": len(scrapes[-1].body),
    }


# -- output -------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _q(q: dict[str, float]) -> str:
    if not q["n"]:
        return "- (no checks)"
    return f"{_ms(q['p50'])} / {_ms(q['p99'])} / {_ms(q['max'])}   (n={q['n']:,})"


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def summary(r: dict[str, Any]) -> str:
    c = r["config"]
    text, prom = r["scrape_text"], r["scrape_prometheus"]
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(r["window_reasons"].items())) or "-"
    rows = [
        ("checks/s (log lines, window)", f"{r['checks_per_s_log']:.1f}"),
        ("checks/s expected (targets / interval)", f"{r['expected_checks_per_s']:.1f}"),
        ("checks/s (monitor_checks_total delta)", f"{r['checks_per_s_metrics']:.1f}"),
        ("checks in window: total / failed", f"{r['window_checks']:,} / {r['window_failed']:,}"),
        ("  by reason", reasons),
        ("skipped checks (window)", f"{r['skipped_checks_window']:g}"),
        ("daemon CPU, % of one core", f"{r['daemon_cpu_pct']:.1f} %"),
        ("daemon CPU s per 1,000 checks", f"{r['daemon_cpu_s_per_1000_checks']:.3f} s"),
        (
            "daemon RSS at window end / peak (VmHWM)",
            (f"{r['daemon_rss_end_mib']:.1f} / {r['daemon_peak_rss_mib']:.1f} MiB"),
        ),
        ("lateness p50 / p99 / max", _q(r["lateness_s"])),
        ("  checks due during a scrape", _q(r["lateness_due_during_scrape_s"])),
        ("  all other checks", _q(r["lateness_otherwise_s"])),
        ("checks late > 100 ms / > 1 s", f"{r['late_over_100ms']:,} / {r['late_over_1s']:,}"),
        ("check duration p50 / p99 / max", _q(r["check_duration_s"])),
        (
            "/metrics text: min / median, size",
            (f"{_ms(text['min_s'])} / {_ms(text['median_s'])}, {_mb(text['body_bytes'])}"),
        ),
        (
            "/metrics as Prometheus (OM + gzip)",
            (
                f"{_ms(prom['min_s'])} / {_ms(prom['median_s'])}, {_mb(prom['body_bytes'])}"
                f" ({_mb(prom['wire_bytes'])} gzipped)"
            ),
        ),
        (
            "scrapes during window: count, slowest",
            (f"{r['scrapes_during_window']['count']}, {_ms(r['scrapes_during_window']['max_s'])}"),
        ),
        ("target server CPU, % of one core", f"{r['server_cpu_pct']:.1f} %"),
        ("this script's CPU, % of one core", f"{r['bench_cpu_pct']:.1f} %"),
        ("daemon ready after", f"{r['ready_s']:.1f} s"),
        ("whole run: checks / failed", f"{r['run_checks']:,} / {r['run_failed']:,}"),
        (
            "other log events",
            ", ".join(f"{k} x{v}" for k, v in sorted(r["other_log_events"].items())) or "-",
        ),
        ("unparsed log lines", f"{r['unparsed_log_lines']}"),
        (
            "daemon exit code after SIGTERM",
            (
                f"{r['exit_code'] if r['exit_code'] is not None else 'did not exit'}"
                f" (in {r['stop_s']:.2f} s)"
            ),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    head = (
        f"uptime-monitor bench: {c['targets']:,} targets, interval {c['interval_s']:g} s, "
        f"window {r['window_s']:.1f} s, scrapes during window: "
        f"{'every 5 s' if c['scrape_during'] else 'off'}\n"
        f"{c['cpus']} CPUs, Python {c['python']}, target server {c['server']}, "
        f"max_concurrency {c['max_concurrency'] or 'default'}, revision {c['revision']}"
    )
    lines = [head, "-" * (width + 40)]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    for sample in r["failure_samples"]:
        lines.append(f"failed check: {sample}")
    for sample in r["unparsed_samples"]:
        lines.append(f"unparsed: {sample}")
    if r["daemon_stderr_tail"]:
        lines.append("daemon stderr (tail):")
        lines += [f"  {line}" for line in r["daemon_stderr_tail"].splitlines()]
    if r["logs"]:
        lines.append(f"logs: {r['logs']}")
    return "\n".join(lines)


# -- the command line ---------------------------------------------------------------------


def _no_nan(value: Any) -> Any:
    """NaN is not JSON: say null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--targets", type=int, default=2000, help="number of targets (2000)")
    p.add_argument("--interval", type=float, default=10.0, help="check interval, s (10)")
    p.add_argument("--duration", type=float, default=40.0, help="measured window, s (40)")
    p.add_argument(
        "--scrape-during",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="scrape /metrics every 5 s during the window, as Prometheus would (on)",
    )
    p.add_argument("--scrapes", type=int, default=3, help="timed scrapes of each kind (3)")
    p.add_argument("--max-concurrency", type=int, help="MONITOR_MAX_CONCURRENCY (daemon default)")
    p.add_argument(
        "--server",
        choices=["aiohttp", "nginx"],
        default="aiohttp",
        help="target server (aiohttp; nginx must be installed)",
    )
    p.add_argument("--server-workers", type=int, default=1, help="target server processes (1)")
    p.add_argument(
        "--ready-timeout", type=float, default=120.0, help="wait for /readyz at most, s (120)"
    )
    p.add_argument(
        "--stop-timeout", type=float, default=30.0, help="wait for exit after SIGTERM, s (30)"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON instead")
    p.add_argument("--keep", action="store_true", help="keep the temporary dir with the logs")
    p.add_argument("--serve-fd", type=int, help=argparse.SUPPRESS)  # target server worker mode
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.serve_fd is not None:
        serve_fd(args.serve_fd)
        return 0
    if args.targets < 1 or args.interval <= 0 or args.duration <= 0 or args.scrapes < 1:
        print("bench: --targets, --interval, --duration and --scrapes must be > 0", file=sys.stderr)
        return 2

    def on_term(_sig: int, _frame: object) -> None:
        raise SystemExit(143)  # runs the cleanup in run_bench's finally

    signal.signal(signal.SIGTERM, on_term)
    try:
        result = run_bench(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(_no_nan(result), indent=2))
    else:
        print(summary(result))
    return 0 if result["exit_code"] == 0 and result["window_checks"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
