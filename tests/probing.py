"""What the probes' tests share: a target built as the YAML file would build it."""

from __future__ import annotations

from typing import Any

from monitor.config import Target


def target(url: str, **options: Any) -> Target:
    """A target named ``t`` for ``url`` with ``options`` as in the YAML file."""
    return Target(name="t", url=url, **options)
