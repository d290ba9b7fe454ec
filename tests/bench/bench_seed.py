"""The seed article's job, side by side: 1,000 local URLs that answer 200 after 50 ms.

    python tests/bench/bench_seed.py                     # all four, ~1.5 min (sequential ~55 s)
    python tests/bench/bench_seed.py --skip-sequential   # ~35 s
    python tests/bench/bench_seed.py --urls 200 --delay-ms 20 --check-runs 9

Each way runs as a whole process with this interpreter, so start-up counts as it does for a
user (see tests/bench/README.md):

1. ``sequential``: a loop of ``requests.get(url)``;
2. ``httpx_gather``: asyncio, one ``httpx.AsyncClient`` per URL, ``asyncio.gather``;
3. ``threads``: ``ThreadPoolExecutor()`` (default workers), ``requests.get``, ``as_completed``;
4. ``check``: ``python -m monitor check --format json`` on a config of the same URLs, default
   settings (every ``MONITOR_*`` variable of the caller removed; ``--max-concurrency N`` passes
   that flag to it).

The first three are the article's scripts, written to a temporary directory. The target server
is this script in a hidden ``--serve-fd`` mode (a low-level aiohttp server, one process per
``--server-workers``, sharing one listening socket with a backlog of 4,096). It prints wall
times and the ratio of ``check`` to the best of the other three; it asserts nothing about time.
Exit status: 0 if every run finished in time with every answer 200, else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BACKLOG = 4096  # >= the 1,000 connections the concurrent clients open at once

SEQUENTIAL = """
import sys
import time

import requests

urls = open(sys.argv[1]).read().split()
tm1 = time.perf_counter()
for url in urls:
    resp = requests.get(url)
    print(resp.status_code)
tm2 = time.perf_counter()
print(f"Total time elapsed: {tm2 - tm1:0.2f} seconds")
"""

HTTPX_GATHER = """
import asyncio
import sys
import time

import httpx

urls = open(sys.argv[1]).read().split()


async def get_async(url):
    async with httpx.AsyncClient() as client:
        return await client.get(url)


async def launch():
    resps = await asyncio.gather(*map(get_async, urls))
    for resp in resps:
        print(resp.status_code)


tm1 = time.perf_counter()
asyncio.run(launch())
tm2 = time.perf_counter()
print(f"Total time elapsed: {tm2 - tm1:0.2f} seconds")
"""

THREADS = """
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import requests

urls = open(sys.argv[1]).read().split()


def get_status(url):
    resp = requests.get(url=url)
    return resp.status_code


tm1 = time.perf_counter()
with ThreadPoolExecutor() as executor:
    futures = []
    for url in urls:
        futures.append(executor.submit(get_status, url=url))
    for future in as_completed(futures):
        print(future.result())
tm2 = time.perf_counter()
print(f"Total time elapsed: {tm2 - tm1:0.2f} seconds")
"""

SCRIPTS = {"sequential": SEQUENTIAL, "httpx_gather": HTTPX_GATHER, "threads": THREADS}


class BenchError(Exception):
    """The benchmark could not run (the server did not start, a tool is missing, ...)."""


# -- the target server --------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: 1,000 sockets at once need more than 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def serve_fd(fd: int, delay_s: float) -> None:
    """Server mode: every path answers ``200 ok`` after ``delay_s``, on an inherited socket."""
    import asyncio

    from aiohttp import web

    raise_fd_limit()

    async def handler(_request: web.BaseRequest) -> web.Response:
        await asyncio.sleep(delay_s)
        return web.Response(text="ok\n")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sock = socket.socket(fileno=fd)
        server = web.Server(handler, access_log=None)
        listener = await loop.create_server(server, sock=sock, backlog=BACKLOG)
        await stop.wait()
        listener.close()
        await server.shutdown(1.0)

    asyncio.run(main())


def start_server(workers: int, delay_s: float) -> tuple[str, list[subprocess.Popen[bytes]]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        sock.listen(BACKLOG)
        base = f"http://{HOST}:{sock.getsockname()[1]}"
        for _ in range(workers):
            args = ["--serve-fd", str(sock.fileno()), "--delay-ms", str(delay_s * 1000)]
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), *args],
                    pass_fds=[sock.fileno()],
                    start_new_session=True,
                    stdin=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 30
        while True:  # the socket listens already: wait until a worker answers
            try:
                with urllib.request.urlopen(f"{base}/ready", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                stop_server(procs)
                msg = "the target server did not start"
                raise BenchError(msg)
            time.sleep(0.05)
    finally:
        sock.close()
    return base, procs


def stop_server(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


# -- the runs -----------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    wall_s: list[float] = field(default_factory=list)
    inner_s: list[float] = field(default_factory=list)  # as the process itself reports it
    server_cpu_s: list[float] = field(default_factory=list)
    answers: str = ""  # "1000/1000 200" or what went wrong
    failed: bool = False


def child_env() -> dict[str, str]:
    """The caller's environment without MONITOR_* (default settings) or proxies."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("MONITOR_") and not k.lower().endswith("_proxy")
    }


def run_once(
    run: Run, argv: list[str], cwd: Path, timeout_s: float, server: list[int], expected: int
) -> None:
    cpu0 = cpu_seconds(server)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        run.wall_s.append(timeout_s)
        run.answers, run.failed = f"stopped after {timeout_s:g} s", True
        return
    run.wall_s.append(time.perf_counter() - t0)
    run.server_cpu_s.append(cpu_seconds(server) - cpu0)
    if run.name == "check":
        import json

        try:
            report = json.loads(proc.stdout)
        except ValueError:
            run.answers, run.failed = f"exit {proc.returncode}: {proc.stderr[-300:]}", True
            return
        run.inner_s.append(report["elapsed_s"])
        codes = [str(r["status"]) for r in report["results"]]
    else:
        lines = proc.stdout.split("\n")
        total = [ln for ln in lines if ln.startswith("Total time elapsed:")]
        if proc.returncode != 0 or not total:
            run.answers, run.failed = f"exit {proc.returncode}: {proc.stderr[-300:]}", True
            return
        run.inner_s.append(float(total[0].split()[3]))
        codes = [ln for ln in lines if ln.isdigit()]
    ok = codes.count("200")
    run.answers = f"{ok}/{expected} 200"
    if ok != expected or len(codes) != expected:
        run.failed = True


def bench(args: argparse.Namespace) -> list[Run]:
    for module in ("requests", "httpx"):
        try:
            __import__(module)
        except ImportError:
            msg = f"{module} is missing: pip install -e '.[bench]'"
            raise BenchError(msg) from None
    limit = raise_fd_limit()  # inherited by the clients run below
    if limit < args.urls + 100:
        msg = f"open-file limit {limit} is too low for {args.urls} connections at once"
        raise BenchError(msg)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-seed-") as tmp:
        work = Path(tmp)
        try:
            base, procs = start_server(args.server_workers, args.delay_ms / 1000)
            server = [p.pid for p in procs]
            urls = [f"{base}/t/{i}" for i in range(args.urls)]
            (work / "urls.txt").write_text("\n".join(urls) + "\n")
            targets = "".join(f'  - {{name: t{i}, url: "{u}"}}\n' for i, u in enumerate(urls))
            (work / "targets.yaml").write_text("targets:\n" + targets)
            for name, script in SCRIPTS.items():
                (work / f"{name}.py").write_text(script.lstrip())

            runs: list[Run] = []
            order = [
                n
                for n in SCRIPTS
                if not args.only_check and not (n == "sequential" and args.skip_sequential)
            ]
            for name in [*order, "check"]:
                run = Run(name)
                runs.append(run)
                if name == "check":
                    argv = [sys.executable, "-m", "monitor", "check", "--format", "json"]
                    argv += ["--config", str(work / "targets.yaml")]
                    if args.max_concurrency is not None:
                        argv += ["--max-concurrency", str(args.max_concurrency)]
                    times = args.check_runs
                else:
                    argv = [sys.executable, str(work / f"{name}.py"), str(work / "urls.txt")]
                    times = 1 if name == "sequential" else args.runs
                timeout_s = args.sequential_timeout if name == "sequential" else args.timeout
                for i in range(times):
                    print(f"bench: {name} {i + 1}/{times} ...", file=sys.stderr, flush=True)
                    run_once(run, argv, work, timeout_s, server, args.urls)
                    if run.failed:
                        break
        finally:
            stop_server(procs)
    return runs


def table(runs: list[Run], args: argparse.Namespace) -> str:
    header = ("way", "runs", "wall s (median)", "wall min", "in-process s", "server CPU s")
    rows = [(*header, "answers")]
    for run in runs:
        inner = statistics.median(run.inner_s) if run.inner_s else float("nan")
        cpu = statistics.median(run.server_cpu_s) if run.server_cpu_s else float("nan")
        rows.append(
            (
                run.name,
                str(len(run.wall_s)),
                f"{statistics.median(run.wall_s):.3f}",
                f"{min(run.wall_s):.3f}",
                f"{inner:.3f}",
                f"{cpu:.2f}",
                run.answers,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        f"{args.urls} URLs answering 200 after {args.delay_ms:g} ms, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {args.server_workers} server process(es)",
        *("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows),
    ]
    others = [r for r in runs if r.name != "check" and not r.failed]
    check = next(r for r in runs if r.name == "check")
    if others and not check.failed:
        best = min(others, key=lambda r: statistics.median(r.wall_s))
        ratio = statistics.median(best.wall_s) / statistics.median(check.wall_s)
        lines.append(f"check is {ratio:.1f}x faster than the best of the others ({best.name})")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--urls", type=int, default=1000, help="number of URLs (1000)")
    p.add_argument("--delay-ms", type=float, default=50.0, help="server delay per answer (50)")
    p.add_argument("--skip-sequential", action="store_true", help="skip the >50 s sequential run")
    p.add_argument("--sequential-timeout", type=float, default=300.0, help="stop it after, s (300)")
    p.add_argument("--timeout", type=float, default=180.0, help="stop any other run after, s")
    p.add_argument("--runs", type=int, default=1, help="runs of httpx_gather and threads (1)")
    p.add_argument("--only-check", action="store_true", help="run check alone (no ratio)")
    p.add_argument("--check-runs", type=int, default=5, help="runs of check, median shown (5)")
    p.add_argument(
        "--max-concurrency", type=int, help="pass --max-concurrency to check (its default)"
    )
    p.add_argument("--server-workers", type=int, default=1, help="target server processes (1)")
    p.add_argument("--serve-fd", type=int, help=argparse.SUPPRESS)  # target server mode
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.serve_fd is not None:
        serve_fd(args.serve_fd, args.delay_ms / 1000)
        return 0
    if min(args.urls, args.runs, args.check_runs, args.server_workers) < 1:
        print("bench: --urls, --runs, --check-runs, --server-workers must be > 0", file=sys.stderr)
        return 2

    def on_term(_sig: int, _frame: object) -> None:
        raise SystemExit(143)  # stops the server in bench()'s finally

    signal.signal(signal.SIGTERM, on_term)
    try:
        runs = bench(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(table(runs, args))
    return 1 if any(r.failed for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
