"""A :class:`~monitor.statuspage.model.Page` as HTML and as JSON.

HTML comes from one Jinja2 template with autoescape on: target names are tame, but group
names, the title, a check's reason and error (a server's own words) and window reasons are
text from elsewhere, and every one of them is escaped by the template, not by hand. The
page needs no external asset: its CSS and its one small script are inline, the script
allowed by its hash in the Content-Security-Policy (:data:`CSP`), and it reads fully
without JavaScript (the script only refreshes it in place every minute).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from monitor.incident import human_duration, iso_utc
from monitor.statuspage.figures import DAY_TEXT, WINDOWS_S, Run, percent_text
from monitor.statuspage.model import (
    BANNER_TEXT,
    STATE_TEXT,
    IncidentView,
    Page,
    TargetView,
    WindowView,
    hours_from,
    sparkline,
    time_text,
)

RECENT_SHOWN = 25  # closed incidents on the page; the JSON has all of the last 7 days
PERIODS = (("24h", "24 h"), ("7d", "7 d"), ("30d", "30 d"), ("90d", "90 d"))
# Refresh in place every minute; a failed fetch keeps the page as it is, quietly.
SCRIPT = (
    "setInterval(async()=>{try{const r=await fetch(location.href,{cache:'no-store'});"
    "if(!r.ok)return;const d=new DOMParser().parseFromString(await r.text(),'text/html');"
    "const m=d.getElementById('page'),o=document.getElementById('page');"
    "if(m&&o){o.replaceWith(m);document.title=d.title}}catch(e){}},60000);"
)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def latency_text(values: tuple[float | None, ...]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "latency, last 24 hours: no data"
    mean_ms = sum(known) / len(known) * 1000
    return (
        f"latency, last 24 hours: mean {mean_ms:.0f} ms, "
        f"highest hour {max(known) * 1000:.0f} ms, lowest {min(known) * 1000:.0f} ms"
    )


_ENV = jinja2.Environment(
    loader=jinja2.FunctionLoader(
        lambda name: resources.files("monitor.statuspage").joinpath("templates", name).read_text()
    ),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)
_ENV.globals.update(
    banner_text=BANNER_TEXT,
    state_text=STATE_TEXT,
    day_text=DAY_TEXT,
    periods=PERIODS,
    recent_shown=RECENT_SHOWN,
    script=Markup(SCRIPT),  # noqa: S704 - a constant of ours, hashed in the CSP
    time_text=time_text,
    percent=percent_text,
    duration=human_duration,
    sparkline=sparkline,
    latency_text=latency_text,
)
_PAGE = _ENV.get_template("status.html.j2")
# Its macros (bar, spark, head, tail), each returning Markup.
_TARGET: Any = _ENV.get_template("target.html.j2").module


@dataclass(slots=True)
class _Target:
    """A target's ``<li>`` and what it was rendered from."""

    key: tuple[object, ...]  # state, reason, error; figures and bar (by identity)
    head: Markup
    tail: Markup
    spark: Markup
    whole: Markup


@dataclass(slots=True)
class Fragments:
    """Each target's HTML as last rendered (by name), with what it was rendered from.

    Rendering a target's 90 days cost most of the page's HTML (at 1,000 targets ~9,000 cells
    with their labels, each escaped) though a later page rarely changes them. A later page
    renders again only what changed: the bar when the runs are new objects (the model
    returns the same ones while they read the same, :mod:`.figures`), the sparkline when the
    latencies differ (in the daemon, every refresh: the current hour has new checks), the
    rest of the ``<li>`` when the bar did or the target's state or figures."""

    bars: dict[str, tuple[Sequence[Run], Markup]] = field(default_factory=dict)
    sparks: dict[str, tuple[Sequence[float | None], Markup]] = field(default_factory=dict)
    targets: dict[str, _Target] = field(default_factory=dict)

    def target(self, t: TargetView) -> Markup:
        bar = self.bars.get(t.name)
        if bar is None or bar[0] is not t.runs:
            bar = self.bars[t.name] = (t.runs, _TARGET.bar(t.runs))
        spark = self.sparks.get(t.name)
        if spark is None or spark[0] != t.latency:
            spark = self.sparks[t.name] = (t.latency, _TARGET.spark(t.latency))
        key = (t.state, t.reason, t.error, t.uptime, bar[1])
        held = self.targets.get(t.name)
        if held is None or not _alike(held.key, key):
            head, tail = _TARGET.head(t, bar[1]), _TARGET.tail(t)
            held = self.targets[t.name] = _Target(key, head, tail, spark[1], head + spark[1] + tail)
        elif held.spark is not spark[1]:
            held.spark, held.whole = spark[1], held.head + spark[1] + held.tail
        return held.whole

    def keep_only(self, names: Collection[str]) -> None:
        """Forget the targets no longer shown."""
        for cache in (self.bars, self.sparks, self.targets):
            for name in [n for n in cache if n not in names]:
                del cache[name]


def _alike(held: tuple[object, ...], key: tuple[object, ...]) -> bool:
    """The texts equal; the figures and the bar the same objects (the model keeps the same
    figures while they hold, the bar is kept here)."""
    return held[:3] == key[:3] and all(a is b for a, b in zip(held[3:], key[3:], strict=True))


def html(page: Page, fragments: Fragments | None = None) -> str:
    """The page as HTML. ``fragments`` (kept by the caller between pages) only saves work:
    the page is the same without it."""
    fragments = Fragments() if fragments is None else fragments
    fragments.keep_only(page.targets)
    return _PAGE.render(page=page, fragment=fragments.target)


# -- JSON ------------------------------------------------------------------------------------
def as_json(page: Page) -> dict[str, Any]:
    """The page's data: the same as the HTML shows (the JSON fields are in the README)."""
    return {
        "title": page.title,
        "generated_at": iso_utc(page.now),
        "status": {"indicator": page.status, "description": BANNER_TEXT[page.status]},
        "counts": dict(page.counts),
        "groups": [
            {
                "name": g.name,
                "status": g.status,
                "targets": [t.name for t in g.targets],
            }
            for g in page.groups
        ],
        "targets": [_target(t, page.now) for t in page.targets.values()],
        "incidents": {
            "active": [_incident(i, page.now) for i in page.active],
            "recent": [_incident(i, page.now) for i in page.recent],
        },
        "maintenance": {
            "active": [_window(w) for w in page.maintenance],
            "upcoming": [_window(w) for w in page.upcoming],
        },
    }


def _target(t: TargetView, now: float) -> dict[str, Any]:
    return {
        "name": t.name,
        "state": t.state,
        "state_text": STATE_TEXT[t.state],
        "since": iso_utc(t.since) if t.since else None,
        "reason": t.reason or None,
        "error": t.error or None,
        "uptime": {
            key: {
                "percent": _round(t.uptime[key].percent, 4),
                "down_s": round(t.uptime[key].down_s, 3),
                "degraded_s": round(t.uptime[key].degraded_s, 3),
                "maintenance_s": round(t.uptime[key].maintenance_s, 3),
            }
            for key in WINDOWS_S
        },
        # Parallel lists, oldest day (hour) first: at 1,000 targets a tenth of the bytes of
        # one object per day.
        "days": {
            "first": iso_utc(t.days[0].start)[:10],
            "level": [d.level for d in t.days],
            "uptime_percent": [_round(d.percent, 4) for d in t.days],
            "degraded_s": [round(d.degraded_s, 3) for d in t.days],
            "maintenance_s": [round(d.maintenance_s, 3) for d in t.days],
        },
        "latency_24h": {
            "first_hour": iso_utc(hours_from(now)),
            "mean_s": [_round(v, 6) for v in t.latency],
        },
    }


def _incident(i: IncidentView, now: float) -> dict[str, Any]:
    return {
        "target": i.target,
        "state": i.state,
        "start": iso_utc(i.start),
        "end": None if i.end is None else iso_utc(i.end),
        "duration_s": round(i.duration_s(now), 3),
        "reason": i.reason,
        "error": i.error,
    }


def _window(w: WindowView) -> dict[str, Any]:
    return {
        "name": w.name,
        "targets": list(w.targets),
        "start": iso_utc(w.start),
        "end": iso_utc(w.end),
        "reason": w.reason,
    }


def _round(value: float | None, places: int) -> float | None:
    return None if value is None else round(value, places)
