"""``uptime-monitor``: a thin layer over :func:`monitor.service.run` and one-shot commands.

Flags override ``MONITOR_*`` environment variables, which override the defaults. Exit codes:
0 success, 1 a check failed (``check``) or the daemon could not start, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from monitor import __version__
from monitor.checks import Checker, CheckResult
from monitor.config import MonitorFile, json_schema
from monitor.loader import ConfigError, load_config
from monitor.service import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, run
from monitor.settings import DEFAULT_PORT, Settings


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", help="the YAML target file (MONITOR_CONFIG)")
    common.add_argument(
        "--max-concurrency", type=int, help="checks at once (MONITOR_MAX_CONCURRENCY, 100)"
    )
    common.add_argument("--log-format", choices=["auto", "json", "console"])
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    parser = argparse.ArgumentParser(
        prog="uptime-monitor", description="Uptime monitor daemon with Prometheus metrics."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    daemon = commands.add_parser("run", parents=[common], help="run the daemon")
    daemon.add_argument(
        "--listen", help=f"HOST:PORT for /metrics (MONITOR_LISTEN, 127.0.0.1:{DEFAULT_PORT})"
    )
    daemon.add_argument(
        "--state-file", help="SQLite state file (MONITOR_STATE_FILE, ./monitor-state.db)"
    )
    daemon.add_argument(
        "--shutdown-grace",
        type=float,
        dest="shutdown_grace_s",
        help="seconds in-flight checks may finish on stop (MONITOR_SHUTDOWN_GRACE_S, 10)",
    )
    once = commands.add_parser("check", parents=[common], help="check every target once")
    once.add_argument("--target", "-t", action="append", default=[], help="only this target")
    once.add_argument("--format", choices=["table", "json"], default="table")
    commands.add_parser("validate", parents=[common], help="validate the config file")
    commands.add_parser("schema", help="print the JSON Schema of the config file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(json_schema(), indent=2, sort_keys=True))
        return EXIT_OK
    try:
        settings = _settings(args)
    except ValidationError as exc:
        print(f"uptime-monitor: invalid setting: {_settings_problem(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "run":
        return run(settings)
    try:
        config = load_config(settings.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "validate":
        print(f"{settings.config}: ok, {len(config.targets)} targets")
        return EXIT_OK
    return _check_once(config, settings, args.target, args.format)


def _settings(args: argparse.Namespace) -> Settings:
    keys = (
        "config",
        "listen",
        "log_format",
        "log_level",
        "max_concurrency",
        "shutdown_grace_s",
        "state_file",
    )
    overrides: dict[str, Any] = {
        key: getattr(args, key) for key in keys if getattr(args, key, None) is not None
    }
    return Settings(**overrides)


def _settings_problem(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])} (MONITOR_{str(e['loc'][0]).upper()}): {e['msg']}"
        for e in exc.errors()
    )


def _check_once(config: MonitorFile, settings: Settings, names: list[str], fmt: str) -> int:
    targets = config.targets
    if names:
        unknown = sorted(set(names) - {t.name for t in targets})
        if unknown:
            print(f"{settings.config}: no target named {', '.join(unknown)}", file=sys.stderr)
            return EXIT_CONFIG
        targets = tuple(t for t in targets if t.name in names)

    async def check_all() -> list[CheckResult]:
        async with Checker(settings.max_concurrency) as checker:
            return await asyncio.gather(*(checker.check(t) for t in targets))

    started = time.perf_counter()
    results = asyncio.run(check_all())
    elapsed_s = time.perf_counter() - started
    if fmt == "json":
        rows = [
            {
                "target": r.target,
                "ok": r.ok,
                "reason": r.reason,
                "status": r.status,
                "duration_s": round(r.duration_s, 6),
                "error": r.error,
            }
            for r in results
        ]
        print(json.dumps({"results": rows, "elapsed_s": round(elapsed_s, 6)}, indent=2))
    else:
        print(_table(results, elapsed_s))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILURE


def _table(results: list[CheckResult], elapsed_s: float) -> str:
    header = ("TARGET", "STATUS", "REASON", "TIME", "ERROR")
    rows = [
        (r.target, str(r.status or "-"), r.reason, f"{r.duration_s * 1000:.0f}ms", r.error[:80])
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        + ("  " + row[4] if row[4] else "")
        for row in [header, *rows]
    ]
    failed = sum(not r.ok for r in results)
    lines.append(f"{len(results)} checked, {failed} failed in {elapsed_s:.2f}s")
    return "\n".join(lines)
