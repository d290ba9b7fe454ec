"""The status page at N targets with a year of history: render time, page weight, and whether
page loads delay checks.

1. Writes a year of history for N targets into a SQLite state file, as bench_history.py does
   (hourly rollups of 90 days, daily ones of a year, ~2 incidents per target and month).
2. In-process, on that file: the time of a refresh from the store (the first, reading all 24
   hours of rollups, and a later one), of building the model and rendering the HTML (the
   first time, then 30 s apart reusing what holds, as the daemon does; then also with every
   target's current hour changed, as in the daemon), and the sizes of the HTML and the
   JSON, raw and gzipped.
3. The daemon as a process on that file, N targets answering 200 on loopback, with
   ``--status-listen``: checks' start lateness (p50/p99/max) over a quiet phase, then over a
   phase in which clients load ``/status`` (gzip) back to back; and the load times.

    python tests/bench/bench_statuspage.py [--targets 1000] [--interval 10] [--phase 60]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_daemon import (
    daemon_env,
    kill_group,
    percentile,
    read_log,
    start_aiohttp_server,
    stop_daemon,
    wait_startup,
)
from bench_history import write

from monitor.loader import parse_config
from monitor.state import TargetState
from monitor.statuspage import model, render
from monitor.statuspage.web import Body, StatusPage
from monitor.stores import open_store


def names(targets: int) -> list[str]:
    return [f"target-{i:05d}" for i in range(targets)]  # bench_history's


def config_text(targets: int, base_url: str, interval_s: float) -> str:
    lines = ["defaults:", f"  interval: {interval_s:g}s", "  timeout: 5s", "targets:"]
    lines += [f"  - {{name: {n}, url: '{base_url}/t/{i}'}}" for i, n in enumerate(names(targets))]
    return "\n".join(lines) + "\n"


def live_states(targets: int) -> dict[str, TargetState]:
    """1 % down, 2 % degraded, the rest up."""
    now = time.time()
    states = {}
    for i, name in enumerate(names(targets)):
        if i % 100 == 0:
            states[name] = TargetState("down", now - 600, "status", "HTTP 503", f"{name}/1")
        elif i % 50 == 1:
            states[name] = TargetState("degraded", now - 60, "latency", "slower than 0.5s")
        else:
            states[name] = TargetState("up", now - 86400)
    return states


async def in_process(state_file: Path, targets: int, runs: int) -> dict[str, Any]:
    store = await open_store(str(state_file))
    try:
        config = parse_config(config_text(targets, "http://127.0.0.1:9", 60), "bench.yaml", {})
        states = live_states(targets)
        page = StatusPage(config)
        page.attach(store, lambda: states)
        now = time.time()
        started = time.perf_counter()
        await page.snapshot.refresh(store, now)
        first_read_s = time.perf_counter() - started
        started = time.perf_counter()
        await page.snapshot.refresh(store, now + 30)
        later_read_s = time.perf_counter() - started
        build, html, gz, both = [], [], [], []
        memo: model.Memo = {}
        fragments = render.Fragments()
        inputs, _seen = page._inputs(now + 30)
        t0 = time.perf_counter()
        built = model.build(inputs, memo)  # the first: every target's 90 days and figures
        t1 = time.perf_counter()
        render.html(built, fragments)  # ... and every target's HTML
        first_build_s, first_html_s = t1 - t0, time.perf_counter() - t1
        for i in range(runs):
            # Later ones, 30 s apart as the daemon's refresh: what still holds is reused.
            inputs, _seen = page._inputs(now + 30 * (i + 2))
            t0 = time.perf_counter()
            built = model.build(inputs, memo)
            t1 = time.perf_counter()
            text = render.html(built, fragments)
            t2 = time.perf_counter()
            body = Body.of(text.encode())
            t3 = time.perf_counter()
            build.append(t1 - t0)
            html.append(t2 - t1)
            gz.append(t3 - t2)
            both.append(t2 - t0)
        # In the daemon the current hour gains checks between refreshes: every target's
        # latency (its sparkline) changes each time, not so in the written history.
        hours = page.snapshot.hours
        latest = max(h for h, rows in hours.items() if rows)
        fresh_latency = []
        for i in range(runs):
            rows = hours[latest]
            hours[latest] = {
                n: dataclasses.replace(r, count=r.count + 1, latency_sum_s=r.latency_sum_s + 0.1)
                for n, r in rows.items()
            }
            inputs, _seen = page._inputs(now + 30 * (runs + i + 2))
            t0 = time.perf_counter()
            render.html(model.build(inputs, memo), fragments)
            fresh_latency.append(time.perf_counter() - t0)
        data = Body.of(json.dumps(render.as_json(built)).encode())
        return {
            "incidents_read": sum(len(v) for v in page.snapshot.incidents.values()),
            "first_read_s": first_read_s,
            "later_read_s": later_read_s,
            "first_build_s": first_build_s,
            "first_html_s": first_html_s,
            "render_s": sorted(both)[runs // 2],
            "new_latency_render_s": sorted(fresh_latency)[runs // 2],
            "build_s": sorted(build)[runs // 2],
            "html_s": sorted(html)[runs // 2],
            "gzip_s": sorted(gz)[runs // 2],
            "html_bytes": len(body.plain),
            "html_gzip_bytes": len(body.gzipped),
            "json_bytes": len(data.plain),
            "json_gzip_bytes": len(data.gzipped),
        }
    finally:
        await store.close()


def load_loop(url: str, stop: threading.Event, times: list[float]) -> None:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    while not stop.is_set():
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        times.append(time.perf_counter() - started)


def status_port(log_path: Path, deadline: float) -> int:
    while time.monotonic() < deadline:
        for line in log_path.read_bytes().splitlines():
            if b'"status_page_listening"' in line:
                return int(json.loads(line)["address"].rpartition(":")[2])
        time.sleep(0.2)
    msg = "no status_page_listening line"
    raise RuntimeError(msg)


def daemon(state_file: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server = start_aiohttp_server(1, procs)
        config = work / "monitor.yaml"
        config.write_text(config_text(args.targets, server.base_url, args.interval))
        log_path = work / "daemon.log"
        with log_path.open("wb") as log:
            command = [sys.executable, "-m", "monitor", "run", "--config", str(config)]
            command += ["--listen", "127.0.0.1:0", "--status-listen", "127.0.0.1:0"]
            command += ["--state-file", str(state_file), "--log-format", "json"]
            proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=work,
                env=daemon_env(None),
                start_new_session=True,
            )
        procs.append(proc)
        wait_startup(log_path, time.monotonic() + 120, procs)
        port = status_port(log_path, time.monotonic() + 30)
        url = f"http://127.0.0.1:{port}/status"
        time.sleep(max(args.interval, 10) * 2)  # the first round is over
        quiet = (time.time(), time.time() + args.phase)
        time.sleep(args.phase)
        stop, times = threading.Event(), []
        clients = [
            threading.Thread(target=load_loop, args=(url, stop, times)) for _ in range(args.clients)
        ]
        loaded = (time.time(), time.time() + args.phase)
        for c in clients:
            c.start()
        time.sleep(args.phase)
        stop.set()
        for c in clients:
            c.join()
        time.sleep(6)  # the last checks' lines
        stop_daemon(proc, 20)
        out = {}
        for key, (t0, t1) in (("quiet", quiet), ("loaded", loaded)):
            stats = read_log(log_path, t0, t1, [])
            out[key] = {
                "checks": stats.window_checks,
                "failed": stats.window_failed,
                "p50": percentile(stats.lateness, 50),
                "p99": percentile(stats.lateness, 99),
                "max": stats.lateness[-1] if stats.lateness else 0.0,
            }
        times.sort()
        out["loads"] = len(times)
        out["load_p50_s"] = percentile(times, 50)
        out["load_p99_s"] = percentile(times, 99)
        return out
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill_group(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--phase", type=float, default=60.0, help="seconds of each phase")
    parser.add_argument("--clients", type=int, default=4, help="loading /status at once")
    parser.add_argument("--runs", type=int, default=5, help="renderings to take the median of")
    parser.add_argument("--skip-daemon", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        state_file = work / "state.db"
        started = time.perf_counter()

        async def history() -> None:
            store = await open_store(str(state_file))
            try:
                await write(store, args.targets)
            finally:
                await store.close()

        asyncio.run(history())
        took_s, size_mib = time.perf_counter() - started, state_file.stat().st_size / 2**20
        print(f"history of a year written in {took_s:.0f} s, {size_mib:.0f} MiB", flush=True)
        r = asyncio.run(in_process(state_file, args.targets, args.runs))
        ms = {k: v * 1000 for k, v in r.items() if k.endswith("_s")}
        kib = {k: v / 1024 for k, v in r.items() if k.endswith("_bytes")}
        print(f"targets {args.targets}, incidents of 90 days read {r['incidents_read']}")
        print(f"store read: first {ms['first_read_s']:.0f} ms, later {ms['later_read_s']:.0f} ms")
        print(
            f"first render {ms['first_build_s'] + ms['first_html_s']:.0f} ms"
            f" (model {ms['first_build_s']:.0f} ms, HTML {ms['first_html_s']:.0f} ms);"
            f" later ones {ms['render_s']:.0f} ms (model {ms['build_s']:.0f} ms,"
            f" HTML {ms['html_s']:.0f} ms), gzip {ms['gzip_s']:.0f} ms (medians of {args.runs})"
        )
        print(
            f"later ones with every target's latency of the current hour new (the daemon):"
            f" {ms['new_latency_render_s']:.0f} ms"
        )
        print(
            f"HTML {kib['html_bytes']:.0f} KiB ({kib['html_gzip_bytes']:.0f} KiB gzipped),"
            f" JSON {kib['json_bytes']:.0f} KiB ({kib['json_gzip_bytes']:.0f} KiB gzipped)"
        )
        if args.skip_daemon:
            return
        d = daemon(state_file, work, args)
        print(
            f"daemon: {args.targets} targets every {args.interval:g}s, phases of {args.phase:g}s,"
            f" {args.clients} clients loading /status: {d['loads']} loads,"
            f" p50 {d['load_p50_s'] * 1000:.1f} ms, p99 {d['load_p99_s'] * 1000:.1f} ms"
        )
        for key in ("quiet", "loaded"):
            q = {k: v * 1000 for k, v in d[key].items() if k in ("p50", "p99", "max")}
            print(
                f"  {key:6} checks {d[key]['checks']} failed {d[key]['failed']} lateness"
                f" p50 {q['p50']:.1f} ms p99 {q['p99']:.1f} ms max {q['max']:.1f} ms"
            )


if __name__ == "__main__":
    main()
