"""``uptime-monitor maintenance start|list|end``: ad hoc maintenance windows of the running
daemon, through its API (:mod:`monitor.maintenance_api`).

It talks to the daemon at ``--listen`` / ``MONITOR_LISTEN`` (the setting ``run`` uses; a
wildcard address means this host), over HTTPS with ``--tls`` / ``MONITOR_TLS``, or once a CA
(``--ca-file`` / ``MONITOR_CA_FILE``) or client certificate (``--cert-file``,
``--key-file`` / ``MONITOR_CERT_FILE``, ``MONITOR_KEY_FILE``) is given, and with basic auth
as ``--user`` / ``MONITOR_USER`` with the password from ``MONITOR_PASSWORD`` (never a flag:
flags show in the process list). Exit codes: 0 done, 1 the daemon cannot be reached or
failed (5xx), 2 refused input (4xx, with the daemon's words) or a bad option.

Only the standard library: the command answers in a fraction of a second.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_INPUT = 0, 1, 2
PATH = "/api/v1/maintenance"
DEFAULT_LISTEN = "127.0.0.1:9834"
TIMEOUT_S = 10.0
_TRUE = ("1", "true", "yes", "on")


class Failure(Exception):
    """Said on stderr; ``exit_code`` 1 or 2."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_parser(commands: Any) -> None:
    """The ``maintenance`` command and its actions, on the CLI's subparsers."""
    command = commands.add_parser(
        "maintenance", help="start, list or end maintenance windows of the running daemon"
    )
    actions = command.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="hold the targets' alerts for a while")
    start.add_argument("--target", "-t", action="append", required=True, help="a target name")
    start.add_argument("--for", dest="duration", required=True, help="e.g. 30m, 1h (at most 31d)")
    start.add_argument("--reason", required=True, help="why: shown by list and the API")
    start.add_argument("--start", help="ISO 8601 date-time, UTC unless it has an offset (now)")
    listing = actions.add_parser("list", help="the windows open now and to come")
    listing.add_argument("--format", choices=["table", "json"], default="table")
    end = actions.add_parser("end", help="end the ad hoc windows that hold a target, now")
    end.add_argument("--target", "-t", required=True, help="a target name")
    for action in (start, listing, end):
        action.add_argument(
            "--listen", help=f"the daemon's HOST:PORT (MONITOR_LISTEN, {DEFAULT_LISTEN})"
        )
        action.add_argument(
            "--user", help="basic auth user; password in MONITOR_PASSWORD (MONITOR_USER)"
        )
        action.add_argument("--tls", action="store_true", default=None, help="HTTPS (MONITOR_TLS)")
        action.add_argument("--ca-file", help="CA of the daemon's certificate (MONITOR_CA_FILE)")
        action.add_argument("--cert-file", help="client certificate (MONITOR_CERT_FILE)")
        action.add_argument("--key-file", help="its key (MONITOR_KEY_FILE)")


def main(args: argparse.Namespace) -> int:
    """Run the action; returns the exit code."""
    try:
        client = Client.of(args, os.environ)
        if args.action == "start":
            return _start(client, args)
        if args.action == "list":
            return _list(client, args.format)
        return _end(client, args.target)
    except Failure as exc:
        print(f"uptime-monitor maintenance: {exc}", file=sys.stderr)
        return exc.exit_code


def _start(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "targets": args.target,
        "duration": args.duration,
        "reason": args.reason,
    }
    if args.start is not None:
        body["start"] = args.start
    window = client.call("POST", PATH, body)
    print(
        f"maintenance {window['id']}: {', '.join(window['targets'])} from {window['start']}"
        f" to {window['end']}"
    )
    return EXIT_OK


def _list(client: Client, fmt: str) -> int:
    windows = client.call("GET", PATH)["windows"]
    if fmt == "json":
        print(json.dumps({"windows": windows}, indent=2))
        return EXIT_OK
    rows = [("ID", "SOURCE", "STATE", "START", "END", "TARGETS", "REASON")]
    for w in windows:
        state = "active" if w["active"] else "upcoming"
        rows.append(
            (w["id"], w["source"], state, w["start"], w["end"], ",".join(w["targets"]), w["reason"])
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip())
    return EXIT_OK


def _end(client: Client, target: str) -> int:
    windows = client.call("GET", PATH)["windows"]
    holding = [w for w in windows if target in w["targets"]]
    ours = [w for w in holding if w["source"] == "api"]
    if not ours:
        files = sorted({w["name"] for w in holding})
        why = f"; the target file's window {', '.join(files)} holds it" if files else ""
        msg = f"no ad hoc maintenance window holds {target!r}{why}"
        raise Failure(msg, EXIT_INPUT)
    for window in ours:
        ended = client.call("DELETE", f"{PATH}/{window['id']}")
        print(f"ended maintenance {ended['id']}: {', '.join(ended['targets'])} at {ended['end']}")
    return EXIT_OK


class Client:
    """Requests to the daemon's API; :class:`Failure` for everything that goes wrong."""

    def __init__(self, base: str, headers: dict[str, str], context: Any) -> None:
        self.base = base
        self.headers = headers
        self.context = context

    @classmethod
    def of(cls, args: argparse.Namespace, env: dict[str, str] | Any) -> Client:
        listen = args.listen or env.get("MONITOR_LISTEN") or DEFAULT_LISTEN
        host, port = split_listen(listen)
        ca_file = args.ca_file or env.get("MONITOR_CA_FILE")
        cert_file = args.cert_file or env.get("MONITOR_CERT_FILE")
        key_file = args.key_file or env.get("MONITOR_KEY_FILE")
        tls = bool(args.tls) or env.get("MONITOR_TLS", "").lower() in _TRUE
        tls = tls or bool(ca_file or cert_file)
        headers = {"Accept": "application/json"}
        user = args.user or env.get("MONITOR_USER")
        if user:
            password = env.get("MONITOR_PASSWORD")
            if password is None:
                msg = f"user {user!r} needs its password in MONITOR_PASSWORD"
                raise Failure(msg, EXIT_INPUT)
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        context = _tls_context(ca_file, cert_file, key_file) if tls else None
        shown = f"[{host}]" if ":" in host else host
        return cls(f"{'https' if tls else 'http'}://{shown}:{port}", headers, context)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer of ``method path``; Failure for no answer or an error status."""
        import urllib.error  # noqa: PLC0415 - ~40 ms: only when a request is made
        import urllib.request  # noqa: PLC0415

        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        # The URL is always http(s)://, built above from --listen.
        request = urllib.request.Request(self.base + path, data, headers, method=method)  # noqa: S310
        try:
            opened = urllib.request.urlopen(request, timeout=TIMEOUT_S, context=self.context)  # noqa: S310
            with opened as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            raise _refused(exc.code, exc.read()) from None
        except (OSError, ValueError) as exc:  # URLError, refused, timeout, TLS; not JSON
            reason = getattr(exc, "reason", exc)
            msg = f"cannot reach the daemon at {self.base}: {reason}"
            raise Failure(msg, EXIT_FAILURE) from None


def _refused(status: int, raw: bytes) -> Failure:
    try:
        error = str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        error = raw.decode("utf-8", "replace").strip() or "no reason given"
    if status == 401:
        error = "wrong or missing credentials (set --user or MONITOR_USER, and MONITOR_PASSWORD)"
    code = EXIT_INPUT if 400 <= status < 500 else EXIT_FAILURE
    return Failure(f"the daemon answered {status}: {error}", code)


def split_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT as the daemon's --listen takes it, as a host to connect to and a port; a
    wildcard or empty host is this host (loopback)."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        msg = f"--listen / MONITOR_LISTEN {listen!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})"
        raise Failure(msg, EXIT_INPUT)
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


def _tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> Any:
    import ssl  # noqa: PLC0415

    try:
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        msg = f"cannot load the TLS files: {exc}"
        raise Failure(msg, EXIT_INPUT) from None
    return context
