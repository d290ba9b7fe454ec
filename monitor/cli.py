"""``uptime-monitor``: a thin layer over :func:`monitor.service.run` and one-shot commands.

Flags override ``MONITOR_*`` environment variables, which override the defaults. Exit codes:
0 success, 1 a check failed (``check``) or the daemon could not start, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from monitor import __version__

if TYPE_CHECKING:
    from pydantic import ValidationError

    from monitor.checks import CheckResult
    from monitor.config import MonitorFile
    from monitor.settings import Settings

# The same codes as monitor.service's, here so that no command but `run` imports the service.
EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
# Shown in the help, which imports nothing else; a test holds them equal to Settings' defaults.
HELP_DEFAULTS = {
    "listen": "127.0.0.1:9834",
    "max_concurrency": "100",
    "check_max_concurrency": "1000",
    "shutdown_grace_s": "10",
    "state_file": "./monitor-state.db",
}
# `check --target` lists at most this many of the names that exist.
_SHOWN_NAMES = 20
# Files `check` keeps open besides one socket per check: the interpreter's, DNS lookups' (up to
# one per default-executor thread), the config.
_SPARE_FILES = 100


def _parser() -> argparse.ArgumentParser:
    """Each command gets only the flags it uses."""
    parser = argparse.ArgumentParser(
        prog="uptime-monitor", description="Uptime monitor daemon with Prometheus metrics."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    daemon = commands.add_parser("run", help="run the daemon")
    once = commands.add_parser("check", help="check every target once")
    validate = commands.add_parser("validate", help="validate the config file")
    commands.add_parser("schema", help="print the JSON Schema of the config file")
    report = commands.add_parser("report", help="uptime, incidents and latency per target")
    from monitor.maintenance_cli import add_parser as add_maintenance

    add_maintenance(commands)

    for command in (daemon, once, validate, report):
        command.add_argument("--config", "-c", help="the YAML target file (MONITOR_CONFIG)")
    for command, default in ((daemon, "max_concurrency"), (once, "check_max_concurrency")):
        command.add_argument(
            "--max-concurrency",
            type=int,
            help=f"checks at once (MONITOR_MAX_CONCURRENCY, {HELP_DEFAULTS[default]})",
        )
    daemon.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        help="auto: console on a TTY, JSON lines otherwise (MONITOR_LOG_FORMAT, auto)",
    )
    daemon.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="(MONITOR_LOG_LEVEL, info)",
    )
    daemon.add_argument(
        "--listen", help=f"HOST:PORT for /metrics (MONITOR_LISTEN, {HELP_DEFAULTS['listen']})"
    )
    daemon.add_argument(
        "--state-file",
        help=f"SQLite state file (MONITOR_STATE_FILE, {HELP_DEFAULTS['state_file']})",
    )
    daemon.add_argument(
        "--state",
        help="a SQLite file, or a postgresql:// URL to run as one of a fleet (MONITOR_STATE)",
    )
    daemon.add_argument(
        "--location",
        help="where this instance checks from (MONITOR_LOCATION, default)",
    )
    daemon.add_argument(
        "--instance",
        help="this instance's name, unique in the fleet (MONITOR_INSTANCE, the host name)",
    )
    daemon.add_argument(
        "--fleet-ttl",
        dest="fleet_ttl",
        help="how long a silent instance keeps its share (MONITOR_FLEET_TTL, 15s)",
    )
    daemon.add_argument(
        "--shutdown-grace",
        type=float,
        dest="shutdown_grace_s",
        help="seconds in-flight checks may finish on stop "
        f"(MONITOR_SHUTDOWN_GRACE_S, {HELP_DEFAULTS['shutdown_grace_s']})",
    )
    daemon.add_argument(
        "--web-config",
        help="exporter-toolkit web config: TLS and basic auth (MONITOR_WEB_CONFIG, none)",
    )
    daemon.add_argument(
        "--web-enable-lifecycle",
        action="store_true",
        default=None,
        help="allow POST /-/reload (MONITOR_WEB_ENABLE_LIFECYCLE, off: 403)",
    )
    daemon.add_argument(
        "--status-listen",
        help="HOST:PORT serving only the status page, read-only (MONITOR_STATUS_LISTEN, none)",
    )
    once.add_argument("--target", "-t", action="append", default=[], help="only this target")
    once.add_argument("--format", choices=["table", "json"], default="table")
    report.add_argument(
        "--state", help="the state `run` writes: a SQLite file or postgresql:// URL"
    )
    report.add_argument("--state-file", help="SQLite state file (MONITOR_STATE_FILE)")
    report.add_argument("--since", help="the window ending now, e.g. 7d (default 30d)")
    report.add_argument("--from", dest="start", metavar="DATE", help="ISO 8601 date or time, UTC")
    report.add_argument("--to", dest="end", metavar="DATE", help="a date: to its end (default now)")
    report.add_argument("--target", "-t", action="append", default=[], help="only this target")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    return parser


# Each command imports what it needs when it runs (PLC0415 is off for this module): `--help`
# needs none of it, `validate` no HTTP client, and only `run` the service.
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "maintenance":
        from monitor.maintenance_cli import main as maintenance

        return maintenance(args)
    if args.command == "schema":
        from monitor.config import json_schema

        print(json.dumps(json_schema(), indent=2, sort_keys=True))
        return EXIT_OK

    from pydantic import ValidationError

    try:
        settings = _settings(args)
    except ValidationError as exc:
        print(f"uptime-monitor: invalid setting: {_settings_problem(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "run":
        from monitor.service import run

        return run(settings)

    from monitor.loader import ConfigError, load_config

    try:
        config = load_config(settings.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "validate":
        count = len(config.targets)
        print(f"{settings.config}: ok, {count} target{'' if count == 1 else 's'}")
        return EXIT_OK
    if args.command == "report":
        from monitor.report import main as report

        return report(
            config,
            settings.state_setting,
            since=args.since,
            start=args.start,
            end=args.end,
            targets=args.target,
            fmt=args.format,
        )
    return _check_once(config, settings, args.target, args.format)


def _settings(args: argparse.Namespace) -> Settings:
    from monitor.settings import Settings

    keys = (
        "config",
        "listen",
        "log_format",
        "log_level",
        "max_concurrency",
        "shutdown_grace_s",
        "state_file",
        "state",
        "location",
        "instance",
        "fleet_ttl",
        "web_config",
        "web_enable_lifecycle",
        "status_listen",
    )
    overrides: dict[str, Any] = {
        key: getattr(args, key) for key in keys if getattr(args, key, None) is not None
    }
    return Settings(**overrides)


def _settings_problem(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        name = ".".join(str(p) for p in error["loc"])
        variable = f"MONITOR_{str(error['loc'][0]).upper()}"
        if error["type"] == "too_short":  # only the buckets have a minimum length
            message = "at least one bucket is needed"
        else:  # our validators' own words, without pydantic's prefix
            message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{name} ({variable}): {message}")
    return "; ".join(problems)


def _check_once(config: MonitorFile, settings: Settings, names: list[str], fmt: str) -> int:
    import asyncio
    import gc

    from monitor.checks import Checker

    targets = config.targets
    if names:
        unknown = sorted(set(names) - {t.name for t in targets})
        if unknown:
            print(
                f"{settings.config}: no target named {', '.join(unknown)} "
                f"(targets: {_some_names([t.name for t in targets])})",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        targets = tuple(t for t in targets if t.name in names)

    concurrency = _within_open_files(min(settings.check_max_concurrency, len(targets)))

    async def check_all() -> list[CheckResult]:
        async with Checker(concurrency) as checker:
            return await asyncio.gather(*(checker.check(t) for t in targets))

    # What exists now (modules, the config) lives until exit: out of the collector's view, the
    # checks' collections do not walk it, nor does the full collection at exit (1,000 targets:
    # ~70 ms of a ~0.8 s run). As the daemon does after start-up.
    gc.freeze()
    # 1,000 checks in flight are a few hundred thousand short-lived objects: at the default
    # threshold (700) the collector ran ~170 times during them, once over all of them (~50 ms);
    # at 10,000 about 10 times, ~10 ms. Garbage is still collected, only in larger batches.
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
    started = time.perf_counter()
    results = asyncio.run(check_all())
    elapsed_s = time.perf_counter() - started
    from monitor.oneshot import Verdict, table

    verdicts = [Verdict.of(t, r) for t, r in zip(targets, results, strict=True)]
    if fmt == "json":
        rows = [v.as_json() for v in verdicts]
        print(json.dumps({"results": rows, "elapsed_s": round(elapsed_s, 6)}, indent=2))
    else:
        print(table(verdicts, elapsed_s))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILURE


def _within_open_files(concurrency: int) -> int:
    """``concurrency``, or less if the open-file limit cannot hold a socket per check.

    The soft limit (often 1,024, for select(); asyncio uses epoll) is raised as far as needed
    and the hard limit allows; beyond that, checks would fail with "Too many open files".
    """
    import resource

    needed = concurrency + _SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return concurrency
    soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    allowed = max(1, soft - _SPARE_FILES)
    if allowed < concurrency:
        print(
            f"uptime-monitor: {allowed} checks at once, not {concurrency}: "
            f"the open-file limit is {soft}",
            file=sys.stderr,
        )
    return min(concurrency, allowed)


def _some_names(names: list[str]) -> str:
    """The first names and how many more, so that 50,000 targets do not flood the terminal."""
    shown = ", ".join(names[:_SHOWN_NAMES])
    more = len(names) - _SHOWN_NAMES
    return f"{shown} ... and {more} more" if more > 0 else shown
