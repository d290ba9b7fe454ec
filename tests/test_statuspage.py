"""The status page: its rules (banner, day levels, groups), its model of a scene with history,
config errors, escaping, and the HTTP answers (JSON, badges, gzip, 404s, the read-only port)."""

from __future__ import annotations

import asyncio
import gzip
import json
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from email.message import Message

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from statuspage_scene import DAY, HOSTILE_ERROR, HOSTILE_TITLE, NOW, page, serving

from monitor.history import HOUR_S, Incident
from monitor.loader import ConfigError, parse_config
from monitor.settings import Settings
from monitor.statuspage import model, render
from monitor.statuspage.badges import COLOURS
from monitor.statuspage.model import banner, day_level, percent_text
from monitor.statuspage.web import OFF, StatusPage


# -- rules, by table -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], "unknown"),
        (["unknown", "unknown"], "unknown"),
        (["up", "up", "unknown"], "operational"),
        (["up", "degraded"], "degraded"),
        (["up", "up", "down"], "partial_outage"),
        (["up", "down"], "major_outage"),  # half down
        (["down"], "major_outage"),
        (["up", "up", "up", "down", "degraded"], "partial_outage"),
        (["up", "maintenance"], "maintenance"),
        (["maintenance", "maintenance"], "maintenance"),
        (["degraded", "maintenance"], "degraded"),
        (["down", "maintenance", "maintenance", "up"], "major_outage"),  # 1 of 2 judged
        (["down", "unknown", "up", "up"], "partial_outage"),  # unknown does not count
    ],
)
def test_banner_rule(states: list[str], expected: str) -> None:
    """The banner's rule, first that holds: nothing known, half or more down, any down, any
    degraded, any in maintenance, else operational."""
    assert banner(states) == expected


@pytest.mark.parametrize(
    ("monitored_s", "percent", "degraded_s", "maintenance_s", "expected"),
    [
        (0.0, None, 0.0, 0.0, "none"),
        (0.0, None, 0.0, 3600.0, "maintenance"),
        (86400.0, 100.0, 0.0, 0.0, "up"),
        (86400.0, 100.0, 60.0, 0.0, "degraded"),
        (86400.0, 99.0, 0.0, 0.0, "minor"),
        (86400.0, 98.99, 0.0, 0.0, "partial"),
        (86400.0, 95.0, 0.0, 0.0, "partial"),
        (86400.0, 94.99, 600.0, 0.0, "major"),
        (86400.0, 0.0, 0.0, 0.0, "major"),
    ],
)
def test_day_level(
    monitored_s: float,
    percent: float | None,
    degraded_s: float,
    maintenance_s: float,
    expected: str,
) -> None:
    """A day's colour from its uptime: 100 (degraded apart), >= 99, >= 95, below; none and
    maintenance without monitored time."""
    assert day_level(monitored_s, percent, degraded_s, maintenance_s) == expected


@pytest.mark.parametrize(
    ("percent", "text"),
    [(None, "no data"), (100.0, "100%"), (99.99996, "99.999%"), (99.5, "99.5%"), (0.0, "0%")],
)
def test_percent_is_never_rounded_up(percent: float | None, text: str) -> None:
    """99.99996% reads 99.999%, not 100%: a page must not hide downtime by rounding."""
    assert percent_text(percent) == text


def test_groups_by_name_or_labels_and_hidden_targets() -> None:
    """A target joins a group by name or by having all its labels (several groups are fine);
    without groups all are in one; with groups one in none is not on the page."""
    status, _ = page()
    config = status._config
    layout = config.status_page.layout([(t.name, t.labels) for t in config.targets])
    assert layout == [("Public <API>", ["api", "web"]), ("Data & storage", ["db", "cache"])]
    bare = parse_config(
        "targets: [{name: a, url: 'http://x/'}, {name: b, url: 'http://y/'}]", "f", {}
    )
    assert bare.status_page.layout([("a", {}), ("b", {})]) == [("All services", ["a", "b"])]
    both = parse_config(
        """
targets:
  - {name: a, url: "http://x/", labels: {team: x, env: prod}}
  - {name: b, url: "http://x/", labels: {team: x}}
status_page:
  groups:
    - {name: prod x, labels: {team: x, env: prod}}
    - {name: named, targets: [b, a]}
""",
        "f",
        {},
    )
    targets = [(t.name, t.labels) for t in both.targets]
    assert both.status_page.layout(targets) == [("prod x", ["a"]), ("named", ["a", "b"])]


def test_config_errors_have_lines() -> None:
    """Unknown target names, a group no target is in and an empty group are errors at their
    lines; the rest of the file's problems are reported with them."""
    text = """targets:
  - {name: a, url: "http://x/", labels: {team: x}}
status_page:
  groups:
    - name: one
      targets: [a, nope]
    - name: two
      labels: {team: y}
    - name: three
    - name: four
      targets: [a]
      colour: red
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "m.yaml", {})
    assert caught.value.problems == [
        "m.yaml:6: status_page.groups[0].targets[1]: no target named 'nope'",
        "m.yaml:8: status_page.groups[1].labels: no target has the labels team=y",
        "m.yaml:9: status_page.groups[2]: group 'three' is empty: give it targets, labels or both",
        "m.yaml:12: status_page.groups[3].colour: unknown key 'colour'",
    ]


def test_status_listen_setting() -> None:
    """--status-listen / MONITOR_STATUS_LISTEN is HOST:PORT or unset; anything else is an
    error naming it."""
    assert Settings(status_listen="[::1]:8080").status_address == ("::1", 8080)
    assert Settings(status_listen=":8080").status_address == ("0.0.0.0", 8080)
    assert Settings().status_address is None
    with pytest.raises(ValueError, match="'nope' is not HOST:PORT"):
        Settings(status_listen="nope")


# -- the model of the scene ------------------------------------------------------------------
async def _page() -> model.Page:
    status, history = page()
    await status.snapshot.refresh(history, NOW)
    inputs, _ = status._inputs(NOW)
    return model.build(inputs)


async def test_model_of_the_scene() -> None:
    """States (maintenance over the live state), banner, exact uptime per window, degraded
    apart, maintenance out of uptime, incidents and windows of shown targets only."""
    p = await _page()
    assert {n: t.state for n, t in p.targets.items()} == {
        "api": "up",
        "web": "down",
        "db": "degraded",
        "cache": "maintenance",
    }
    assert p.status == "partial_outage"  # 1 down of 3 judged
    assert [(g.name, g.status) for g in p.groups] == [
        ("Public <API>", "major_outage"),
        ("Data & storage", "degraded"),
    ]
    web, api, cache = p.targets["web"], p.targets["api"], p.targets["cache"]
    assert web.uptime["24h"].down_s == 600.0
    assert web.uptime["24h"].percent == pytest.approx(100 * (86400 - 600) / 86400)
    assert web.uptime["7d"].down_s == 4200.0
    assert api.uptime["30d"].percent == pytest.approx(100 * (30 * DAY - 300) / (30 * DAY))
    assert api.uptime["30d"].degraded_s == 7200.0
    assert api.uptime["7d"].percent == 100.0
    assert cache.uptime["90d"].maintenance_s == 1800.0
    assert cache.uptime["90d"].percent == pytest.approx(
        100 * (90 * DAY - 1800 - 6 * 3600) / (90 * DAY - 1800)
    )
    assert [(i.target, i.state, i.start) for i in p.active] == [
        ("web", "down", NOW - 600),
        ("db", "degraded", NOW - 3600),
    ]
    assert [(i.target, i.end) for i in p.recent] == [("web", NOW - 3 * DAY + 3600)]
    assert [w.name for w in p.maintenance] == ["cache-move"]
    assert [(w.name, w.targets) for w in p.upcoming] == [("network", ("api", "web"))]
    assert p.counts == {"up": 1, "degraded": 1, "down": 1, "maintenance": 1, "unknown": 0}


async def test_day_cells_of_the_scene() -> None:
    """One cell per UTC day for 90 days, today (so far) last, each coloured by its uptime;
    runs of alike days merged for the HTML, the same 90 days in all."""
    p = await _page()
    web, api, cache, db = (p.targets[n] for n in ("web", "api", "cache", "db"))
    assert len(web.days) == 90
    assert web.days[-1].start == NOW - 12 * 3600  # today, 00:00 UTC
    assert (web.days[-1].level, web.days[-1].percent) == (
        "partial",
        pytest.approx(100 * (1 - 600 / 43200)),
    )
    assert web.days[-4].level == "partial"  # 1 h down: 95.83%
    assert api.days[-11].level == "minor"  # 5 min down: 99.65%
    assert api.days[-21].level == "degraded"
    assert cache.days[-31].level == "major"  # 6 h down: 75%
    assert (cache.days[-1].level, cache.days[-1].maintenance_s) == ("up", 1800.0)
    assert db.days[-1].level == "degraded"
    assert {d.level for d in db.days[:-1]} == {"up"}
    assert [(r.level, r.days) for r in db.runs] == [("up", 89), ("degraded", 1)]
    assert sum(r.days for r in api.runs) == 90
    assert model.label(api.days[-11]) == "2026-05-10: 99.652% up"
    assert db.runs[0].label == "2026-02-20 to 2026-05-19: 100% up each day"
    assert model.label(cache.days[-1]) == "2026-05-20: 100% up, maintenance 30m"


async def test_days_before_the_first_check_have_no_data() -> None:
    """A target first checked 2.5 days ago: older days read no data, not 100%."""
    cells = model.days([], NOW - 2.5 * DAY, [], NOW)
    assert [c.level for c in cells[-4:]] == ["none", "up", "up", "up"]
    assert cells[0].percent is None


async def test_sparkline_from_hourly_rollups() -> None:
    """api's last 24 hours: 100 ms means then 200 ms in the current hour; scaled to its top."""
    p = await _page()
    latency = p.targets["api"].latency
    assert latency == (0.1,) * 23 + (0.2,)
    assert model.sparkline(latency).startswith("M0 12h0L4 12")
    assert model.sparkline(latency).endswith("L96 2")
    assert model.sparkline((None,) * 24) == ""
    assert p.targets["web"].latency == (None,) * 24


async def test_snapshot_reads_only_the_last_two_hours_again() -> None:
    """A second refresh reads the rollups of the current and the previous hour only."""
    status, history = page()
    await status.snapshot.refresh(history, NOW)
    assert len(history.rollup_reads) == 24
    history.rollup_reads.clear()
    await status.snapshot.refresh(history, NOW + 60)
    assert history.rollup_reads == [NOW - HOUR_S, NOW]


# -- escaping --------------------------------------------------------------------------------
async def test_html_escapes_every_outside_text() -> None:
    """The title, group names, errors and window reasons appear escaped, never as markup; the
    only script is the page's own."""
    text = render.html(await _page())
    assert "<script>alert" not in text
    assert (
        "Cannot connect &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;quotes&#34;"
        in text
    )
    assert "Acme &lt;b&gt;status&lt;/b&gt; &amp; co" in text
    assert "<h2>Public &lt;API&gt; " in text
    assert "moving &lt;racks&gt;" in text
    assert text.count("<script>") == 1
    assert "secret" not in text and "hidden-work" not in text


# -- HTTP ------------------------------------------------------------------------------------
def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    """GET ``url``: status, headers (any case), body."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


async def test_json_api() -> None:
    """/api/v1/status: the page's data, hidden targets absent, gzip when asked, and a 304
    for the same version."""
    import asyncio

    status, _ = page()
    async with serving(status) as base:
        code, headers, body = await asyncio.to_thread(_get, f"{base}/api/v1/status")
        assert code == 200
        assert headers["Content-Type"] == "application/json"
        data = json.loads(body)
        assert data["title"] == HOSTILE_TITLE
        assert data["generated_at"] == "2026-05-20T12:00:00Z"
        assert data["status"] == {"indicator": "partial_outage", "description": "Partial outage"}
        assert data["groups"] == [
            {"name": "Public <API>", "status": "major_outage", "targets": ["api", "web"]},
            {"name": "Data & storage", "status": "degraded", "targets": ["db", "cache"]},
        ]
        targets = {t["name"]: t for t in data["targets"]}
        assert list(targets) == ["api", "web", "db", "cache"]
        web = targets["web"]
        assert (web["state"], web["state_text"], web["reason"], web["error"]) == (
            "down",
            "Down",
            "connect",
            HOSTILE_ERROR,
        )
        assert web["since"] == "2026-05-20T11:50:00Z"
        assert web["uptime"]["24h"] == {
            "percent": 99.3056,
            "down_s": 600.0,
            "degraded_s": 0.0,
            "maintenance_s": 0.0,
        }
        days = web["days"]
        assert days["first"] == "2026-02-20"
        assert [len(days[k]) for k in ("level", "uptime_percent", "degraded_s")] == [90, 90, 90]
        assert (days["level"][-1], days["uptime_percent"][-1]) == ("partial", 98.6111)
        assert (days["level"][-4], days["uptime_percent"][-4]) == ("partial", 95.8333)
        assert targets["cache"]["days"]["maintenance_s"][-1] == 1800.0
        latency = targets["api"]["latency_24h"]
        assert latency["first_hour"] == "2026-05-19T13:00:00Z"
        assert latency["mean_s"] == [0.1] * 23 + [0.2]
        assert targets["cache"]["state"] == "maintenance"
        assert [i["target"] for i in data["incidents"]["active"]] == ["web", "db"]
        assert data["incidents"]["recent"][0]["duration_s"] == 3600.0
        assert data["maintenance"]["active"][0]["targets"] == ["cache"]
        assert [w["name"] for w in data["maintenance"]["upcoming"]] == ["network"]

        code, headers, zipped = await asyncio.to_thread(
            _get, f"{base}/api/v1/status", {"Accept-Encoding": "gzip"}
        )
        assert headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(zipped) == body
        code, _, _ = await asyncio.to_thread(
            _get, f"{base}/api/v1/status", {"If-None-Match": headers["ETag"]}
        )
        assert code == 304


@pytest.mark.parametrize(
    ("path", "label", "value", "colour"),
    [
        ("/badge/api/status.svg", "api", "operational", COLOURS["up"]),
        ("/badge/web/status.svg", "web", "down", COLOURS["down"]),
        ("/badge/db/status.svg", "db", "degraded", COLOURS["degraded"]),
        ("/badge/cache/status.svg", "cache", "maintenance", COLOURS["maintenance"]),
        ("/badge/api/uptime-30d.svg", "uptime 30d", "99.988%", "#9a6700"),
        ("/badge/db/uptime-30d.svg", "uptime 30d", "100%", "#1a7f37"),
    ],
)
async def test_badges(path: str, label: str, value: str, colour: str) -> None:
    """Each badge is valid SVG saying its label and value in words, on the state's colour."""
    import asyncio

    status, _ = page()
    async with serving(status) as base:
        code, headers, body = await asyncio.to_thread(_get, base + path)
    assert code == 200
    assert headers["Content-Type"] == "image/svg+xml; charset=utf-8"
    svg = ET.fromstring(body)
    ns = "{http://www.w3.org/2000/svg}"
    assert [t.text for t in svg.iter(f"{ns}text")] == [label, value]
    assert svg.get("aria-label") == f"{label}: {value}"
    assert [r.get("fill") for r in svg.iter(f"{ns}rect")] == ["#555", colour]


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/badge/secret/status.svg", 404),  # hidden: in no group
        ("GET", "/badge/nope/status.svg", 404),
        ("GET", "/badge/api/other.svg", 404),
        ("GET", "/badge/api/status.png", 404),
        ("GET", "/metrics", 404),
        ("POST", "/-/reload", 404),
        ("POST", "/status", 405),
        ("DELETE", "/api/v1/status", 405),
    ],
)
async def test_read_only_port_refuses(method: str, path: str, code: int) -> None:
    """The status port has the page, its JSON and badges only: hidden and unknown targets
    are 404 with a JSON error, nothing else is served, nothing can be written."""
    import asyncio

    status, _ = page()
    async with serving(status) as base:

        def send() -> tuple[int, bytes]:
            request = urllib.request.Request(
                base + path, data=b"" if method != "GET" else None, method=method
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        got, body = await asyncio.to_thread(send)
    assert got == code
    if path.startswith("/badge"):
        assert "error" in json.loads(body)


async def test_html_is_served_with_its_policy() -> None:
    """/status: HTML with the CSP that allows only its own inline script, gzip, and the
    same bytes until something changes; / redirects to it."""
    import asyncio

    status, _ = page()
    async with serving(status) as base:
        code, headers, body = await asyncio.to_thread(
            _get, f"{base}/status", {"Accept-Encoding": "gzip"}
        )
        assert code == 200
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert headers["Content-Security-Policy"] == render.CSP
        assert "script-src 'sha256-" in render.CSP
        text = gzip.decompress(body).decode()
        assert "<strong>Partial outage</strong>" in text
        code, _, root = await asyncio.to_thread(_get, f"{base}/")
        assert code == 200 and root.startswith(b"<!doctype html>")


async def test_a_state_change_renders_again_and_reads_history() -> None:
    """A target's change of state is on the page within the watch interval, and history is
    read again soon after to list the incident it opened."""
    import asyncio

    from monitor.state import TargetState

    status, history = page()
    states = dict(status._states())
    status.attach(history, lambda: states)
    status.watch_s = 0.05
    now = [NOW]
    status.clock = lambda: now[0]
    async with serving(status):
        first = status.current
        assert first is not None and first.page.targets["api"].state == "up"
        reads = history.reads
        rendered = status.rendered
        states["api"] = TargetState("down", NOW + 1, "timeout", "no answer")
        await asyncio.wait_for(rendered.wait(), 5)
        assert status.current is not None and status.current.page.targets["api"].state == "down"
        assert history.reads == reads  # too soon to read again
        rendered = status.rendered
        now[0] = NOW + 6  # MIN_READ_S later
        await asyncio.wait_for(rendered.wait(), 5)
        assert history.reads == reads + 1


async def test_memo_changes_nothing_but_work() -> None:
    """A build that reuses the past days of an earlier one (same day, then the next day, then
    a new incident) is the page a fresh build makes."""
    status, history = page()
    await status.snapshot.refresh(history, NOW)
    memo: model.Memo = {}
    for now in (NOW, NOW + 60, NOW + DAY, NOW + DAY + 120):
        if now == NOW + DAY + 120:
            history.incidents.append(
                Incident("api/x", "api", "down", NOW - 5 * DAY, NOW - 5 * DAY + 60, "x", "", ())
            )
            await status.snapshot.refresh(history, now)
        inputs, _ = status._inputs(now)
        assert model.build(inputs, memo) == model.build(inputs)
    assert set(memo) == {"api", "web", "db", "cache"}


async def test_off_unless_the_file_asks_for_it() -> None:
    """Without a status_page key (and no --status-listen) the page is off: nothing is built
    (its background waits for a reload), /status and badges answer 404 saying how to turn it
    on; a reload that adds status_page: {} turns it on and it is built; --status-listen
    (``always``) turns it on whatever the file says."""
    bare = parse_config("targets: [{name: a, url: 'http://x/'}]", "f", {})
    on = parse_config("targets: [{name: a, url: 'http://x/'}]\nstatus_page: {}\n", "f", {})
    status = StatusPage(bare)
    assert status.enabled is False
    task = status.start()
    await asyncio.sleep(0)  # its first turn: off, it waits
    assert status.current is None
    for response in (
        await status.serve_html(make_mocked_request("GET", "/status")),
        await status.serve_badge(
            make_mocked_request(
                "GET", "/badge/a/status.svg", match_info={"target": "a", "kind": "status.svg"}
            )
        ),
    ):
        assert isinstance(response, web.Response) and response.status == 404
        assert json.loads(response.text or "") == {"error": OFF}
    rendered = status.rendered
    status.configure(on)
    await asyncio.wait_for(rendered.wait(), 10)
    assert (status.enabled, status.current is not None) == (True, True)
    await status.stop()
    assert task.done()
    forced = StatusPage(bare)
    forced.always = True
    assert forced.enabled is True
