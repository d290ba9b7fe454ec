"""``status_page:`` in the target file, and the one rule of which targets a group shows.

A target joins a group when the group names it in ``targets`` or when it has every label of
the group's ``labels`` (either suffices). Without groups every target is shown, in one group;
with groups, a target in none is hidden: still checked and alerted on, but absent from the
page, the JSON and the badges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field, model_validator

from monitor.configvalues import Name, Strict

DEFAULT_TITLE = "Service status"
ALL_GROUP = "All services"  # the one group of a page without groups
Loc = tuple[str | int, ...]


class Group(Strict):
    """One group of the page: the targets it names and those whose labels match."""

    name: str = Field(min_length=1, max_length=200, description="shown as the group's heading")
    targets: tuple[Name, ...] = Field(default=(), description="names of targets it shows")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="it also shows every target that has all of these labels",
    )

    @model_validator(mode="after")
    def _selects_something(self) -> Group:
        if not self.targets and not self.labels:
            msg = f"group {self.name!r} is empty: give it targets, labels or both"
            raise ValueError(msg)
        return self

    def shows(self, name: str, labels: Mapping[str, str]) -> bool:
        """Whether the target ``name`` with ``labels`` is in this group."""
        if name in self.targets:
            return True
        return bool(self.labels) and all(labels.get(k) == v for k, v in self.labels.items())


class StatusPageOptions(Strict):
    """``status_page:``: the page's title and its groups of targets."""

    title: str = Field(default=DEFAULT_TITLE, min_length=1, max_length=200)
    groups: tuple[Group, ...] = Field(
        default=(),
        description="groups of targets, in order; without groups every target is shown",
    )

    def layout(
        self, targets: Sequence[tuple[str, Mapping[str, str]]]
    ) -> list[tuple[str, list[str]]]:
        """Each group's name and its targets' names, in config order: the page's layout.
        A target may be in several groups; one in none is not on the page."""
        if not self.groups:
            return [(ALL_GROUP, [name for name, _ in targets])]
        return [(g.name, [n for n, labels in targets if g.shows(n, labels)]) for g in self.groups]


def problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """What only the whole file can tell about ``status_page`` (the loader adds the lines):
    a group naming a target that does not exist, and a group that selects no target."""
    page = data.get("status_page")
    raw_targets = data.get("targets")
    groups = page.get("groups") if isinstance(page, dict) else None
    if not isinstance(groups, list) or not isinstance(raw_targets, list):
        return []  # anything else is the model's to report
    known: list[tuple[str, dict[str, Any]]] = []
    for t in raw_targets:  # merged with the defaults already
        if isinstance(t, dict) and isinstance(t.get("name"), str):
            labels = t.get("labels")
            known.append((t["name"], labels if isinstance(labels, dict) else {}))
    names = {n for n, _ in known}
    found: list[tuple[Loc, str]] = []
    for i, group in enumerate(groups):
        if not isinstance(group, dict):
            continue
        listed = group.get("targets")
        listed = listed if isinstance(listed, list) else []
        for j, name in enumerate(listed):
            if isinstance(name, str) and name not in names:
                found.append(
                    (("status_page", "groups", i, "targets", j), f"no target named {name!r}")
                )
        labels = group.get("labels")
        if listed or not isinstance(labels, dict) or not labels:
            continue  # listed names select themselves; an empty group is the model's
        if not any(all(tl.get(k) == v for k, v in labels.items()) for _, tl in known):
            shown = ", ".join(f"{k}={v}" for k, v in labels.items())
            found.append(
                (("status_page", "groups", i, "labels"), f"no target has the labels {shown}")
            )
    return found
