"""CPU per check, side by side: the daemon, blackbox_exporter driven by Prometheus, a bare loop.

    python tests/bench/bench_cpu.py                      # 2,000 targets every 10 s, ~4 min
    python tests/bench/bench_cpu.py --rounds 3 --only daemon,bare --baseline HEAD~1

One nginx (Debian's, with its own minimal config in a temporary directory, on 127.0.0.1) serves
``200 ok`` to every target. Then, one after another and never at the same time, each subject
checks the same ``--targets`` URLs every ``--interval`` seconds over a new TCP connection each
time, for a warm-up and a measured window:

- ``daemon``: ``python -m monitor run`` as bench_daemon.py starts it (default settings,
  ``reuse_connections`` false); checks counted from its JSON ``check`` lines whose timestamp
  (the check's end) falls in the window; CPU of its process;
- ``blackbox``: ``prometheus-blackbox-exporter`` (``http_2xx``) scraped through ``/probe`` by a
  real ``prometheus`` with the usual relabelling and a file_sd target list; probes counted from
  Prometheus's ``up`` samples of the window (one per scrape of ``/probe``); CPU of the exporter
  only (Prometheus's CPU is shown apart);
- ``bare``: this script in a hidden mode, one aiohttp ClientSession (force_close connector,
  ``limit=0``) issuing the same GETs spread over each interval and reading the bodies; it
  counts its own requests.

``--baseline REV`` adds a subject ``daemon@REV``: the ``monitor`` package of git revision REV
(``git archive``, nothing in the repository is changed) run the same way, for before/after
figures under the same conditions.

Prints one table (or ``--json``): checks/s, CPU % of one core, CPU µs per check, and the
ratios of each daemon to blackbox_exporter and to the bare loop. It asserts nothing about
timing. Exit status: 0 if every subject completed checks in its window, 1 otherwise (a tool
missing, a process dying, a wait timing out). Only 127.0.0.1 is used; every process it starts
is in its own process group and is killed at the end, also on error or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_daemon as bd

HOST = bd.HOST
REPO = bd.REPO
SUBJECTS = ("daemon", "blackbox", "bare")
APT_PACKAGES = {
    "nginx": "nginx",
    "prometheus": "prometheus",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
}
progress = bd.progress
BenchError = bd.BenchError
Procs = list[subprocess.Popen[bytes]]


@dataclass
class Measured:
    """One subject's window."""

    subject: str
    round: int
    window_s: float
    checks: int
    failed: int
    cpu_s: float  # the measured process only, user + system
    sys_cpu_s: float  # of which in the kernel (connect, send, close, epoll: mostly the network)
    server_cpu_s: float  # nginx, master and workers
    helper_cpu_s: float  # Prometheus in the blackbox round, else 0
    machine_cpu_s: float  # every process on the machine (from /proc/stat)
    counted: str  # where the checks were counted
    cross_check: str = ""

    @property
    def checks_per_s(self) -> float:
        return self.checks / self.window_s

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_s / self.window_s

    @property
    def us_per_check(self) -> float:
        return 1e6 * self.cpu_s / self.checks if self.checks else math.nan


def find_tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")


def user_sys_s(pid: int) -> tuple[float, float]:
    """utime and stime of a process (all its threads), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / bd.CLK_TCK, int(fields[12]) / bd.CLK_TCK


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine, all cores (/proc/stat: all but idle, iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / bd.CLK_TCK


class Window:
    """CPU readings at the start and the end of a measured window."""

    def __init__(self, pid: int, server: bd.TargetServer, helpers: list[int]) -> None:
        self.pid, self.server, self.helpers = pid, server, helpers
        self.t0 = time.time()
        self.m0 = time.monotonic()
        self.user0, self.sys0 = user_sys_s(pid)
        self.server0, self.helper0 = bd.cpu_of(server.pids()), bd.cpu_of(helpers)
        self.machine0 = machine_cpu_s()
        self.t1 = self.m1 = self.user1 = self.sys1 = 0.0
        self.server1 = self.helper1 = self.machine1 = 0.0

    def close(self) -> None:
        self.t1, self.m1 = time.time(), time.monotonic()
        self.user1, self.sys1 = user_sys_s(self.pid)
        self.server1, self.helper1 = bd.cpu_of(self.server.pids()), bd.cpu_of(self.helpers)
        self.machine1 = machine_cpu_s()

    def measured(
        self, subject: str, rnd: int, checks: int, failed: int, counted: str, cross: str = ""
    ) -> Measured:
        return Measured(
            subject=subject,
            round=rnd,
            window_s=self.m1 - self.m0,
            checks=checks,
            failed=failed,
            cpu_s=(self.user1 + self.sys1) - (self.user0 + self.sys0),
            sys_cpu_s=self.sys1 - self.sys0,
            server_cpu_s=self.server1 - self.server0,
            helper_cpu_s=self.helper1 - self.helper0,
            machine_cpu_s=self.machine1 - self.machine0,
            counted=counted,
            cross_check=cross,
        )


@contextlib.contextmanager
def started(procs: Procs) -> Iterator[Procs]:
    """Processes appended to the list are stopped on the way out, whatever happened."""
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            bd.kill_group(proc)


def spawn(command: list[str], log: Path, procs: Procs, **kwargs: Any) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            stdout=kwargs.pop("stdout", out),
            stderr=out,
            stdin=kwargs.pop("stdin", subprocess.DEVNULL),
            start_new_session=True,
            **kwargs,
        )
    procs.append(proc)
    return proc


def target_urls(base_url: str, n: int) -> list[str]:
    return [f"{base_url}/t/{i}" for i in range(n)]


# -- the daemon ---------------------------------------------------------------------------


def extract_package(rev: str, dest: Path) -> Path:
    """``monitor/`` as of git revision ``rev``, extracted into ``dest`` (for PYTHONPATH)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", rev, "monitor"],
            capture_output=True,
            timeout=60,
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        msg = f"--baseline {rev}: git archive failed: {exc.stderr.decode(errors='replace')}"
        raise BenchError(msg) from None
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        # Extraction filters came with 3.11.4: Debian's 3.11.2 has none. Without one the
        # archive is still safe to unpack: git archive of this repository wrote it.
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)
    return dest


def count_check_lines(path: Path, t0: float, t1: float) -> tuple[int, int, int]:
    """(checks, failed, unparsed lines) of ``check`` lines whose timestamp is in [t0, t1)."""
    checks = failed = unparsed = 0
    with path.open("rb") as log:
        for raw in log:
            if b'"check"' not in raw:
                continue
            try:
                event = json.loads(raw)
            except ValueError:
                unparsed += 1
                continue
            if event.get("event") != "check":
                continue
            if t0 <= datetime.fromisoformat(event["timestamp"]).timestamp() < t1:
                checks += 1
                failed += not event.get("ok")
    return checks, failed, unparsed


Variant = tuple[str, Path | None]  # label, and the package directory of a --baseline


def run_daemons(
    args: argparse.Namespace, tmp: Path, server: bd.TargetServer, rnd: int, variants: list[Variant]
) -> list[Measured]:
    """Run these daemons at the same time (one, unless --paired) and measure one window."""
    with started([]) as procs:
        daemons: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        for label, package_dir in variants:
            work = tmp / f"{label.replace('@', '-')}-{rnd}"
            work.mkdir()
            config = work / "targets.yaml"
            bd.write_config(config, server.base_url, args.targets, args.interval)
            env = bd.daemon_env(None)
            if package_dir is not None:
                env["PYTHONPATH"] = os.pathsep.join([str(package_dir), env["PYTHONPATH"]])
            command = [args.python, "-m", "monitor", "run", "--config", str(config)]
            command += ["--listen", f"{HOST}:0", "--log-format", "json"]
            log, err_log = work / "daemon.log", work / "daemon.stderr"
            with log.open("wb") as out, err_log.open("wb") as err:
                daemon = subprocess.Popen(
                    command,
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=work,
                    start_new_session=True,
                )
            procs.append(daemon)
            daemons.append((label, work, daemon))
        watched = [*procs, *server.procs]
        deadline = time.monotonic() + args.ready_timeout
        ports = []
        for _label, work, _daemon in daemons:
            ports.append(bd.wait_startup(work / "daemon.log", deadline, watched))
            bd.wait_http_ok(f"http://{HOST}:{ports[-1]}/readyz", deadline, watched)
        names = ", ".join(f"{label} (pid {daemon.pid})" for label, _, daemon in daemons)
        progress(f"{names} ready; warming up {args.warmup:g} s")
        bd.sleep_watching(args.warmup, watched)
        windows = [Window(daemon.pid, server, []) for _, _, daemon in daemons]
        progress(f"{', '.join(v[0] for v in variants)}: measuring {args.duration:g} s")
        bd.sleep_watching(args.duration, watched)
        for window in windows:
            window.close()
        totals = []
        for (label, work, daemon), port in zip(daemons, ports, strict=True):
            with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=60) as response:
                totals.append(bd.parse_counters(response.read()).get("checks", 0.0))
            code, _ = bd.stop_daemon(daemon, 30)
            if code != 0:
                msg = f"{label} exited with {code} after SIGTERM: {bd.tail(work / 'daemon.stderr')}"
                raise BenchError(msg)
    results = []
    for (label, work, _), window, total in zip(daemons, windows, totals, strict=True):
        checks, failed, unparsed = count_check_lines(work / "daemon.log", window.t0, window.t1)
        if unparsed:
            progress(f"{label}: {unparsed} unparsed check lines")
        together = f"; measured together with {len(daemons) - 1} other" if len(daemons) > 1 else ""
        results.append(
            window.measured(
                label,
                rnd,
                checks,
                failed,
                "check lines ending in the window",
                f"monitor_checks_total {total:,.0f} over the whole run{together}",
            )
        )
    return results


# -- blackbox_exporter + Prometheus -------------------------------------------------------


def prometheus_config(exporter: str, targets_file: Path, interval_s: float) -> str:
    timeout_s = min(5.0, interval_s)
    return f"""global:
  scrape_interval: {interval_s:g}s
  scrape_timeout: {timeout_s:g}s
  evaluation_interval: 1m
scrape_configs:
  - job_name: blackbox
    metrics_path: /probe
    params:
      module: [http_2xx]
    file_sd_configs:
      - files: ['{targets_file}']
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: {exporter}
"""


def prom_query(port: int, query: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": query}
    if at is not None:
        params["time"] = f"{at:.3f}"
    url = f"http://{HOST}:{port}/api/v1/query?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.load(response)
    if body.get("status") != "success":
        msg = f"Prometheus query {query!r} failed: {body}"
        raise BenchError(msg)
    return list(body["data"]["result"])


def prom_scalar(port: int, query: str, at: float | None = None) -> float:
    result = prom_query(port, query, at)
    return float(result[0]["value"][1]) if result else 0.0


def exporter_dials(port: int) -> float:
    """The exporter's own count of connections its HTTP prober opened."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=30) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(
                'net_conntrack_dialer_conn_established_total{dialer_name="http_probe"}'
            ):
                return float(line.rpartition(" ")[2])
    return math.nan


def run_blackbox(
    args: argparse.Namespace, tmp: Path, server: bd.TargetServer, rnd: int
) -> Measured:
    work = tmp / f"blackbox-{rnd}"
    work.mkdir()
    exporter_bin, prometheus_bin = (
        find_tool("prometheus-blackbox-exporter"),
        find_tool("prometheus"),
    )
    assert exporter_bin is not None and prometheus_bin is not None  # checked in main()
    (work / "blackbox.yml").write_text("modules:\n  http_2xx:\n    prober: http\n")
    targets_file = work / "targets.json"
    targets_file.write_text(json.dumps([{"targets": target_urls(server.base_url, args.targets)}]))
    exporter_port, prom_port = bd.free_port(), bd.free_port()
    exporter_addr = f"{HOST}:{exporter_port}"
    (work / "prometheus.yml").write_text(
        prometheus_config(exporter_addr, targets_file, args.interval)
    )
    with started([]) as procs:
        exporter = spawn(
            [
                exporter_bin,
                f"--config.file={work / 'blackbox.yml'}",
                f"--web.listen-address={exporter_addr}",
            ],
            work / "exporter.log",
            procs,
            cwd=work,
        )
        prometheus = spawn(
            [
                prometheus_bin,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address={HOST}:{prom_port}",
                f"--web.console.templates={work}",
                f"--web.console.libraries={work}",
            ],
            work / "prometheus.log",
            procs,
            cwd=work,
        )
        watched = [exporter, prometheus, *server.procs]
        deadline = time.monotonic() + args.ready_timeout
        bd.wait_http_ok(f"http://{exporter_addr}/metrics", deadline, watched)
        bd.wait_http_ok(f"http://{HOST}:{prom_port}/-/ready", deadline, watched)
        # Ready once every target has been scraped at least once (within one interval).
        while (scraped := prom_scalar(prom_port, 'count(up{job="blackbox"})')) < args.targets:
            if time.monotonic() > deadline:
                msg = f"Prometheus scraped only {scraped:g} of {args.targets} targets in time"
                raise BenchError(msg)
            bd.sleep_watching(1.0, watched)
        progress(
            f"blackbox: exporter pid {exporter.pid}, Prometheus pid {prometheus.pid} ready;"
            f" warming up {args.warmup:g} s"
        )
        bd.sleep_watching(args.warmup, watched)
        dials0 = exporter_dials(exporter_port)
        window = Window(exporter.pid, server, [prometheus.pid])
        progress(f"blackbox: measuring {args.duration:g} s")
        bd.sleep_watching(args.duration, watched)
        window.close()
        dials1 = exporter_dials(exporter_port)
        bd.sleep_watching(2.0, watched)  # let the window's last scrapes be stored
        # Sample timestamps are scrape starts: a range ending at t1 covers (t1 - window, t1].
        span = f"{round((window.t1 - window.t0) * 1000)}ms"
        at = window.t1
        probes = prom_scalar(prom_port, f'sum(count_over_time(up{{job="blackbox"}}[{span}]))', at)
        ok = prom_scalar(
            prom_port, f'sum(sum_over_time(probe_success{{job="blackbox"}}[{span}]))', at
        )
    return window.measured(
        "blackbox",
        rnd,
        int(probes),
        int(probes - ok),
        "Prometheus up samples in the window (scrapes of /probe); failed: probe_success 0",
        f"exporter's http_probe connections in the window {dials1 - dials0:,.0f}",
    )


# -- the bare aiohttp loop ----------------------------------------------------------------


def bare_loop(base_url: str, n: int, interval_s: float, use_uvloop: bool) -> None:
    """Hidden mode (``--bare``): the requests alone; answers each stdin line with its counts."""
    import aiohttp

    urls = target_urls(base_url, n)
    counts = [0, 0]  # done, failed
    tasks: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, url: str) -> None:
        ok = False
        try:
            async with session.get(url) as response:
                await response.read()
                ok = response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        counts[0] += 1
        counts[1] += not ok

    def answer() -> None:
        line = sys.stdin.readline()
        if not line:
            stop.set()
            return
        sys.stdout.write(f"{counts[0]} {counts[1]}\n")
        sys.stdout.flush()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_reader(sys.stdin.fileno(), answer)
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        timeout = aiohttp.ClientTimeout(total=min(5.0, interval_s))
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            step_s, start = interval_s / n, time.monotonic()
            i = 0
            while not stop.is_set():
                delay = start + i * step_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(session, urls[i % n]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            for task in list(tasks):
                task.cancel()

    stop = asyncio.Event()
    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def run_bare(args: argparse.Namespace, tmp: Path, server: bd.TargetServer, rnd: int) -> Measured:
    label = "bare" if args.bare_loop == "asyncio" else f"bare ({args.bare_loop})"
    command = [args.python, str(Path(__file__).resolve()), "--bare", server.base_url]
    command += ["--targets", str(args.targets), "--interval", str(args.interval)]
    command += ["--bare-loop", args.bare_loop]
    with started([]) as procs:
        proc = spawn(
            command,
            tmp / f"bare-{rnd}.stderr",
            procs,
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
        )
        watched = [proc, *server.procs]

        def counts() -> tuple[int, int]:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"?\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], 10)
            line = proc.stdout.readline() if ready else b""
            if not line:
                bd.ensure_alive(watched)
                msg = "the bare loop did not answer"
                raise BenchError(msg)
            done, failed = line.split()
            return int(done), int(failed)

        progress(f"{label}: pid {proc.pid}; warming up {args.warmup:g} s")
        bd.sleep_watching(args.warmup, watched)
        done0, failed0 = counts()
        window = Window(proc.pid, server, [])
        progress(f"{label}: measuring {args.duration:g} s")
        bd.sleep_watching(args.duration, watched)
        window.close()
        done1, failed1 = counts()
    return window.measured(
        label, rnd, done1 - done0, failed1 - failed0, "its own count of finished requests"
    )


# -- the run ------------------------------------------------------------------------------


def run_all(args: argparse.Namespace, subjects: list[str]) -> list[Measured]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    results: list[Measured] = []
    failed = True
    try:
        packages = {
            rev: extract_package(rev, tmp / f"rev-{i}") for i, rev in enumerate(args.baseline)
        }
        with started([]) as procs:
            server = bd.start_nginx_server(args.nginx_workers, tmp, procs)
            progress(f"nginx x{args.nginx_workers} at {server.base_url}")
            variants: list[Variant] = [(f"daemon@{rev}", pkg) for rev, pkg in packages.items()]
            variants.append(("daemon", None))
            groups = [variants] if args.paired else [[v] for v in variants]
            runners: list[Callable[[int], list[Measured]]] = []
            for subject in subjects:
                if subject == "daemon":
                    runners += [
                        lambda r, group=group: run_daemons(args, tmp, server, r, group)
                        for group in groups
                    ]
                elif subject == "blackbox":
                    runners.append(lambda r: [run_blackbox(args, tmp, server, r)])
                else:
                    runners.append(lambda r: [run_bare(args, tmp, server, r)])
            for rnd in range(1, args.rounds + 1):
                for runner in runners:
                    for result in runner(rnd):
                        progress(
                            f"  {result.subject}: {result.checks_per_s:.1f} checks/s,"
                            f" {result.cpu_pct:.1f} % CPU, {result.us_per_check:.0f} µs/check"
                        )
                        results.append(result)
        failed = any(r.checks == 0 for r in results)
        return results
    finally:
        if args.keep or failed:
            progress(f"files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def ratios(results: list[Measured]) -> list[tuple[str, float]]:
    """Each daemon's µs per check over blackbox's, bare's and (daemon) each baseline's."""
    out: list[tuple[str, float]] = []
    for rnd in sorted({r.round for r in results}):
        by = {r.subject: r for r in results if r.round == rnd}
        others = [s for s in by if s == "blackbox" or s.startswith("bare")]
        pairs = [(d, o) for d in by if d.startswith("daemon") for o in others]
        if "daemon" in by:
            pairs += [("daemon", b) for b in by if b.startswith("daemon@")]
        for daemon, other in pairs:
            out.append((f"{daemon} / {other}", by[daemon].us_per_check / by[other].us_per_check))
    return out


def python_version(python: str) -> str:
    """``Python 3.11.2 (/usr/bin/python3.11)``: the daemon's interpreter, as run."""
    code = "import platform, sys; print(platform.python_version(), sys.base_prefix)"
    try:
        out = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return f"Python ? ({python})"
    return f"Python {out[0]} ({out[1]})" if len(out) == 2 else f"Python ? ({python})"


def summary(results: list[Measured], args: argparse.Namespace) -> str:
    head = (
        f"CPU per check: {args.targets:,} targets every {args.interval:g} s, new connection"
        f" per check, nginx x{args.nginx_workers}; warm-up {args.warmup:g} s, window"
        f" {args.duration:g} s; {os.cpu_count()} CPUs, {python_version(args.python)},"
        f" revision {bd.revision()}"
    )
    cols = [
        "subject",
        "round",
        "checks/s",
        "failed",
        "CPU %",
        "sys %",
        "µs/check",
        "nginx %",
        "helper %",
        "machine %",
    ]
    rows = [
        [
            r.subject,
            str(r.round),
            f"{r.checks_per_s:.1f}",
            f"{r.failed:,}",
            f"{r.cpu_pct:.1f}",
            f"{100 * r.sys_cpu_s / r.window_s:.1f}",
            f"{r.us_per_check:.0f}",
            f"{100 * r.server_cpu_s / r.window_s:.1f}",
            f"{100 * r.helper_cpu_s / r.window_s:.1f}" if r.helper_cpu_s else "-",
            f"{100 * r.machine_cpu_s / r.window_s:.1f}",
        ]
        for r in results
    ]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    lines = [head, ""]
    lines.append(
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(cols, widths, strict=True))
        )
    )
    for row in rows:
        lines.append(
            "  ".join(
                v.rjust(w) if i else v.ljust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    pairs = ratios(results)
    if pairs:
        lines.append("")
        names = sorted({name for name, _ in pairs}, key=[n for n, _ in pairs].index)
        for name in names:
            values = [v for n, v in pairs if n == name]
            each = ", ".join(f"{v:.2f}" for v in values)
            rounds = f"   (median of rounds: {each})" if len(values) > 1 else ""
            lines.append(f"ratio {name}, µs per check: {statistics.median(values):.2f}{rounds}")
    lines.append("")
    lines += [
        "CPU % is of one core over the window (sys %: the part in the kernel: connect, send,",
        "close, epoll); µs/check = that CPU / checks in the window; nginx % = the target server;",
        "helper % = Prometheus (not counted for blackbox); machine % = every process on the",
        "machine, other people's work included.",
    ]
    seen: dict[str, str] = {}
    for r in results:
        seen.setdefault(r.subject, f"{r.counted}" + (f"; {r.cross_check}" if r.cross_check else ""))
    lines += [f"{subject}: checks = {how}" for subject, how in seen.items()]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--targets", type=int, default=2000, help="number of targets (2000)")
    p.add_argument("--interval", type=float, default=10.0, help="check interval, s (10)")
    p.add_argument("--warmup", type=float, default=10.0, help="warm-up after ready, s (10)")
    p.add_argument("--duration", type=float, default=40.0, help="measured window, s (40)")
    p.add_argument("--rounds", type=int, default=1, help="run every subject this often (1)")
    p.add_argument(
        "--only",
        default=",".join(SUBJECTS),
        help=f"comma-separated subjects, in this order ({','.join(SUBJECTS)})",
    )
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="REV",
        help="also run the daemon of git revision REV (repeatable)",
    )
    p.add_argument(
        "--paired",
        action="store_true",
        help="run the daemon and its --baseline daemons at the same time, measured over the"
        " same window: a before/after comparison that the machine's noise hits equally",
    )
    p.add_argument(
        "--bare-loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop of the bare aiohttp loop (asyncio)",
    )
    p.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the daemon and the bare loop, with the project's dependencies"
        " installed (this one)",
    )
    p.add_argument("--nginx-workers", type=int, default=2, help="nginx worker processes (2)")
    p.add_argument("--ready-timeout", type=float, default=120.0, help="wait for ready, s (120)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--bare", metavar="BASE_URL", help=argparse.SUPPRESS)  # bare loop mode
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.bare is not None:
        bare_loop(args.bare, args.targets, args.interval, args.bare_loop == "uvloop")
        return 0
    subjects = [s.strip() for s in args.only.split(",") if s.strip()]
    if not subjects or any(s not in SUBJECTS for s in subjects):
        print(f"bench_cpu: --only takes some of {', '.join(SUBJECTS)}", file=sys.stderr)
        return 2
    if (
        min(args.targets, args.rounds, args.nginx_workers) < 1
        or min(args.interval, args.duration) <= 0
    ):
        print("bench_cpu: --targets, --rounds, --interval, --duration must be > 0", file=sys.stderr)
        return 2
    tools = ["nginx"] + (
        ["prometheus", "prometheus-blackbox-exporter"] if "blackbox" in subjects else []
    )
    missing = [APT_PACKAGES[t] for t in tools if find_tool(t) is None]
    if missing:
        print(
            f"bench_cpu: missing {', '.join(missing)}; install with:"
            f" apt-get install --no-install-recommends {' '.join(missing)}",
            file=sys.stderr,
        )
        return 1
    if args.bare_loop == "uvloop" and "bare" in subjects:
        found = subprocess.run(
            [args.python, "-c", "import uvloop"], check=False, capture_output=True
        )
        if found.returncode != 0:
            print(f"bench_cpu: --bare-loop uvloop: no uvloop in {args.python}", file=sys.stderr)
            return 1

    def on_term(_sig: int, _frame: object) -> None:
        raise SystemExit(143)  # runs every cleanup on the way out

    signal.signal(signal.SIGTERM, on_term)
    try:
        results = run_all(args, subjects)
    except BenchError as exc:
        print(f"bench_cpu: {exc}", file=sys.stderr)
        return 1
    if args.json:
        out = [
            asdict(r)
            | {"checks_per_s": r.checks_per_s, "cpu_pct": r.cpu_pct, "us_per_check": r.us_per_check}
            for r in results
        ]
        config = {
            key: getattr(args, key)
            for key in ("targets", "interval", "warmup", "duration", "rounds", "nginx_workers")
        }
        config |= {
            "cpus": os.cpu_count(),
            "python": python_version(args.python),
            "revision": bd.revision(),
        }
        report = {"config": config, "results": out, "ratios": ratios(results)}
        print(json.dumps(report, indent=2))
    else:
        print(summary(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
