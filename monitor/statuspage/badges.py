"""SVG badges of a target: its state, and its uptime over 30 days.

Flat, two-part badges in the shields.io manner (a label, a value on a colour), made here as
text: two rectangles and two strings, escaped. Each says its words, not only a colour, and
carries a ``<title>`` and an ``aria-label`` for screen readers.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from monitor.statuspage.figures import DAY_LEVELS, percent_text
from monitor.statuspage.model import STATE_TEXT, TargetView

COLOURS = {
    "up": "#1a7f37",
    "degraded": "#9a6700",
    "down": "#cf222e",
    "maintenance": "#0969da",
    "unknown": "#59636e",
}
UPTIME_COLOURS = {"up": "#1a7f37", "minor": "#9a6700", "partial": "#bc4c00", "major": "#cf222e"}
KINDS = ("status", "uptime-30d")
# Widths of Verdana 11px's characters, roughly: narrow, wide, and the rest.
_NARROW, _WIDE = set("fijlrt.,:;!|'() "), set("mwMW%@")


def text_width(text: str) -> int:
    return sum(4 if c in _NARROW else 10 if c in _WIDE else 7 for c in text)


def uptime_level(percent: float | None) -> str:
    """The colour of an uptime figure, by the same bounds as the day cells."""
    if percent is None:
        return "none"
    return next((level for bound, level in DAY_LEVELS if percent >= bound), "major")


def badge(target: TargetView, kind: str) -> str:
    """The ``kind`` badge (one of :data:`KINDS`) of ``target``."""
    if kind == "status":
        label, value, colour = target.name, STATE_TEXT[target.state].lower(), COLOURS[target.state]
    else:
        percent = target.uptime["30d"].percent
        label, value = "uptime 30d", percent_text(percent)
        colour = UPTIME_COLOURS.get(uptime_level(percent), COLOURS["unknown"])
    return svg(label, value, colour)


def svg(label: str, value: str, colour: str) -> str:
    left, right = text_width(label) + 10, text_width(value) + 10
    width = left + right
    title = f"{label}: {value}"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img"'
        f" aria-label={quoteattr(title)}><title>{escape(title)}</title>"
        f'<rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif"'
        ' font-size="11">'
        f'<text x="{left / 2:g}" y="14">{escape(label)}</text>'
        f'<text x="{left + right / 2:g}" y="14">{escape(value)}</text></g></svg>'
    )
