"""The status page in a real browser: Debian's Chromium, headless, driven by Playwright.

The page is served by the daemon's own code (StatusPage and StatusServer, in-process on
127.0.0.1) for the scene of ``statuspage_scene.py``: targets up, down, degraded and in
maintenance, one hidden. The tests assert what a person sees: words, the banner, the colours
of day cells, no horizontal scroll on a phone, dark mode, no console errors. Screenshots
at phone (375 px) and desktop (1280 px) widths go to ``$STATUS_PAGE_ARTIFACTS`` (default
``test-artifacts/`` at the repository root).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from statuspage_scene import HOSTILE_ERROR, page, serving

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
# A closed network: without these Chromium reaches for Google's hosts.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(
    os.environ.get(
        "STATUS_PAGE_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"
    )
)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (make check-deps installs it)")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def base() -> AsyncIterator[str]:
    status, _ = page()
    async with serving(status) as url:
        yield url


async def _open(browser: Any, url: str, width: int, scheme: str = "light") -> tuple[Any, list[str]]:
    context = await browser.new_context(
        viewport={"width": width, "height": 800}, color_scheme=scheme, java_script_enabled=True
    )
    tab = await context.new_page()
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    tab.on("pageerror", lambda e: problems.append(str(e)))
    tab.on("dialog", lambda d: problems.append(f"dialog: {d.message}"))
    response = await tab.goto(f"{url}/status")
    assert response is not None and response.status == 200
    return tab, problems


async def _text(tab: Any, selector: str) -> str:
    return str(await tab.locator(selector).first.inner_text()).strip()


async def _style(tab: Any, selector: str, prop: str) -> str:
    return str(await tab.locator(selector).first.evaluate(f"e => getComputedStyle(e).{prop}"))


async def test_what_a_person_sees_on_a_desktop(browser: Any, base: str) -> None:
    """The banner, each target's state in words, uptime figures, the active incident with
    its (escaped) error, maintenance now and upcoming; the hidden target nowhere; cells in
    their colours; no console error; a screenshot."""
    tab, problems = await _open(browser, base, 1280)
    assert await _text(tab, ".banner strong") == "Partial outage"
    assert await _style(tab, ".banner", "backgroundColor") == "rgb(207, 34, 46)"
    assert await tab.title() == "Acme <b>status</b> & co: Partial outage"
    assert await _text(tab, "h1") == "Acme <b>status</b> & co"
    states = {
        name: await _text(tab, f"#t-{name} .head .st") for name in ("api", "web", "db", "cache")
    }
    assert states == {
        "api": "Operational",
        "web": "Down",
        "db": "Degraded",
        "cache": "Maintenance",
    }
    assert await tab.locator("#t-secret").count() == 0
    body = await tab.locator("body").inner_text()
    assert "secret" not in body
    assert HOSTILE_ERROR in body  # shown as text, not run
    assert (
        await _text(tab, "#t-web .figs") == "24 h 99.305%\n7 d 99.305%\n30 d 99.837%\n90 d 99.945%"
    )
    assert "degraded 2h in 30 d" in await _text(tab, "#t-api .figs")
    groups = [await h.inner_text() for h in await tab.locator("h2").all()]
    assert groups == [
        "Maintenance now",
        "Active incidents",
        "Public <API>\nMajor outage",
        "Data & storage\nDegraded performance",
        "Upcoming maintenance",
        "Recent incidents",
    ]
    # Day cells: today's of web is an outage of 10 min (partial), 30 days ago cache's major.
    assert await _style(tab, "#t-web .bar li:last-child", "backgroundColor") == "rgb(225, 111, 36)"
    assert await tab.locator("#t-web .bar li:last-child").get_attribute("title") == (
        "2026-05-20: 98.611% up"
    )
    major = tab.locator("#t-cache .bar li.c-major")
    assert await major.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(207, 34, 46)"
    assert await major.inner_text() == "2026-04-20: 75% up"  # visually hidden, read aloud
    assert await tab.locator("#t-db .bar li.c-up").get_attribute("title") == (
        "2026-02-20 to 2026-05-19: 100% up each day"
    )
    assert await tab.locator("#t-api svg.spark").get_attribute("aria-label") == (
        "latency, last 24 hours: mean 104 ms, highest hour 200 ms, lowest 100 ms"
    )
    # 90 days in the bar of every target, merged runs included.
    for name in ("api", "web", "db", "cache"):
        spans = await tab.locator(f"#t-{name} .bar li").evaluate_all(
            "els => els.map(e => parseInt(getComputedStyle(e).getPropertyValue('--n') || '1'))"
        )
        assert sum(spans) == 90
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await tab.screenshot(path=str(ARTIFACTS / "status-desktop-1280.png"), full_page=True)
    assert problems == []


async def test_phone_width_has_no_horizontal_scroll(browser: Any, base: str) -> None:
    """At 375 px nothing is wider than the screen; the bar still shows its cells."""
    tab, problems = await _open(browser, base, 375)
    assert await tab.evaluate("document.documentElement.scrollWidth") <= 375
    width = await tab.locator("#t-web .bar").evaluate("e => e.getBoundingClientRect().width")
    assert 200 < width <= 375
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await tab.screenshot(path=str(ARTIFACTS / "status-phone-375.png"), full_page=True)
    assert problems == []


async def test_dark_mode(browser: Any, base: str) -> None:
    """With prefers-color-scheme: dark the page is dark, the words the same."""
    tab, problems = await _open(browser, base, 375, "dark")
    assert await _style(tab, "body", "backgroundColor") == "rgb(13, 17, 23)"
    assert await _style(tab, "body", "color") == "rgb(230, 237, 243)"
    assert await _style(tab, "#t-web .bar li:last-child", "backgroundColor") == "rgb(189, 86, 29)"
    assert await _text(tab, ".banner strong") == "Partial outage"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await tab.screenshot(path=str(ARTIFACTS / "status-phone-375-dark.png"), full_page=True)
    assert problems == []


async def test_readable_without_javascript(browser: Any, base: str) -> None:
    """With JavaScript off everything is there: the page is rendered on the server."""
    context = await browser.new_context(java_script_enabled=False)
    tab = await context.new_page()
    await tab.goto(f"{base}/status")
    assert (await tab.locator(".banner strong").inner_text()).strip() == "Partial outage"
    assert await tab.locator(".target").count() == 4
