"""What a later rendering of the status page reuses of the last one (the model's memo,
monitor.statuspage.figures; the HTML's fragments, render.Fragments): only work, never a
different page."""

from __future__ import annotations

import math
import random

from statuspage_scene import DAY, NOW, STATES, incident, page

from monitor.history import Incident
from monitor.state import TargetState
from monitor.statuspage import model, render
from monitor.statuspage.figures import Held, steady_until, target_figures


async def test_cached_render_after_changes_is_a_fresh_one() -> None:
    """Renderings 30 s apart, then after a state change, a new incident, its end, the end of
    a maintenance window, a new UTC day and a window's edge inside an old incident: each
    one with the memo and the fragments of the ones before reads byte for byte as a fresh
    one (the model equal, the HTML the same string)."""
    states = dict(STATES)
    status, history = page()
    status.attach(history, lambda: states)
    memo: model.Memo = {}
    fragments = render.Fragments()
    steps = [
        NOW,
        NOW + 30,
        NOW + 60,  # api down: its state and a new open incident
        NOW + 90.5,  # still down: its down time grows
        NOW + 1800.25,  # api up again (its incident closed); cache's window over
        NOW + 12 * 3600 + 7.5,  # the next UTC day
        NOW + 4 * DAY + 1800,  # the 7 d window starts inside web's outage of 3 days ago
        NOW + 4 * DAY + 7200,  # ...and after it
    ]
    for now in steps:
        if now == NOW + 60:
            states["api"] = TargetState("down", now, "connect", "refused", "api/2")
            history.incidents.append(incident("api", "down", now, None, "refused"))
        if now == NOW + 1800.25:
            states["api"] = TargetState("up", now)
            history.incidents[-1] = incident("api", "down", NOW + 60, now, "refused")
        await status.snapshot.refresh(history, now)
        inputs, _ = status._inputs(now)
        cached, fresh = model.build(inputs, memo), model.build(inputs)
        assert cached == fresh, now
        assert render.html(cached, fragments) == render.html(fresh), now
    assert set(memo) == set(fragments.targets) == {"api", "web", "db", "cache"}


async def test_what_still_holds_is_reused() -> None:
    """30 s later api (closed incidents only, no window edge near one) keeps its days, bar
    and figures, the same objects, and its HTML is not rendered again; web's open outage
    makes its figures new. After api's state changes, its bar is still the one kept and the
    rest is rendered again, also when only the state word changes."""
    states = dict(STATES)
    status, history = page()
    status.attach(history, lambda: states)
    await status.snapshot.refresh(history, NOW)
    memo: model.Memo = {}
    fragments = render.Fragments()
    first = model.build(status._inputs(NOW)[0], memo)
    render.html(first, fragments)
    bar, li = fragments.bars["api"][1], fragments.targets["api"].whole

    second = model.build(status._inputs(NOW + 30)[0], memo)
    render.html(second, fragments)
    assert second.targets["api"].runs is first.targets["api"].runs
    assert second.targets["api"].uptime is first.targets["api"].uptime
    assert second.targets["web"].uptime is not first.targets["web"].uptime
    assert second.targets["web"].uptime["24h"].down_s == 630.0  # 600 s + the 30 s since
    assert fragments.targets["api"].whole is li

    states["api"] = TargetState("degraded", NOW + 60, "latency", "slow")
    render.html(model.build(status._inputs(NOW + 60)[0], memo), fragments)
    assert fragments.bars["api"][1] is bar
    assert fragments.targets["api"].whole is not li
    assert '<h3>api</h3><span class="st s-degraded">Degraded</span>' in (
        fragments.targets["api"].whole
    )

    # Only the state differs (the same reason, error and figures): rendered again too.
    states["api"] = TargetState("down", NOW + 60, "latency", "slow")
    inputs = status._inputs(NOW + 90)[0]
    assert render.html(model.build(inputs, memo), fragments) == render.html(model.build(inputs))
    assert '<h3>api</h3><span class="st s-down">Down</span>' in fragments.targets["api"].whole


T0 = 1_000 * DAY  # a round now for the table: every sum below is exact


def _down(start: float, end: float | None) -> Incident:
    return Incident("x/1", "x", "down", start, end, "connect", "", ())


def test_steady_until_by_table() -> None:
    """Until when a window's figures hold: until an edge reaches an incident or a window
    ahead; at once (now) with an edge inside one, an open incident, or a window that starts
    before the first check; forever with nothing ever monitored."""
    old = [_down(T0 - 3 * DAY, T0 - 3 * DAY + 3600)]
    assert steady_until(old, 0.0, [], T0, DAY) == math.inf  # 24 h: the outage long behind
    assert steady_until(old, 0.0, [], T0, 7 * DAY) == T0 + 4 * DAY  # 7 d's start meets it
    inside = T0 + 4 * DAY + 10  # 7 d's start 10 s into it
    assert steady_until(old, 0.0, [], inside, 7 * DAY) == inside
    assert steady_until([_down(T0 - 60, None)], 0.0, [], T0, DAY) == T0  # open: grows
    assert steady_until(old, T0 - 2 * DAY, [], T0, 7 * DAY) == T0  # younger than 7 d
    ahead = [(T0 + 2 * DAY, T0 + 2 * DAY + 3600)]  # maintenance the day after tomorrow
    assert steady_until([], 0.0, ahead, T0, DAY) == T0 + 2 * DAY
    assert steady_until([], 0.0, ahead, T0 + 2 * DAY + 1, DAY) == T0 + 2 * DAY + 1
    assert steady_until([], None, ahead, T0, DAY) == math.inf


def test_reused_figures_equal_fresh_ones_at_random() -> None:
    """300 random histories (outages and degradations closed and open, maintenance windows,
    targets older and younger than 90 days), each built at 8 times moving on by seconds to
    days, now and then with one incident more: the target's days, runs and figures with
    what it held are those of a fresh computation, exactly."""
    rng = random.Random(12)
    reused = 0
    for _ in range(300):
        now = T0 + rng.uniform(0, DAY)
        first_seen = now - rng.choice([200 * DAY, 95 * DAY, 40 * DAY, 3 * DAY, 3600])
        incidents = []
        for _ in range(rng.randrange(0, 8)):
            start = rng.uniform(max(first_seen, now - 100 * DAY), now)
            end = min(start + rng.choice([60, 3600, 6 * 3600, 2 * DAY]), now)
            state = rng.choice(["down", "degraded"])
            incidents.append(Incident("x/1", "x", state, start, end, "r", "", ()))
        if rng.random() < 0.2:
            incidents.append(
                Incident("x/2", "x", "down", now - rng.uniform(0, DAY), None, "", "", ())
            )
        windows = [
            (a, a + rng.choice([1800, 4 * 3600]))
            for a in (now + rng.uniform(-95 * DAY, 3 * DAY) for _ in range(rng.randrange(0, 3)))
        ]
        incidents.sort(key=lambda s: s.start)
        held: Held | None = None
        for _step in range(8):
            if held is not None and rng.random() < 0.1:
                incidents.append(Incident("x/3", "x", "down", now - 30, now - 10, "", "", ()))
            kept = held.uptime if held is not None else None
            held = target_figures(incidents, first_seen, windows, now, held)
            fresh = target_figures(incidents, first_seen, windows, now, None)
            assert (held.every, held.runs, held.uptime) == (fresh.every, fresh.runs, fresh.uptime)
            reused += held.uptime is kept
            now += rng.choice([1.25, 30.5, 600, 3 * 3600, 2 * DAY])
    assert reused > 300  # (not a vacuous test: many builds kept every window's figures)
