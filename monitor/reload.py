"""What a reload changes, decided once.

A reload re-parses the whole file, so every :class:`~monitor.config.Target` comes back as a
new object. :func:`diff` compares the new targets with the running ones, keeps the running
object of every unchanged target, and names what was added, removed and changed. The
scheduler, alerting and metrics apply this one :class:`Diff`; none of them compares configs
on its own. Because unchanged targets keep their objects, "is this result still current?"
has one answer everywhere: the result's target is the object the scheduler now runs
(:meth:`monitor.scheduling.Scheduler.is_current`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.config import MonitorFile, Target


@dataclass(frozen=True, slots=True)
class Diff:
    """The running targets against a new file's, by name."""

    targets: tuple[Target, ...]  # the new set in file order; unchanged ones are the old objects
    added: tuple[str, ...]
    removed: tuple[Target, ...]  # the old objects, for what their last messages need
    changed: tuple[str, ...]  # an option differs: the new object replaces the old one
    retargeted: tuple[str, ...]  # changed so that it checks something else: state starts over
    unchanged: tuple[str, ...]

    def summary(self) -> dict[str, object]:
        """The ``config_reloaded`` log fields."""
        return {
            "targets": len(self.targets),
            "added": sorted(self.added),
            "removed": sorted(t.name for t in self.removed),
            "changed": sorted(self.changed),
        }


def same_subject(stored_safe_url: str, target: Target) -> bool:
    """Whether ``target`` still checks what a state kept for ``stored_safe_url`` was about.

    The one rule for "its incident carries over": the URL as shown (a new password alone
    does not start the target over; a new host or path does).
    """
    return stored_safe_url == target.safe_url


def diff(old: Sequence[Target], new: Sequence[Target]) -> Diff:
    """Compare by name; an unchanged target (every option equal) keeps its old object."""
    running = {t.name: t for t in old}
    wanted = {t.name for t in new}
    targets: list[Target] = []
    added: list[str] = []
    changed: list[str] = []
    retargeted: list[str] = []
    unchanged: list[str] = []
    for target in new:
        before = running.get(target.name)
        if before is None:
            added.append(target.name)
            targets.append(target)
        elif before == target:
            unchanged.append(target.name)
            targets.append(before)
        else:
            changed.append(target.name)
            if not same_subject(before.safe_url, target):
                retargeted.append(target.name)
            targets.append(target)
    removed = tuple(t for t in old if t.name not in wanted)
    return Diff(
        targets=tuple(targets),
        added=tuple(added),
        removed=removed,
        changed=tuple(changed),
        retargeted=tuple(retargeted),
        unchanged=tuple(unchanged),
    )


def apply(running: MonitorFile, new: MonitorFile) -> tuple[MonitorFile, Diff]:
    """``new`` with the running objects of its unchanged targets, and the diff."""
    change = diff(running.targets, new.targets)
    return new.model_copy(update={"targets": change.targets}), change
