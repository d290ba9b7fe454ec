"""Start-up of the command line: whole processes, N runs of each command, median and min wall.

    python tests/bench/bench_startup.py            # 10 runs of each
    python tests/bench/bench_startup.py --runs 30 --importtime validate

Runs ``python -m monitor`` with this interpreter (``sys.executable``) in a temporary directory,
every ``MONITOR_*`` variable of the caller removed:

- ``--help``;
- ``validate`` of a generated file of ``--targets`` (10) targets;
- ``validate`` of a file with three problems (a config error, exit code 2);
- ``check --help`` and ``schema``;
- ``python -c pass``, the floor: the interpreter's own start-up.

It prints figures; it asserts nothing about timing. Exit status 1 if a command did not exit
with the code it should. ``--importtime COMMAND`` prints the 15 slowest imports of one run of
that command (``python -X importtime``), cumulative, in ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BAD = """\
targets:
  - {name: a, url: "http://127.0.0.1:9/", interval: 5s, timeout: 9s}
  - {name: a, url: "ftp://nope/", intervall: 5s}
"""


def commands(work: Path) -> dict[str, tuple[list[str], int]]:
    """name -> (arguments after ``python``, expected exit code)."""
    monitor = ["-m", "monitor"]
    return {
        "python -c pass": (["-c", "pass"], 0),
        "--help": ([*monitor, "--help"], 0),
        "check --help": ([*monitor, "check", "--help"], 0),
        "validate (good file)": ([*monitor, "validate", "-c", str(work / "good.yaml")], 0),
        "validate (config error)": ([*monitor, "validate", "-c", str(work / "bad.yaml")], 2),
        "schema": ([*monitor, "schema"], 0),
    }


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("MONITOR_")}


def time_runs(argv: list[str], code: int, runs: int, cwd: Path) -> tuple[list[float], str]:
    walls: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, *argv],
            cwd=cwd,
            env=env(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        walls.append(time.perf_counter() - t0)
        if proc.returncode != code:
            return walls, f"exit {proc.returncode}, expected {code}: {proc.stderr[-300:]!r}"
    return walls, ""


def importtime(argv: list[str], cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _self, cumulative, name = line.removeprefix("import time:").split("|")
            rows.append((int(cumulative) / 1000, name.rstrip()))
    rows.sort(reverse=True)
    return "\n".join(f"{ms:8.1f} ms  {name}" for ms, name in rows[:15])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=10, help="runs of each command (10)")
    p.add_argument("--targets", type=int, default=10, help="targets in the good file (10)")
    p.add_argument("--importtime", metavar="COMMAND", help="also show the slowest imports of it")
    args = p.parse_args(argv)
    if args.runs < 1 or args.targets < 1:
        print("bench: --runs and --targets must be > 0", file=sys.stderr)
        return 2
    failures = []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        good = "".join(
            f'  - {{name: t{i}, url: "http://127.0.0.1:9/t/{i}"}}\n' for i in range(args.targets)
        )
        (work / "good.yaml").write_text("targets:\n" + good)
        (work / "bad.yaml").write_text(BAD)
        cmds = commands(work)
        if args.importtime is not None and args.importtime not in cmds:
            print(f"bench: --importtime takes one of: {', '.join(cmds)}", file=sys.stderr)
            return 2
        rows = [("command", "median s", "min s", "max s")]
        for name, (cmd, code) in cmds.items():
            walls, problem = time_runs(cmd, code, args.runs, work)
            if problem:
                failures.append(f"{name}: {problem}")
            rows.append(
                (
                    name,
                    f"{statistics.median(walls):.3f}",
                    f"{min(walls):.3f}",
                    f"{max(walls):.3f}",
                )
            )
        slowest = importtime(cmds[args.importtime][0], work) if args.importtime else ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(
        f"{args.runs} runs each, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{args.targets} targets in the good file"
    )
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if slowest:
        print(f"\nslowest imports of {args.importtime} (cumulative):\n{slowest}")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
