"""A fleet against one instance, side by side in one run: CPU per check, the database's load,
lateness, the takeover after ``kill -9``, and 100,000 targets on two cores.

    python tests/bench/bench_fleet.py                  # parts cost and takeover, ~7 min
    python tests/bench/bench_fleet.py --big            # and 100,000 targets on a fleet of 2
    python tests/bench/bench_fleet.py --only takeover --takeover-runs 5

One target server (nginx if installed, else bench_daemon.py's aiohttp workers) and one
PostgreSQL server (tests/postgres.py: a throwaway cluster on a Unix socket, a new database
for every fleet) serve every part; the parts run one after another, never at the same time:

1. **cost**: ``--targets`` (10,000) every ``--interval`` (60 s), a new connection per check
   (the default), for each of ``--rounds`` (1): (a) one instance with a SQLite file, (b) two
   instances in one location on PostgreSQL. Each is warmed up for one interval, then measured
   for ``--window`` (60 s): CPU of the daemons per check, PostgreSQL's transactions per
   second, start lateness, skipped checks. Then the ratio fleet / single of CPU per check.
2. **takeover**: a fleet of two with ``--takeover-targets`` (2,000) every
   ``--takeover-interval`` (10 s) and ``--fleet-ttl`` ``--takeover-ttl`` (5 s); one is killed
   with SIGKILL; per target it checked, the time from the kill to the survivor's first check,
   against the TTL plus one interval. ``--takeover-runs`` (3) times, a new fleet each time,
   killing the first and the second instance in turn.
3. **big** (``--big`` or ``--only big``): a fleet of two checking ``--big-targets``
   (100,000) every ``--big-interval`` (60 s) with ``reuse_connections: true``; lateness and
   skipped checks say whether two instances keep up on two cores (``--big-single``: one
   instance too).

``--control`` adds one instance with half the targets to cost and big: what each instance of
the fleet does, without the fleet. ``--profile S`` runs py-spy on the daemons after each
window and prints where their time went.

Every daemon is ``python -m monitor run --listen 127.0.0.1:0 --log-format json`` in its own
process group, without the caller's ``MONITOR_*`` variables, exactly as bench_daemon.py starts
it. It asserts nothing about time. Exit status: 0 if every daemon stopped with exit code 0
after SIGTERM (the killed ones excepted) and every window saw checks, 1 otherwise. Only
127.0.0.1 and a Unix socket are used; everything started is stopped in a ``finally``, also on
SIGTERM or Ctrl-C. See tests/bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests/, for postgres.py
import bench_daemon as bd
import postgres as pg

from monitor.fleet import owner

HOST = bd.HOST
LOCATION = "bench"
PARTS = ("cost", "takeover", "big")
FLEET = ("fleet-a", "fleet-b")
DRAIN_POLL_S = 10.0  # a scrape of 50,000 targets costs ~1 s of CPU: not too often
TAKEOVER_MARGIN_S = 5.0  # watched after the goal (TTL + interval), to see late takeovers too
progress = bd.progress
BenchError = bd.BenchError
Procs = list[subprocess.Popen[bytes]]


# -- what is measured ---------------------------------------------------------------------


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine, all cores (/proc/stat: all but idle, iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / bd.CLK_TCK


def sys_cpu_s(pid: int) -> float:
    """stime of a process (all its threads): the part of its CPU spent in the kernel."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2 :].split()[12]) / bd.CLK_TCK


def pids_cpu(pids: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            out[pid] = bd.cpu_seconds(pid)
    return out


_GAUGE = re.compile(rb"^(monitor_state_writes_pending|monitor_targets) (\S+)$", re.MULTILINE)


@dataclass
class Snapshot:
    """The few series of one daemon's /metrics the benchmark compares."""

    checks: float
    skipped: float
    writes_pending: float
    targets: float


def snapshot(port: int) -> Snapshot:
    body = bd.scrape(port).body
    counters = bd.parse_counters(body)
    gauges = {m.group(1).decode(): float(m.group(2)) for m in _GAUGE.finditer(body)}
    return Snapshot(
        checks=counters.get("checks", 0.0),
        skipped=counters.get("monitor_checks_skipped_total", 0.0),
        writes_pending=gauges.get("monitor_state_writes_pending", math.nan),
        targets=gauges.get("monitor_targets", math.nan),
    )


def quantiles(values: list[float]) -> dict[str, float]:
    """n, p50, p99 and max of ``values`` (nearest rank; nan if empty)."""
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": bd.percentile(ordered, 50),
        "p99": bd.percentile(ordered, 99),
        "max": ordered[-1] if ordered else math.nan,
    }


def median(values: list[float]) -> float:
    real = [v for v in values if not math.isnan(v)]
    return statistics.median(real) if real else math.nan


# -- the processes ------------------------------------------------------------------------


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    err: Path
    started: float  # monotonic
    port: int = 0
    ready_s: float = math.nan


class Bench:
    """What a run started, for the ``finally``: processes, the PostgreSQL server, the dir."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
        self.procs: Procs = []
        self.pg: pg.PgServer | None = None
        self.server: bd.TargetServer | None = None

    def start_servers(self) -> None:
        args = self.args
        kind = args.server
        if kind == "auto":
            found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
            kind = "nginx" if found else "aiohttp"
        if kind == "nginx":
            self.server = bd.start_nginx_server(args.server_workers, self.tmp, self.procs)
        else:
            self.server = bd.start_aiohttp_server(args.server_workers, self.procs)
        progress(f"target server: {self.server.kind} x{args.server_workers}")
        if not any(pg.PG_LIB.glob("*/bin/postgres")):
            msg = f"PostgreSQL is not installed (no {pg.PG_LIB}/*/bin/postgres)"
            raise BenchError(msg)
        # tests/postgres.py: initdb in a new directory under /tmp, a Unix socket only, run as
        # the postgres user when we are root. Durability is off (fsync, synchronous_commit):
        # the transactions are counted, not what they cost the disk.
        self.pg = pg.start_server()
        progress(f"PostgreSQL {pg.bin_dir().parent.name} on a Unix socket in {self.pg.root}")

    def pg_pids(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, walwriter, ...)."""
        assert self.pg is not None
        try:
            pid = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return [pid, *bd._children(pid)]

    def xacts(self, dbname: str) -> float:
        """Transactions committed and rolled back in ``dbname`` so far (pg_stat_database).

        Backends publish their counts at most about once a second, so a window's delta is
        off by up to a second's worth at each end.
        """
        assert self.pg is not None
        with self.pg.admin() as db:
            row = db.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                (dbname,),
            ).fetchone()
        return float(str(row[0])) if row is not None else math.nan

    def start_daemon(self, name: str, work: Path, config: Path, extra: list[str]) -> Daemon:
        log, err = work / f"{name}.log", work / f"{name}.stderr"
        command = [sys.executable, "-m", "monitor", "run", "--config", str(config)]
        command += ["--listen", f"{HOST}:0", "--log-format", "json", *extra]
        with log.open("wb") as out, err.open("wb") as errors:
            proc = subprocess.Popen(
                command,
                stdout=out,
                stderr=errors,
                stdin=subprocess.DEVNULL,
                env=bd.daemon_env(self.args.max_concurrency),
                cwd=work,
                start_new_session=True,
            )
        self.procs.append(proc)
        return Daemon(name, proc, log, err, time.monotonic())

    def watched(self, daemons: list[Daemon]) -> Procs:
        assert self.server is not None
        return [*(d.proc for d in daemons), *self.server.procs]

    def wait_ready(self, daemons: list[Daemon]) -> None:
        watched = self.watched(daemons)
        deadline = time.monotonic() + self.args.ready_timeout
        for d in daemons:
            d.port = bd.wait_startup(d.log, deadline, watched)
            bd.wait_http_ok(f"http://{HOST}:{d.port}/readyz", deadline, watched)
            d.ready_s = time.monotonic() - d.started

    def stop(self, daemons: list[Daemon]) -> list[int | None]:
        """SIGTERM to all at once, then wait: each exit code, None if one did not exit."""
        for d in daemons:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        deadline = time.monotonic() + self.args.stop_timeout
        for d in daemons:
            try:
                codes.append(d.proc.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(None)
                bd.kill_group(d.proc)
        return codes

    def cleanup(self, failed: bool) -> None:
        servers = self.server.procs if self.server is not None else []
        for proc in self.procs:
            if proc not in servers:
                bd.kill_group(proc)  # still running only if something went wrong
        for proc in servers:
            if proc.poll() is None:
                proc.terminate()
        for proc in servers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            bd.kill_group(proc)
        if self.pg is not None:
            self.pg.cleanup()
        if self.args.keep or failed:
            progress(f"logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# -- parts 1 and 3: a measured window -----------------------------------------------------


@dataclass
class Case:
    """One window of one subject: a single instance, or a fleet."""

    label: str
    round: int
    targets: int
    interval_s: float
    instances: list[str]
    ready_s: list[float]
    targets_each: list[float]  # monitor_targets at the window's start
    writes_pending_after_warmup: list[float]  # monitor_state_writes_pending
    writes_pending_at_start: list[float]
    drain_wait_s: float  # waited past the warm-up for state writes to be done
    window_s: float
    checks: int  # log lines whose check started in the window
    checks_metrics: float  # monitor_checks_total delta between the snapshots
    metrics_span_s: float  # between the snapshots, which bracket the window
    failed: int
    reasons: dict[str, int]
    skipped: float  # monitor_checks_skipped_total delta
    cpu_s: float  # the daemons, user + system
    sys_cpu_s: float  # of which system: connect, send, close, epoll (and loopback's TCP)
    cpu_each_s: list[float]
    pg_cpu_s: float
    server_cpu_s: float
    machine_cpu_s: float
    xacts_warmup: float  # transactions in the database from the first start to the window
    xacts_window: float
    lateness_s: dict[str, float]
    late_over_100ms: int
    rss_mib: list[float]
    exit_codes: list[int | None]
    other_events: dict[str, int]
    unparsed: int
    stderr_tails: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)  # --profile: the top of each daemon's

    @property
    def fleet(self) -> bool:
        return len(self.instances) > 1

    @property
    def us_per_check(self) -> float:
        return 1e6 * self.cpu_s / self.checks if self.checks else math.nan

    @property
    def machine_pct(self) -> float:
        """How busy the whole machine was, % of all its cores: it is shared."""
        return 100 * self.machine_cpu_s / self.window_s / (os.cpu_count() or 1)

    @property
    def ok(self) -> bool:
        return self.checks > 0 and all(code == 0 for code in self.exit_codes)


def run_case(
    bench: Bench,
    label: str,
    rnd: int,
    *,
    fleet: bool,
    targets: int,
    interval_s: float,
    window_s: float,
    reuse: bool,
) -> Case:
    args = bench.args
    assert bench.server is not None and bench.pg is not None
    work = bench.tmp / f"{label}-{rnd}"
    work.mkdir()
    config = work / "targets.yaml"
    bd.write_config(config, bench.server.base_url, targets, interval_s, reuse_connections=reuse)
    dbname = ""
    if fleet:
        dbname = bench.pg.create_database()
        dsn = bench.pg.dsn(dbname)
        ttl = ["--fleet-ttl", f"{args.fleet_ttl:g}s"] if args.fleet_ttl else []
        specs = [
            (name, ["--state", dsn, "--location", LOCATION, "--instance", name, *ttl])
            for name in FLEET
        ]
    else:
        specs = [("single", ["--state", str(work / "state.db")])]
    xact_first = bench.xacts(dbname) if fleet else math.nan
    daemons = [bench.start_daemon(name, work, config, extra) for name, extra in specs]
    try:
        return _measure_case(
            bench, label, rnd, daemons, dbname, xact_first, targets, interval_s, window_s
        )
    finally:
        for d in daemons:
            bd.kill_group(d.proc)


def _measure_case(
    bench: Bench,
    label: str,
    rnd: int,
    daemons: list[Daemon],
    dbname: str,
    xact_first: float,
    targets: int,
    interval_s: float,
    window_s: float,
) -> Case:
    assert bench.server is not None
    watched = bench.watched(daemons)
    bench.wait_ready(daemons)
    progress(
        f"{label} round {rnd}: {len(daemons)} instance(s) ready after "
        + ", ".join(f"{d.ready_s:.1f} s" for d in daemons)
        + f"; warming up one interval ({interval_s:g} s)"
    )
    bd.sleep_watching(interval_s, watched)
    # Every target's first verdict is a state write (unknown -> up), one transaction each:
    # 10,000 at 10,000 targets. Measure once they are done (the steady state), or after
    # --drain-timeout with what still waits (the table says how many).
    drain_start = time.monotonic()
    after_warmup: list[float] = []
    while True:
        before = time.monotonic()
        snaps0 = [snapshot(d.port) for d in daemons]
        snapped0 = (before + time.monotonic()) / 2
        after_warmup = after_warmup or [s.writes_pending for s in snaps0]
        pending = sum(s.writes_pending for s in snaps0)
        if pending == 0 or time.monotonic() - drain_start > bench.args.drain_timeout:
            break
        progress(f"{label}: {pending:g} state writes still pending; waiting")
        bd.sleep_watching(DRAIN_POLL_S, watched)
    drain_wait_s = time.monotonic() - drain_start
    bd.sleep_watching(bd.SETTLE_S, watched)  # the snapshot scrapes' effect is over

    progress(f"{label} round {rnd}: measuring {window_s:g} s")
    fleet = bool(dbname)
    xact0 = bench.xacts(dbname) if fleet else math.nan
    pg0 = pids_cpu(bench.pg_pids())
    cpu0 = [bd.cpu_seconds(d.proc.pid) for d in daemons]
    sys0 = sum(sys_cpu_s(d.proc.pid) for d in daemons)
    server0, machine0 = bd.cpu_of(bench.server.pids()), machine_cpu_s()
    t0, m0 = time.time(), time.monotonic()
    bd.sleep_watching(window_s, watched)
    t1, m1 = time.time(), time.monotonic()
    cpu1 = [bd.cpu_seconds(d.proc.pid) for d in daemons]
    sys1 = sum(sys_cpu_s(d.proc.pid) for d in daemons)
    server1, machine1 = bd.cpu_of(bench.server.pids()), machine_cpu_s()
    pg1 = pids_cpu(bench.pg_pids())
    xact1 = bench.xacts(dbname) if fleet else math.nan
    rss = [bd.vm_kib(d.proc.pid, "VmRSS") / 1024 for d in daemons]
    before = time.monotonic()
    snaps1 = [snapshot(d.port) for d in daemons]
    snapped1 = (before + time.monotonic()) / 2
    profiles = profile(daemons, bench.args.profile) if bench.args.profile else []
    codes = bench.stop(daemons)

    stats = [bd.read_log(d.log, t0, t1, []) for d in daemons]
    lateness = [v for s in stats for v in s.lateness]
    other: Counter[str] = Counter()
    for s in stats:
        other.update(s.other_events)
    reasons: Counter[str] = Counter()
    for s in stats:
        reasons.update(s.window_reasons)
    return Case(
        label=label,
        round=rnd,
        targets=targets,
        interval_s=interval_s,
        instances=[d.name for d in daemons],
        ready_s=[d.ready_s for d in daemons],
        targets_each=[s.targets for s in snaps0],
        writes_pending_after_warmup=after_warmup,
        writes_pending_at_start=[s.writes_pending for s in snaps0],
        drain_wait_s=drain_wait_s,
        window_s=m1 - m0,
        checks=sum(s.window_checks for s in stats),
        checks_metrics=sum(b.checks - a.checks for a, b in zip(snaps0, snaps1, strict=True)),
        metrics_span_s=snapped1 - snapped0,
        failed=sum(s.window_failed for s in stats),
        reasons=dict(reasons),
        skipped=sum(b.skipped - a.skipped for a, b in zip(snaps0, snaps1, strict=True)),
        cpu_s=sum(cpu1) - sum(cpu0),
        sys_cpu_s=sys1 - sys0,
        cpu_each_s=[b - a for a, b in zip(cpu0, cpu1, strict=True)],
        pg_cpu_s=sum(v - pg0.get(pid, 0.0) for pid, v in pg1.items()),
        server_cpu_s=server1 - server0,
        machine_cpu_s=machine1 - machine0,
        xacts_warmup=xact0 - xact_first,
        xacts_window=xact1 - xact0,
        lateness_s=quantiles(lateness),
        late_over_100ms=sum(v > 0.1 for v in lateness),
        rss_mib=rss,
        exit_codes=codes,
        other_events=dict(other),
        unparsed=sum(s.unparsed_lines for s in stats),
        stderr_tails=[t for d in daemons if (t := bd.tail(d.err, 5))],
        profiles=profiles,
    )


def profile(daemons: list[Daemon], seconds: float) -> list[str]:
    """py-spy (``--profile``) on every daemon at once, after the window so that it does not
    count: for each, where its busy samples were (idle threads are not sampled)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return ["py-spy is not installed (pip install py-spy): no profile"]
    progress(f"profiling the daemons for {seconds:g} s with py-spy")
    running = []
    for d in daemons:
        out = d.log.with_suffix(".pyspy.txt")
        command = [spy, "record", "--nonblocking", "--format", "raw", "-r", "100"]
        command += ["-d", f"{seconds:g}", "-o", str(out), "-p", str(d.proc.pid)]
        proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        running.append((d, out, proc))
    tops: list[str] = []
    for d, out, proc in running:
        _, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0 or not out.exists():
            tops.append(f"{d.name}: py-spy failed: {err.decode(errors='replace')[-300:]}")
            continue
        tops.append(f"{d.name}: {_top_functions(out)}")
    return tops


_OURS = re.compile(r"\((?:.*/)?monitor/[^:]*\.py")  # py-spy names files from sys.path
_FRAME = re.compile(r"^(.*) \((?:.*/)?([^/]+?)(?::\d+)?\)$")


def _top_functions(folded: Path, count: int = 10) -> str:
    """From py-spy's folded stacks, as shares of the samples: the leaf functions (where the
    time went), and the deepest frame in monitor/ of each stack (which of the project's
    functions it went through)."""
    leaves: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        leaves[_short(frames[-1])] += int(n)
        mine = [f for f in frames if _OURS.search(f)]
        ours[_short(mine[-1]) if mine else "(outside monitor/)"] += int(n)
        total += int(n)

    def shares(counter: Counter[str]) -> str:
        return "; ".join(f"{k} {100 * v / total:.1f}%" for k, v in counter.most_common(count))

    return f"{total:,} samples\n  leaves: {shares(leaves)}\n  in monitor/: {shares(ours)}"


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    return f"{match.group(1)} ({match.group(2)})" if match else frame


# -- part 2: takeover after kill -9 -------------------------------------------------------


@dataclass
class CheckLine:
    target: str
    start: float  # wall clock: the log line's timestamp (the check's end) - duration_s
    lateness_s: float


@dataclass
class Parsed:
    checks: list[CheckLine] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # every other line


def parse_log(path: Path) -> Parsed:
    out = Parsed()
    with path.open("rb") as log:
        for raw in log:
            try:
                event: dict[str, Any] = json.loads(raw)
            except ValueError:
                out.events.append({"event": "unparsed", "line": raw.decode(errors="replace")})
                continue
            if event.get("event") != "check":
                out.events.append(event)
                continue
            end = datetime.fromisoformat(event["timestamp"]).timestamp()
            out.checks.append(
                CheckLine(
                    str(event["target"]),
                    end - float(event.get("duration_s", 0.0)),
                    float(event.get("lateness_s", 0.0)),
                )
            )
    return out


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


@dataclass
class Takeover:
    round: int
    targets: int
    interval_s: float
    ttl_s: float
    victim: str
    victim_targets: int  # rendezvous hashing over both names gives it these
    victim_log_missing: int  # of those, not in its log's last interval (and a second)
    victim_log_extra: int  # in that part of its log, but not among those
    detected_s: float  # kill -> the survivor's fleet_members_changed without the victim
    gained: int  # the survivor's fleet_share_changed after the kill
    takeover_s: dict[str, float]  # per victim target: kill -> the survivor's first check
    within_goal: int
    never_checked: int  # victim targets the survivor did not check before it was stopped
    longest_gap_s: float  # any target: between two checks, across the kill
    longest_gap_target: str
    survivor_own_gap_s: float  # the survivor's own targets: longest time between two checks
    survivor_lateness_s: dict[str, float]  # the survivor's checks after the kill
    survivor_skipped: int  # check_skipped lines of the survivor after the kill
    # state_change from unknown after the kill: a gained target starts unknown, so its first
    # verdict is a state write (a transaction) although the location's verdict is stored
    verdicts_rewritten: int
    survivor_exit_code: int | None
    other_events: dict[str, int]

    @property
    def goal_s(self) -> float:
        return self.ttl_s + self.interval_s

    @property
    def ok(self) -> bool:
        return self.survivor_exit_code == 0 and self.takeover_s["n"] > 0


def run_takeover(bench: Bench, rnd: int) -> Takeover:
    args = bench.args
    assert bench.server is not None and bench.pg is not None
    targets, interval_s, ttl_s = args.takeover_targets, args.takeover_interval, args.takeover_ttl
    work = bench.tmp / f"takeover-{rnd}"
    work.mkdir()
    config = work / "targets.yaml"
    bd.write_config(config, bench.server.base_url, targets, interval_s)
    dsn = bench.pg.dsn(bench.pg.create_database())
    daemons = [
        bench.start_daemon(
            name,
            work,
            config,
            # The shorter TTL and interval make this part take seconds, not minutes.
            [
                "--state",
                dsn,
                "--location",
                LOCATION,
                "--instance",
                name,
                "--fleet-ttl",
                f"{ttl_s:g}s",
            ],
        )
        for name in FLEET
    ]
    try:
        bench.wait_ready(daemons)
        watched = bench.watched(daemons)
        # The first round (every target checked once), the shares settled, one more interval.
        warm_s = 2 * interval_s
        progress(f"takeover {rnd}: fleet ready; warming up {warm_s:g} s")
        bd.sleep_watching(warm_s, watched)
        victim, survivor = (daemons[0], daemons[1]) if rnd % 2 else (daemons[1], daemons[0])
        progress(f"takeover {rnd}: kill -9 {victim.name} (pid {victim.proc.pid})")
        t_kill = time.time()
        victim.proc.kill()
        victim.proc.wait(timeout=10)
        watch_s = ttl_s + interval_s + TAKEOVER_MARGIN_S
        bd.sleep_watching(watch_s, bench.watched([survivor]))
        code = bench.stop([survivor])[0]
    finally:
        for d in daemons:
            bd.kill_group(d.proc)

    names = [f"t{i}" for i in range(targets)]
    theirs = {n for n in names if owner(n, list(FLEET)) == victim.name}
    dead, alive = parse_log(victim.log), parse_log(survivor.log)
    # A second more than an interval: a check in flight at the kill left no line.
    recent = {c.target for c in dead.checks if t_kill - interval_s - 1 <= c.start < t_kill}
    first_after: dict[str, float] = {}
    for c in alive.checks:
        if c.start >= t_kill and c.target not in first_after:
            first_after[c.target] = c.start
    took = [first_after[n] - t_kill for n in theirs if n in first_after]
    goal_s = ttl_s + interval_s
    # Gaps: every check of every target from an interval before the kill on, both logs.
    starts: dict[str, list[float]] = {}
    for c in (*dead.checks, *alive.checks):
        if c.start >= t_kill - interval_s:
            starts.setdefault(c.target, []).append(c.start)
    gap_s, gap_target, own_gap_s = 0.0, "", 0.0
    for name, times in starts.items():
        times.sort()
        for a, b in itertools.pairwise(times):
            if b - a > gap_s:
                gap_s, gap_target = b - a, name
            if name not in theirs:
                own_gap_s = max(own_gap_s, b - a)
    after = [e for e in alive.events if e.get("event") != "unparsed" and _at(e) >= t_kill]
    changed = [
        _at(e)
        for e in after
        if e.get("event") == "fleet_members_changed" and victim.name in e.get("left", [])
    ]
    shares = [e for e in after if e.get("event") == "fleet_share_changed"]
    other = Counter(
        f"{e.get('level', '?')} {e.get('event', '?')}" for e in (*dead.events, *alive.events)
    )
    return Takeover(
        round=rnd,
        targets=targets,
        interval_s=interval_s,
        ttl_s=ttl_s,
        victim=victim.name,
        victim_targets=len(theirs),
        victim_log_missing=len(theirs - recent),
        victim_log_extra=len(recent - theirs),
        detected_s=changed[0] - t_kill if changed else math.nan,
        gained=int(shares[0].get("gained", 0)) if shares else 0,
        takeover_s=quantiles(took),
        within_goal=sum(v <= goal_s for v in took),
        never_checked=len(theirs - first_after.keys()),
        longest_gap_s=gap_s,
        longest_gap_target=gap_target,
        survivor_own_gap_s=own_gap_s,
        survivor_lateness_s=quantiles([c.lateness_s for c in alive.checks if c.start >= t_kill]),
        survivor_skipped=sum(e.get("event") == "check_skipped" for e in after),
        verdicts_rewritten=sum(
            e.get("event") == "state_change" and e.get("from") == "unknown" for e in after
        ),
        survivor_exit_code=code,
        other_events=dict(other),
    )


# -- output -------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _s(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds:.1f} s"


def _pct(cpu_s: float, window_s: float) -> str:
    return f"{100 * cpu_s / window_s:.1f} %"


def _join(values: list[str]) -> str:
    return " + ".join(values)


def _codes(codes: list[int | None]) -> str:
    return ", ".join("did not exit" if c is None else str(c) for c in codes)


def _events(events: dict[str, int]) -> str:
    """Warnings and errors logged (info-level events are the fleet's ordinary news)."""
    worth = {k: v for k, v in events.items() if not k.startswith(("info ", "debug "))}
    return ", ".join(f"{k} x{v}" for k, v in sorted(worth.items())) or "none"


def _med(cases: list[Case], value: Any) -> float:
    return median([float(value(c)) for c in cases])


def _case_rows(columns: list[list[Case]], goals: bool) -> list[tuple[str, list[str]]]:
    """Rows of a table whose columns are a subject's rounds; numbers are medians."""

    def row(label: str, cell: Any) -> tuple[str, list[str]]:
        return label, [cell(cases) for cases in columns]

    def lateness(key: str) -> Any:
        return lambda cs: _ms(_med(cs, lambda c: c.lateness_s[key]))

    late_label = "start lateness p50 / p99 / max" + (" (p99 goal < 100 ms)" if goals else "")
    return [
        row(
            "instances: targets each",
            lambda cs: _join([f"{t:,.0f}" for t in cs[0].targets_each]),
        ),
        row(
            "checks/s in window (expected)",
            lambda cs: (
                f"{_med(cs, lambda c: c.checks / c.window_s):,.1f}"
                f" ({cs[0].targets / cs[0].interval_s:,.1f})"
            ),
        ),
        row(
            "  monitor_checks_total delta / s",
            lambda cs: f"{_med(cs, lambda c: c.checks_metrics / c.metrics_span_s):,.1f}",
        ),
        row(
            "checks in window: failed" + (" / skipped (goal 0)" if goals else " / skipped"),
            lambda cs: (
                f"{_med(cs, lambda c: c.failed):,.0f} / {_med(cs, lambda c: c.skipped):,.0f}"
            ),
        ),
        row(
            "daemons' CPU, % of one core",
            lambda cs: (
                f"{_med(cs, lambda c: 100 * c.cpu_s / c.window_s):.1f} %"
                + (
                    f" ({_join([_pct(v, cs[0].window_s) for v in cs[0].cpu_each_s])})"
                    if cs[0].fleet
                    else ""
                )
            ),
        ),
        row("daemons' CPU per check", lambda cs: f"{_med(cs, lambda c: c.us_per_check):,.0f} µs"),
        row(
            "  of which in the kernel",
            lambda cs: f"{_med(cs, lambda c: 1e6 * c.sys_cpu_s / c.checks):,.0f} µs",
        ),
        row(
            "PostgreSQL's CPU, % of one core",
            lambda cs: (
                f"{_med(cs, lambda c: 100 * c.pg_cpu_s / c.window_s):.1f} %" if cs[0].fleet else "-"
            ),
        ),
        row(
            "database transactions/s in window",
            lambda cs: (
                f"{_med(cs, lambda c: c.xacts_window / c.window_s):,.1f}"
                if cs[0].fleet
                else "- (SQLite)"
            ),
        ),
        row(
            "  transactions from start to window",
            lambda cs: f"{_med(cs, lambda c: c.xacts_warmup):,.0f}" if cs[0].fleet else "-",
        ),
        row(
            "state writes pending: warm-up's end -> window",
            lambda cs: (
                f"{sum(cs[0].writes_pending_after_warmup):,.0f}"
                f" -> {sum(cs[0].writes_pending_at_start):,.0f}"
                + (f" ({_s(cs[0].drain_wait_s)} later)" if cs[0].drain_wait_s > 1 else "")
            ),
        ),
        row(
            late_label,
            lambda cs: f"{lateness('p50')(cs)} / {lateness('p99')(cs)} / {lateness('max')(cs)}",
        ),
        row("checks late > 100 ms", lambda cs: f"{_med(cs, lambda c: c.late_over_100ms):,.0f}"),
        row("RSS at window end", lambda cs: _join([f"{v:.0f} MiB" for v in cs[0].rss_mib])),
        row("ready after", lambda cs: _join([_s(v) for v in cs[0].ready_s])),
        row(
            "target server's CPU, % of one core",
            lambda cs: f"{_med(cs, lambda c: 100 * c.server_cpu_s / c.window_s):.1f} %",
        ),
        row(
            f"machine's CPU, % of all {os.cpu_count()} cores",
            lambda cs: f"{_med(cs, lambda c: c.machine_pct):.0f} %",
        ),
        row("exit codes after SIGTERM", lambda cs: " | ".join(_codes(c.exit_codes) for c in cs)),
        row(
            "warnings and errors logged",
            lambda cs: " | ".join(_events(c.other_events) for c in cs),
        ),
    ]


def _table(head: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    width = max(len(label) for label, _ in rows)
    cells = [max(len(h), *(len(r[1][i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["".ljust(width) + "".join(f"  {h.ljust(w)}" for h, w in zip(head, cells, strict=True))]
    lines.append("-" * len(lines[0]))
    for label, values in rows:
        lines.append(
            label.ljust(width)
            + "".join(f"  {v.ljust(w)}" for v, w in zip(values, cells, strict=True))
        )
    return lines


def _ratio(what: str, a: list[Case], b: list[Case], goal: str = "") -> str:
    """CPU per check of ``a`` over ``b``: the median of the rounds' ratios, and each."""
    ratios = [x.us_per_check / y.us_per_check for x, y in zip(a, b, strict=True)]
    each = ", ".join(
        f"{v:.2f} ({x.us_per_check:,.0f} / {y.us_per_check:,.0f} µs)"
        for v, x, y in zip(ratios, a, b, strict=True)
    )
    return f"CPU per check, {what}: {median(ratios):.2f}x{goal}; by round: {each}"


def summary(r: dict[str, Any]) -> str:
    c = r["config"]
    lines = [
        f"uptime-monitor fleet bench: revision {c['revision']}, {c['cpus']} CPUs, Python"
        f" {c['python']}, target server {c['server']}, PostgreSQL {c['postgresql']} (fsync off),"
        " Unix socket",
    ]
    cost: list[Case] = r["cost_cases"]
    if cost:
        singles = [x for x in cost if x.label == "single"]
        fleets = [x for x in cost if x.label == "fleet"]
        halves = [x for x in cost if x.label == "half"]
        lines += [
            "",
            f"1. cost: {c['targets']:,} targets every {c['interval_s']:g} s, a new connection per"
            f" check, window {c['window_s']:g} s, {c['rounds']} round(s)"
            + ("; medians" if c["rounds"] > 1 else ""),
        ]
        head = ["one instance, SQLite", "fleet of 2, PostgreSQL"]
        head += ["one instance, half the targets"] if halves else []
        lines += _table(head, _case_rows([singles, fleets, halves][: len(head)], goals=False))
        lines.append(_ratio("fleet / single", fleets, singles, " (goal <= 1.2x)"))
        if halves:
            # Each of the fleet does half the checks: a check may cost more in a process
            # that is less busy, fleet or not. This says what the fleet itself adds.
            lines.append(_ratio("fleet / one instance at half the targets", fleets, halves))
    takeovers: list[Takeover] = r["takeovers"]
    if takeovers:
        t0 = takeovers[0]
        lines += [
            "",
            f"2. takeover after kill -9: {t0.targets:,} targets every {t0.interval_s:g} s,"
            f" --fleet-ttl {t0.ttl_s:g}s, goal TTL + interval = {t0.goal_s:g} s;"
            f" {len(takeovers)} run(s), a new fleet each",
        ]
        head = [f"run {t.round}" for t in takeovers] + (["median"] if len(takeovers) > 1 else [])

        def row(label: str, cell: Any, med: Any = None) -> tuple[str, list[str]]:
            values = [cell(t) for t in takeovers]
            if len(takeovers) > 1:
                values.append(cell_med(med) if med is not None else "")
            return label, values

        def cell_med(value: Any) -> str:
            return _s(median([float(value(t)) for t in takeovers]))

        rows = [
            row(
                "killed: its targets (log: missing/extra)",
                lambda t: (
                    f"{t.victim}: {t.victim_targets:,}"
                    f" ({t.victim_log_missing}/{t.victim_log_extra})"
                ),
            ),
            row(
                "kill -> survivor sees it gone", lambda t: _s(t.detected_s), lambda t: t.detected_s
            ),
            row("targets the survivor gained", lambda t: f"{t.gained:,}"),
            row(
                "kill -> next check, p50",
                lambda t: _s(t.takeover_s["p50"]),
                lambda t: t.takeover_s["p50"],
            ),
            row(
                "kill -> next check, max",
                lambda t: _s(t.takeover_s["max"]),
                lambda t: t.takeover_s["max"],
            ),
            row(
                f"re-checked within {t0.goal_s:g} s / never",
                lambda t: f"{t.within_goal:,} of {t.victim_targets:,} / {t.never_checked}",
            ),
            row(
                "longest gap between two checks",
                lambda t: f"{_s(t.longest_gap_s)} ({t.longest_gap_target})",
                lambda t: t.longest_gap_s,
            ),
            row(
                "  of the survivor's own targets",
                lambda t: _s(t.survivor_own_gap_s),
                lambda t: t.survivor_own_gap_s,
            ),
            row(
                "survivor's lateness p99 / max",
                lambda t: (
                    f"{_ms(t.survivor_lateness_s['p99'])} / {_ms(t.survivor_lateness_s['max'])}"
                ),
            ),
            row("survivor's skipped checks", lambda t: f"{t.survivor_skipped}"),
            row(
                "survivor's verdicts from unknown",
                lambda t: f"{t.verdicts_rewritten:,}",
            ),
            row(
                "survivor's exit code after SIGTERM",
                lambda t: _codes([t.survivor_exit_code]),
            ),
            row("warnings and errors logged", lambda t: _events(t.other_events)),
        ]
        lines += _table(head, rows)
    big: list[Case] = r["big_cases"]
    if big:
        b0 = big[0]
        lines += [
            "",
            f"3. big: {b0.targets:,} targets every {b0.interval_s:g} s, reuse_connections: true,"
            f" window {b0.window_s:.0f} s",
        ]
        names = {
            "big-single": "one instance, SQLite",
            "big-fleet": "fleet of 2, PostgreSQL",
            "big-half": "one instance, half the targets",
        }
        lines += _table([names[x.label] for x in big], _case_rows([[x] for x in big], goals=True))
        by = {x.label: [x] for x in big}
        if "big-single" in by:
            lines.append(_ratio("fleet / single", by["big-fleet"], by["big-single"]))
        if "big-half" in by:
            lines.append(
                _ratio("fleet / one instance at half the targets", by["big-fleet"], by["big-half"])
            )
    for case in [*cost, *big]:
        for text in case.profiles:
            lines.append(f"{case.label} round {case.round}, profile of {text}")
        for text in case.stderr_tails:
            lines.append(f"{case.label} round {case.round}, daemon stderr (tail):")
            lines += [f"  {line}" for line in text.splitlines()]
    if r["logs"]:
        lines.append(f"logs: {r['logs']}")
    return "\n".join(lines)


# -- the command line ---------------------------------------------------------------------


def run(args: argparse.Namespace, parts: list[str]) -> dict[str, Any]:
    bench = Bench(args)
    failed = True
    try:
        bench.start_servers()
        assert bench.server is not None
        cost: list[Case] = []
        subjects = [("single", False, args.targets), ("fleet", True, args.targets)]
        if args.control:
            subjects.append(("half", False, args.targets // 2))
        for rnd in range(1, args.rounds + 1) if "cost" in parts else ():
            # Alternate the order: drift in the machine's load hits every subject alike.
            for label, fleet, targets in subjects if rnd % 2 else subjects[::-1]:
                cost.append(
                    run_case(
                        bench,
                        label,
                        rnd,
                        fleet=fleet,
                        targets=targets,
                        interval_s=args.interval,
                        window_s=args.window,
                        reuse=False,
                    )
                )
        cost.sort(key=lambda c: c.round)
        takeovers = [
            run_takeover(bench, rnd)
            for rnd in (range(1, args.takeover_runs + 1) if "takeover" in parts else ())
        ]
        big: list[Case] = []
        if "big" in parts:
            big_subjects = [("big-fleet", True, args.big_targets)]
            if args.big_single:
                big_subjects.insert(0, ("big-single", False, args.big_targets))
            if args.control:
                big_subjects.append(("big-half", False, args.big_targets // 2))
            for label, fleet, targets in big_subjects:
                big.append(
                    run_case(
                        bench,
                        label,
                        1,
                        fleet=fleet,
                        targets=targets,
                        interval_s=args.big_interval,
                        window_s=args.big_window,
                        reuse=True,
                    )
                )
        failed = not (all(x.ok for x in (*cost, *big)) and all(t.ok for t in takeovers))
        return {
            "config": {
                "parts": parts,
                "targets": args.targets,
                "interval_s": args.interval,
                "window_s": args.window,
                "rounds": args.rounds,
                "fleet_ttl_s": args.fleet_ttl,
                "server": f"{bench.server.kind} x{args.server_workers}",
                "postgresql": pg.bin_dir().parent.name,
                "max_concurrency": args.max_concurrency,
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "revision": bd.revision(),
            },
            "cost_cases": cost,
            "takeovers": takeovers,
            "big_cases": big,
            "ok": not failed,
            "logs": str(bench.tmp) if args.keep or failed else None,
        }
    finally:
        bench.cleanup(failed)


def _jsonable(r: dict[str, Any]) -> Any:
    def one(x: Any) -> Any:
        d = asdict(x)
        if isinstance(x, Case):
            d["us_per_check"] = x.us_per_check
        return d

    out = dict(r)
    for key in ("cost_cases", "takeovers", "big_cases"):
        out[key] = [one(x) for x in r[key]]
    return bd._no_nan(out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--only",
        help=f"comma-separated parts to run, of {','.join(PARTS)} (default: cost,takeover)",
    )
    p.add_argument("--big", action="store_true", help="also run part big (100,000 targets)")
    p.add_argument("--targets", type=int, default=10_000, help="cost: targets (10000)")
    p.add_argument("--interval", type=float, default=60.0, help="cost: interval, s (60)")
    p.add_argument("--window", type=float, default=60.0, help="cost: measured window, s (60)")
    p.add_argument("--rounds", type=int, default=1, help="cost: rounds of both subjects (1)")
    p.add_argument(
        "--fleet-ttl",
        type=float,
        default=0.0,
        help="cost and big: the fleet's --fleet-ttl, s (default: the daemon's, 15 s)",
    )
    p.add_argument(
        "--control",
        action="store_true",
        help="cost and big: also one instance with half the targets, what each of the fleet does",
    )
    p.add_argument("--takeover-targets", type=int, default=2000, help="takeover: targets (2000)")
    p.add_argument(
        "--takeover-interval", type=float, default=10.0, help="takeover: interval, s (10)"
    )
    p.add_argument("--takeover-ttl", type=float, default=5.0, help="takeover: --fleet-ttl, s (5)")
    p.add_argument("--takeover-runs", type=int, default=3, help="takeover: runs (3)")
    p.add_argument("--big-targets", type=int, default=100_000, help="big: targets (100000)")
    p.add_argument("--big-interval", type=float, default=60.0, help="big: interval, s (60)")
    p.add_argument("--big-window", type=float, default=60.0, help="big: measured window, s (60)")
    p.add_argument(
        "--big-single",
        action="store_true",
        help="big: also run one instance (SQLite) on the same targets, before the fleet",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=300.0,
        help="after the warm-up, wait at most this long for the state writes of the first"
        " verdicts to be done, s (300)",
    )
    p.add_argument(
        "--profile",
        type=float,
        default=0.0,
        help="cost and big: after each window, run py-spy on the daemons for this long, s,"
        " and print where their time went (0: off)",
    )
    p.add_argument("--max-concurrency", type=int, help="MONITOR_MAX_CONCURRENCY (daemon default)")
    p.add_argument(
        "--server",
        choices=["auto", "aiohttp", "nginx"],
        default="auto",
        help="target server (auto: nginx if installed, else aiohttp)",
    )
    p.add_argument("--server-workers", type=int, default=2, help="target server processes (2)")
    p.add_argument(
        "--ready-timeout", type=float, default=180.0, help="wait for /readyz at most, s (180)"
    )
    p.add_argument(
        "--stop-timeout", type=float, default=30.0, help="wait for exit after SIGTERM, s (30)"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON instead")
    p.add_argument("--keep", action="store_true", help="keep the temporary dir with the logs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    parts = args.only.split(",") if args.only else ["cost", "takeover"]
    if args.big and "big" not in parts:
        parts.append("big")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(
            f"bench: unknown part(s) {', '.join(unknown)}; of {', '.join(PARTS)}", file=sys.stderr
        )
        return 2
    numbers = (
        args.targets,
        args.interval,
        args.window,
        args.rounds,
        args.takeover_targets,
        args.takeover_interval,
        args.takeover_ttl,
        args.takeover_runs,
        args.big_targets,
        args.big_interval,
        args.big_window,
    )
    if min(numbers) <= 0 or args.fleet_ttl < 0:
        print("bench: counts, intervals, windows and TTLs must be > 0", file=sys.stderr)
        return 2

    def on_term(_sig: int, _frame: object) -> None:
        raise SystemExit(143)  # runs the cleanup in run's finally

    signal.signal(signal.SIGTERM, on_term)
    try:
        result = run(args, parts)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(_jsonable(result), indent=2) if args.json else summary(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
