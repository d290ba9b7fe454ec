"""ws:// and wss:// checks (monitor.probes.ws) against a real aiohttp WebSocket server on
127.0.0.1: every reason, the reply rule, phases, headers, TLS (verification, expiry, client
certificates) and the ws options in the config."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import textwrap
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from probing import target
from servers import TLSCerts, WebSocketSeen, closed_port, serve_app, stream_server, websocket_app

from monitor.checks import Checker, phases_of
from monitor.config import Target
from monitor.loader import ConfigError, parse_config
from monitor.probeoptions import WS

WS_PHASES = ("resolve", "connect", "tls", "handshake", "response")


@pytest.fixture
def seen() -> WebSocketSeen:
    return WebSocketSeen()


@pytest.fixture
async def ws_url(seen: WebSocketSeen) -> AsyncIterator[str]:
    """ws://127.0.0.1:<port> of :func:`servers.websocket_app`."""
    async with serve_app(websocket_app(seen)) as base:
        yield base.replace("http://", "ws://")


@pytest.fixture
async def wss_url(seen: WebSocketSeen, tls_certs: TLSCerts) -> AsyncIterator[str]:
    """wss://127.0.0.1:<port> of :func:`servers.websocket_app`, the valid certificate."""
    async with serve_app(websocket_app(seen), tls_certs.valid) as base:
        yield base.replace("https://", "wss://")


class TestHandshake:
    async def test_handshake_only(self, checker: Checker, ws_url: str) -> None:
        """Without ws options the upgrade is enough: ok, status 101, no expiry; the ws phases
        are reported, connect and handshake > 0, the others 0 (an IP address is not
        resolved, ws:// has no TLS, nothing is sent), and they fit in the duration."""
        before = time.time()
        result = await checker.check(target(f"{ws_url}/silent"))
        assert (result.target, result.ok, result.reason, result.status) == ("t", True, "ok", 101)
        assert (result.error, result.tls_expiry_ts) == ("", None)
        assert before <= result.started_at <= time.time()
        assert tuple(result.phases_s) == WS_PHASES == phases_of("ws")
        assert result.phases_s["connect"] > 0
        assert result.phases_s["handshake"] > 0
        assert [result.phases_s[p] for p in ("resolve", "tls", "response")] == [0, 0, 0]
        assert sum(result.phases_s.values()) <= result.duration_s

    async def test_headers_go_with_the_upgrade(
        self, checker: Checker, ws_url: str, seen: WebSocketSeen
    ) -> None:
        """headers (an auth token, a subprotocol) are sent in the upgrade request, with the
        monitor's User-Agent; the path and query reach the server as written."""
        result = await checker.check(
            target(
                f"{ws_url}/silent?room=1",
                headers={"Authorization": "Bearer s3cret", "Sec-WebSocket-Protocol": "chat"},
            )
        )
        assert result.reason == "ok"
        (headers,) = seen.headers
        assert headers["Authorization"] == "Bearer s3cret"
        assert headers["Sec-WebSocket-Protocol"] == "chat"
        assert headers["User-Agent"].startswith("uptime-monitor/")
        assert headers["Upgrade"] == "websocket"

    @pytest.mark.parametrize(
        ("path", "status", "error"),
        [
            (
                "/forbidden",
                403,
                "answered 403 Forbidden to the WebSocket upgrade, not 101 Switching Protocols",
            ),
            (
                "/plain",
                200,
                "answered 200 OK to the WebSocket upgrade, not 101 Switching Protocols",
            ),
        ],
    )
    async def test_an_answer_other_than_101(
        self, checker: Checker, ws_url: str, path: str, status: int, error: str
    ) -> None:
        """A plain HTTP answer instead of an upgrade is reason status, with its status."""
        result = await checker.check(target(f"{ws_url}{path}"))
        assert (result.ok, result.reason, result.status, result.error) == (
            False,
            "status",
            status,
            error,
        )
        assert result.phases_s["handshake"] > 0

    async def test_a_redirect_is_not_followed(
        self, checker: Checker, ws_url: str, seen: WebSocketSeen
    ) -> None:
        """A 302 is the answer, as browsers take it: reason status 302, where it points; the
        target's headers never reach the place it points to."""
        result = await checker.check(target(f"{ws_url}/moved", headers={"X-Key": "k"}))
        assert (result.reason, result.status, result.error) == (
            "status",
            302,
            "answered 302 Found to the WebSocket upgrade, not 101 Switching Protocols "
            "(Location: /ping)",
        )
        assert len(seen.headers) == 1

    async def test_a_101_that_is_not_a_websocket(self, checker: Checker) -> None:
        """A 101 without a valid Sec-WebSocket-Accept is not a WebSocket: reason protocol."""

        async def fake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n"
            )
            await writer.drain()
            await reader.read()

        async with stream_server(fake) as port:
            result = await checker.check(target(f"ws://127.0.0.1:{port}/"))
        assert (result.reason, result.status, result.error) == (
            "protocol",
            101,
            "answered 101 without a valid WebSocket handshake: Invalid challenge response",
        )

    async def test_refused(self, checker: Checker) -> None:
        """A closed port is refused: reason connect, in tcp://'s words."""
        port = closed_port()
        result = await checker.check(target(f"ws://127.0.0.1:{port}/"))
        assert (result.ok, result.reason, result.status) == (False, "connect", 0)
        assert result.error == f"Connection refused while connecting to 127.0.0.1:{port}"

    async def test_dns(self, checker: Checker) -> None:
        """A name under .invalid never resolves: reason dns; only resolve has time."""
        result = await checker.check(target("wss://no-such-host.invalid/ws", timeout=5))
        assert (result.reason, result.status) == ("dns", 0)
        assert re.fullmatch(r"cannot resolve no-such-host\.invalid: [^\n]+", result.error)
        assert [result.phases_s[p] for p in WS_PHASES[1:]] == [0, 0, 0, 0]

    async def test_a_name_is_resolved(self, checker: Checker, ws_url: str) -> None:
        """localhost is resolved (resolve > 0) in the family ip_version asks for: 6 finds
        no address for it here (reason dns)."""
        url = ws_url.replace("127.0.0.1", "localhost")
        by_name = await checker.check(target(f"{url}/silent"))
        only_6 = await checker.check(target(f"{url}/silent", ip_version=6))
        assert by_name.reason == "ok"
        assert by_name.phases_s["resolve"] > 0
        assert only_6.reason == "dns"

    async def test_silent_before_the_answer(self, checker: Checker) -> None:
        """A server that never answers the upgrade times out in the handshake phase."""

        async def mute(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
            await reader.read()

        async with stream_server(mute) as port:
            result = await checker.check(target(f"ws://127.0.0.1:{port}/", timeout="300ms"))
        assert (result.reason, result.status, result.error) == (
            "timeout",
            0,
            "timed out waiting for the answer to the upgrade",
        )
        assert result.phases_s["handshake"] > 0.1  # the failed phase keeps its time

    async def test_closed_before_the_answer(self, checker: Checker) -> None:
        """A server that hangs up on the upgrade request is reason connect, as for HTTP."""

        async def hang_up(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")

        async with stream_server(hang_up) as port:
            result = await checker.check(target(f"ws://127.0.0.1:{port}/"))
        assert (result.reason, result.error) == ("connect", "Server disconnected")


class TestReply:
    async def test_send_and_expect(
        self, checker: Checker, ws_url: str, seen: WebSocketSeen
    ) -> None:
        """ws.send reaches the server as a text message; the reply matches: ok, response
        timed."""
        result = await checker.check(
            target(f"{ws_url}/ping", ws={"send": '{"op": "ping"}', "expect": r"^\+PONG$"})
        )
        assert (result.reason, result.status, result.error) == ("ok", 101, "")
        assert seen.messages == ['{"op": "ping"}']
        assert 0 < result.phases_s["response"] < result.duration_s

    async def test_closed_politely_after_a_check(
        self, checker: Checker, ws_url: str, seen: WebSocketSeen
    ) -> None:
        """A passing check ends with a close frame (1000), not a dropped connection the
        server would log as an abnormal closure (1006)."""
        result = await checker.check(target(f"{ws_url}/ping", ws={"send": "a", "expect": "PONG"}))
        await asyncio.wait_for(seen.ended.wait(), 5)
        assert (result.reason, seen.close_codes) == ("ok", [1000])

    async def test_expect_alone_reads_what_the_server_says(
        self, checker: Checker, ws_url: str
    ) -> None:
        """Without ws.send the server's own first message is matched."""
        result = await checker.check(target(f"{ws_url}/hello", ws={"expect": "^hello$"}))
        assert result.reason == "ok"

    async def test_a_binary_message_is_matched_as_bytes(
        self, checker: Checker, ws_url: str
    ) -> None:
        """A binary message is searched as it is: bytes that are not UTF-8 match too."""
        result = await checker.check(target(f"{ws_url}/binary", ws={"expect": "^\\x00\\x01PONG"}))
        assert (result.reason, result.error) == ("ok", "")

    async def test_messages_are_read_until_one_matches(self, checker: Checker, ws_url: str) -> None:
        """The first message (the echo) does not match, the server's next does not come:
        the timeout ends a reply that never matched, reason response, showing the last."""
        result = await checker.check(
            target(f"{ws_url}/echo", timeout="300ms", ws={"send": "hi", "expect": "^bye"})
        )
        assert (result.reason, result.status, result.error) == (
            "response",
            101,
            "reply does not match '^bye' within the timeout: 7 bytes, b'echo:hi'",
        )
        assert result.phases_s["response"] > 0.1  # the failed phase keeps its time

    async def test_a_wrong_reply(self, checker: Checker, ws_url: str, seen: WebSocketSeen) -> None:
        """-ERR instead of +PONG, then silence: reason response."""
        seen.reply = "-ERR unknown"
        result = await checker.check(
            target(f"{ws_url}/ping", timeout="300ms", ws={"send": "PING", "expect": "PONG"})
        )
        assert (result.reason, result.error) == (
            "response",
            "reply does not match 'PONG' within the timeout: 12 bytes, b'-ERR unknown'",
        )

    async def test_silence_is_a_timeout(self, checker: Checker, ws_url: str) -> None:
        """Nothing received within the timeout is reason timeout, in the response phase."""
        result = await checker.check(
            target(f"{ws_url}/silent", timeout="300ms", ws={"send": "x", "expect": "y"})
        )
        assert (result.reason, result.status, result.error) == (
            "timeout",
            101,
            "timed out waiting for a reply",
        )
        assert 0.3 <= result.duration_s < 2.0
        assert result.phases_s["response"] > 0.1  # the failed phase keeps its time

    async def test_closed_at_once(self, checker: Checker, ws_url: str) -> None:
        """A server that closes before any message is reason connect, as a tcp:// server
        that closes; the close frame's code and reason are shown."""
        result = await checker.check(target(f"{ws_url}/close", ws={"expect": "x"}))
        assert (result.reason, result.status, result.error) == (
            "connect",
            101,
            "the server closed the WebSocket (code 1008, 9 bytes, b'bad token') while "
            "waiting for a reply",
        )

    async def test_closed_without_a_frame_after_a_message(
        self, checker: Checker, ws_url: str
    ) -> None:
        """A dropped connection before any reply is connect too, without a frame to show."""
        result = await checker.check(target(f"{ws_url}/hangup", ws={"send": "x", "expect": "y"}))
        assert (result.reason, result.error) == (
            "connect",
            "the server closed the connection while waiting for a reply",
        )

    async def test_closed_after_a_wrong_reply(self, checker: Checker) -> None:
        """Something received, then the server closes: reason response, showing it."""

        async def once(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_str("-ERR")
            await ws.close()
            return ws

        app = web.Application()
        app.router.add_get("/", once)
        async with serve_app(app) as base:
            result = await checker.check(
                target(base.replace("http", "ws") + "/", ws={"expect": "OK"})
            )
        assert (result.reason, result.error) == (
            "response",
            "reply does not match 'OK': the server closed the WebSocket (code 1000) after "
            "4 bytes, b'-ERR'",
        )

    @pytest.mark.parametrize(
        ("max_body_bytes", "error"),
        [
            (
                2500,
                "reply does not match 'never' in its first 2500 bytes: 1000 bytes, "
                f"{b'x' * 80!r}...",
            ),
            (
                500,
                "reply does not match 'never' in its first 500 bytes: a message longer than that",
            ),
        ],
    )
    async def test_read_up_to_max_body_bytes(
        self, checker: Checker, ws_url: str, max_body_bytes: int, error: str
    ) -> None:
        """An endless stream of messages is read up to max_body_bytes, then judged: reason
        response; one message longer than that is refused as soon as it is seen."""
        result = await checker.check(
            target(f"{ws_url}/flood", max_body_bytes=max_body_bytes, ws={"expect": "never"})
        )
        assert (result.reason, result.error) == ("response", error)

    async def test_a_server_that_never_stops_does_not_hold_the_close(
        self, checker: Checker, ws_url: str
    ) -> None:
        """The close after a passing check waits at most a second for the server's close
        frame, however many messages keep coming instead."""
        started = time.perf_counter()
        check = checker.check(target(f"{ws_url}/flood", ws={"expect": "x{1000}"}))
        result = await asyncio.wait_for(check, 10)  # not forever, should it regress
        assert result.reason == "ok"
        assert time.perf_counter() - started < 3.0

    async def test_send_without_expect_does_not_wait(
        self, checker: Checker, ws_url: str, seen: WebSocketSeen
    ) -> None:
        """ws.send alone passes once sent, long before the timeout."""
        result = await checker.check(target(f"{ws_url}/silent", ws={"send": "x"}))
        assert result.reason == "ok"
        assert result.duration_s < 1.0

    async def test_max_latency(self, checker: Checker) -> None:
        """A reply slower than expect.max_latency fails with reason latency."""

        async def slow(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await asyncio.sleep(0.2)
            await ws.send_str("hello")
            await ws.receive()
            return ws

        app = web.Application()
        app.router.add_get("/", slow)
        async with serve_app(app) as base:
            url = base.replace("http", "ws") + "/"
            too_slow = await checker.check(
                target(url, ws={"expect": "hello"}, expect={"max_latency": "50ms"})
            )
            fine = await checker.check(
                target(url, ws={"expect": "hello"}, expect={"max_latency": "5s"})
            )
        assert (too_slow.ok, too_slow.reason) == (False, "latency")
        assert too_slow.error == "slower than max_latency 0.05s"
        assert fine.reason == "ok"

    async def test_an_url_that_skipped_validation(self, checker: Checker) -> None:
        """A target built without validation still gives a result, never an exception."""
        result = await checker.check(Target.model_construct(name="odd", url="ws://[::1"))
        assert (result.ok, result.reason, result.error) == (
            False,
            "error",
            "ValueError: Invalid IPv6 URL",
        )


class TestWss:
    async def test_verified_with_expiry(
        self, checker: Checker, wss_url: str, tls_certs: TLSCerts
    ) -> None:
        """A verified wss handshake is ok, times tls and reports the leaf's expiry; send and
        expect talk over it; the localhost name is verified."""
        result = await checker.check(
            target(
                f"{wss_url.replace('127.0.0.1', 'localhost')}/echo",
                tls={"ca_file": tls_certs.ca_pem},
                ws={"send": "hi", "expect": "^echo:hi$"},
            )
        )
        assert (result.reason, result.status, result.error) == ("ok", 101, "")
        assert result.tls_expiry_ts == tls_certs.valid_not_after.timestamp()
        assert all(result.phases_s[p] > 0 for p in WS_PHASES)

    async def test_untrusted(self, checker: Checker, wss_url: str) -> None:
        """Without ca_file the system's CAs do not trust the test CA: reason tls."""
        result = await checker.check(target(f"{wss_url}/silent"))
        assert (result.reason, result.status, result.tls_expiry_ts) == ("tls", 0, None)
        assert result.error == "certificate verify failed: unable to get local issuer certificate"

    async def test_expired(
        self, checker: Checker, seen: WebSocketSeen, tls_certs: TLSCerts
    ) -> None:
        """An expired certificate fails with verify (tls); with verify: false the check
        passes and still reports the expiry, in the past."""
        async with serve_app(websocket_app(seen), tls_certs.expired) as base:
            url = base.replace("https://", "wss://") + "/silent"
            verified = await checker.check(target(url, tls={"ca_file": tls_certs.ca_pem}))
            unverified = await checker.check(target(url, tls={"verify": False}))
        assert (verified.reason, verified.error) == (
            "tls",
            "certificate verify failed: certificate has expired",
        )
        assert (unverified.reason, unverified.status) == ("ok", 101)
        expired_not_after = tls_certs.valid_not_after - dt.timedelta(days=31)
        assert unverified.tls_expiry_ts == expired_not_after.timestamp()

    async def test_a_plain_server(self, checker: Checker, ws_url: str) -> None:
        """wss to a server that does not speak TLS fails the handshake: reason tls."""
        result = await checker.check(target(ws_url.replace("ws://", "wss://") + "/silent"))
        assert result.reason == "tls"
        assert result.error.startswith("[SSL: ")

    async def test_silent_in_the_tls_handshake(self, checker: Checker) -> None:
        """A server that never answers the ClientHello times out in the tls phase (verify:
        false: no CA store is loaded first, which takes a while once)."""

        async def mute(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
            await reader.read()

        async with stream_server(mute) as port:
            result = await checker.check(
                target(f"wss://127.0.0.1:{port}/", timeout="300ms", tls={"verify": False})
            )
        assert (result.reason, result.error) == (
            "timeout",
            "timed out doing the TLS handshake with 127.0.0.1",
        )
        assert result.phases_s["tls"] > 0.1  # the failed phase keeps its time
        assert result.phases_s["connect"] > 0

    @pytest.mark.parametrize(("client", "reason"), [("client_pem", "ok"), (None, "connect")])
    async def test_a_server_that_requires_a_client_certificate(
        self,
        checker: Checker,
        seen: WebSocketSeen,
        tls_certs: TLSCerts,
        client: str | None,
        reason: str,
    ) -> None:
        """tls.cert_file presents the client certificate; without one, the server refuses
        the connection (under TLS 1.3 after the client's handshake: aiohttp sees it closed
        when it reads the answer, connect as for https)."""
        tls = {"ca_file": tls_certs.ca_pem}
        if client is not None:
            tls["cert_file"] = getattr(tls_certs, client)
        async with serve_app(websocket_app(seen), tls_certs.mtls) as base:
            result = await checker.check(
                target(base.replace("https://", "wss://") + "/echo", tls=tls, ws={"send": "a"})
            )
        assert result.reason == reason


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "m.yaml", {})
    return info.value.problems


class TestConfig:
    @pytest.mark.parametrize(
        "url", ["ws://a.example/", "WSS://a.example:8443/x?y=1", "ws://[::1]:80", "ws://u:p@a"]
    )
    def test_the_scheme_picks_ws(self, url: str) -> None:
        """ws and wss, in any case, with a path, a query, a port or user info, are type ws."""
        config = parse_config(f"targets:\n  - name: a\n    url: '{url}'\n", "m.yaml", {})
        assert (config.targets[0].url, config.targets[0].type) == (url, "ws")

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("ws://", "'ws://' is not a ws:// or wss:// URL with a host"),
            ("wss:///path", "'wss:///path' is not a ws:// or wss:// URL with a host"),
            ("ws://a.example:70000/", "port 70000 is out of range"),
        ],
    )
    def test_a_ws_url_needs_a_host(self, url: str, message: str) -> None:
        """A ws URL without a host, or with a port out of range, is a problem at its line."""
        assert problems(f"targets:\n  - name: a\n    url: '{url}'\n") == [
            f"m.yaml:3: targets[0].url: {message}"
        ]

    def test_options_of_another_type_on_a_ws_target(self) -> None:
        """tcp and HTTP-only options on a ws target, ws on others: problems at their lines;
        headers belong to ws as to http."""
        text = """\
            targets:
              - name: a
                url: wss://a.example/ws
                headers: {Authorization: "Bearer x"}
                method: POST
                tcp: {send: x}
                expect: {status: 101}
              - name: b
                url: tcp://b.example:6379
                ws: {send: x}
              - name: c
                url: https://c.example/
                headers: {X-A: b}
                ws:
                  expect: x
            """
        assert problems(text) == [
            "m.yaml:5: targets[0].method: 'method' is an option of http(s):// targets, "
            "not of ws(s):// ones",
            "m.yaml:6: targets[0].tcp: 'tcp' is an option of tcp:// and tls:// targets, "
            "not of ws(s):// ones",
            "m.yaml:7: targets[0].expect.status: 'status' is an option of http(s):// "
            "targets, not of ws(s):// ones",
            "m.yaml:10: targets[1].ws: 'ws' is an option of ws(s):// targets, not of tcp:// ones",
            "m.yaml:14: targets[2].ws: 'ws' is an option of ws(s):// targets, not of "
            "http(s):// ones",
        ]

    def test_defaults_reach_the_types_that_have_them(self) -> None:
        """headers in defaults reach http and ws targets; ws merges key by key and reaches
        ws targets only; method stays HTTP's."""
        config = parse_config(
            textwrap.dedent(
                """\
                defaults:
                  method: POST
                  headers: {X-A: b}
                  ws: {send: ping}
                targets:
                  - {name: web, url: "https://w.example/"}
                  - {name: sock, url: "wss://s.example/ws", ws: {expect: pong}}
                  - {name: db, url: "tcp://d.example:5432"}
                """
            ),
            "m.yaml",
            {},
        )
        web_, sock, db = config.targets
        assert (web_.headers, web_.ws) == ({"X-A": "b"}, WS())
        assert (sock.headers, sock.method, sock.ws) == (
            {"X-A": "b"},
            "GET",
            WS(send="ping", expect="pong"),
        )
        assert (db.headers, db.ws) == ({}, WS())

    @pytest.mark.parametrize(
        ("ws", "problem"),
        [
            (
                "{expect: 'a{20000}'}",
                "m.yaml:4: targets[0].ws.expect: repetition {20000} is too large: counts may "
                "be at most 10,000",
            ),
            (
                "{expect: '(unclosed'}",
                "m.yaml:4: targets[0].ws.expect: invalid regular expression: missing ), "
                "unterminated subpattern at position 0",
            ),
            (
                "{sned: x}",
                "m.yaml:4: targets[0].ws.sned: unknown key 'sned' (did you mean 'send'?)",
            ),
        ],
    )
    def test_ws_block_problems(self, ws: str, problem: str) -> None:
        """ws.expect is bounded like tcp.expect, and a typo is caught with its line."""
        text = f"targets:\n  - name: a\n    url: ws://a.example/\n    ws: {ws}\n"
        assert problems(text) == [problem]
