"""`check`'s report: verdicts as the daemon judges them, readable causes, aligned columns."""

from __future__ import annotations

from servers import TLSCerts, serve_app
from test_checks import app_with, hello

from monitor.checks import Checker, CheckResult
from monitor.config import Target
from monitor.oneshot import Verdict, duration, readable, table

T0 = 1_700_000_000.0


def _result(name: str, **fields: object) -> CheckResult:
    base: dict[str, object] = {
        "target": name,
        "ok": True,
        "reason": "ok",
        "status": 200,
        "duration_s": 0.012,
        "started_at": T0,
    }
    return CheckResult(**{**base, **fields})  # type: ignore[arg-type]


class TestVerdict:
    def test_warnings_are_judged_as_the_daemon_judges_them(self) -> None:
        """A pass slower than warn_latency, or with a certificate expiring within
        expiry_warning, is a warning (the daemon's degraded), with the daemon's words."""
        slow = Target(name="slow", url="http://127.0.0.1/", expect={"warn_latency": "100ms"})
        cert = Target(name="cert", url="https://127.0.0.1/")
        verdicts = [
            Verdict.of(slow, _result("slow", duration_s=0.25)),
            Verdict.of(cert, _result("cert", tls_expiry_ts=T0 + 86400 * 3 + 0.012)),
        ]
        assert [(v.state, v.detail) for v in verdicts] == [
            ("warn", "slower than warn_latency 0.1s (0.250s)"),
            ("warn", "certificate expires in 3.0 days"),
        ]
        assert verdicts[1].as_json() == {
            "target": "cert",
            "ok": True,
            "state": "warn",
            "reason": "ok",
            "status": 200,
            "duration_s": 0.012,
            "error": "",
            "warning": "certificate expires in 3.0 days",
            "tls_expiry": "2023-11-17T22:13:20Z",
        }


class TestTable:
    def test_columns_align_and_causes_wrap_whole(self) -> None:
        """Long durations keep the columns aligned; a long cause is wrapped, never cut."""
        target = Target(name="a", url="http://127.0.0.1/")
        cause = "status 503, expected 2xx, 3xx " * 4
        verdicts = [
            Verdict.of(target, _result("a", duration_s=0.004)),
            Verdict.of(
                target,
                _result(
                    "long-name",
                    ok=False,
                    reason="status",
                    status=503,
                    duration_s=12.5,
                    error=cause.strip(),
                ),
            ),
        ]
        assert table(verdicts, 12.6, width=60).splitlines() == [
            "TARGET     STATE  STATUS  REASON    TIME",
            "a          up     200     ok        4 ms",
            "long-name  down   503     status  12.5 s",
            "    status 503, expected 2xx, 3xx status 503, expected 2xx,",
            "    3xx status 503, expected 2xx, 3xx status 503, expected",
            "    2xx, 3xx",
            "2 checked, 1 failed in 12.60s",
        ]

    def test_durations(self) -> None:
        """Milliseconds under a second, then seconds with fewer decimals as they grow."""
        assert [duration(s) for s in (0.0004, 0.95, 1.5, 12.25)] == [
            "0 ms",
            "950 ms",
            "1.50 s",
            "12.2 s",
        ]


class TestReadable:
    async def test_an_untrusted_certificate_reads_as_one_phrase(self, tls_certs: TLSCerts) -> None:
        """aiohttp's nested certificate error becomes 'certificate: <what is wrong>'."""
        async with serve_app(app_with(hello=hello), tls_certs.valid) as url, Checker(1) as checker:
            result = await checker.check(Target(name="t", url=f"{url}/hello"))
        assert (result.reason, readable(result.error)) == (
            "tls",
            "certificate: unable to get local issuer certificate",
        )

    def test_refused_and_other_errors(self) -> None:
        """A refused connection names the address; anything else is left whole."""
        refused = (
            "Cannot connect to host 127.0.0.1:1 ssl:default [Connect call failed ('127.0.0.1', 1)]"
        )
        assert readable(refused) == "connection refused by 127.0.0.1:1"
        assert readable("status 500, expected 2xx") == "status 500, expected 2xx"
