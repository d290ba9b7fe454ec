"""What the status page needs of maintenance windows, as a Protocol.

Maintenance windows themselves are another module's concern; the page only reads them
through :class:`MaintenanceView`, given to :class:`~monitor.statuspage.web.StatusPage` (None:
no maintenance is shown). Any object with these attributes fits: the daemon's own windows
are wired in where the service builds the page.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol


class WindowLike(Protocol):
    """One occurrence of a maintenance window."""

    @property
    def name(self) -> str: ...

    @property
    def targets(self) -> Collection[str]:
        """The names of the targets it covers."""
        ...

    @property
    def start_ts(self) -> float: ...  # Unix seconds

    @property
    def end_ts(self) -> float: ...

    @property
    def reason(self) -> str: ...

    def active_for(self, target: str, now: float) -> bool:
        """Whether ``target`` is in this window at ``now``."""
        ...


class MaintenanceView(Protocol):
    """The maintenance windows the page shows and leaves out of uptime."""

    def windows(self, start: float, end: float) -> Sequence[WindowLike]:
        """Every occurrence that overlaps [start, end): past ones (left out of the uptime
        figures), the active ones and the upcoming ones."""
        ...


@dataclass(frozen=True, slots=True)
class Window:
    """A plain :class:`WindowLike` (tests, and what the page keeps of a provider's)."""

    name: str
    targets: frozenset[str]
    start_ts: float
    end_ts: float
    reason: str = ""

    def active_for(self, target: str, now: float) -> bool:
        return target in self.targets and self.start_ts <= now < self.end_ts


@dataclass(frozen=True, slots=True)
class FixedWindows:
    """A :class:`MaintenanceView` of a fixed list of windows (tests)."""

    items: tuple[Window, ...]

    def windows(self, start: float, end: float) -> Sequence[WindowLike]:
        return [w for w in self.items if w.start_ts < end and w.end_ts > start]


def plain(window: WindowLike) -> Window:
    """A provider's window as a :class:`Window`: read once, on the event loop, so that the
    model is built elsewhere from data that cannot change under it."""
    return Window(
        window.name,
        frozenset(window.targets),
        window.start_ts,
        window.end_ts,
        window.reason,
    )
