"""Where alerts go: one class per notifier type, each turning a Notification into a request.

A notifier only formats and sends one message and raises :class:`DeliveryError` when that
failed; queueing, retries with backoff and persistence are :mod:`monitor.delivery`'s job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["firing", "resolved", "reminder"]


@dataclass(frozen=True, slots=True)
class Notification:
    """One message about one incident of one target; serialisable for the outbox.

    ``state`` is the target's state now (``down``, ``degraded`` or ``up``) and
    ``previous_state`` the one before. ``firing``/``reminder``: the incident is in ``state``
    since ``since``. ``resolved``: the incident that was in ``previous_state`` since ``since``
    ended at ``ended_at`` (the target moved to ``state``). ``incident_id`` is stable for an
    incident: its firing, reminders and resolve share it (PagerDuty's dedup key).
    """

    kind: Kind
    target: str
    url: str  # already without password
    state: str
    previous_state: str
    reason: str
    error: str
    since: float  # Unix time the incident began
    incident_id: str
    ended_at: float | None = None  # Unix time a resolved incident ended
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0  # Unix time the message was queued

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        return cls(**data)


class DeliveryError(Exception):
    """Sending failed; ``retry_after_s`` is the receiver's Retry-After, if it said one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
