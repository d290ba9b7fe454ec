"""dns://resolver[:port]: ask the resolver ``dns.name`` of ``dns.type`` and judge its answer.

One check is one query, over udp (asked again over tcp when the answer is truncated) or tcp,
built and read by dnspython (:mod:`monitor.probes.dnscheck`). It passes when the response
code is one of ``dns.expect.rcode``, the answer has at least ``dns.expect.min_answers``
records of the asked type and each of ``dns.expect.answers_contain`` is found in it.

Phase: ``query``, from sending the question to the answer (every address of a resolver
given by name that was tried, and a truncated udp answer asked again over tcp). Resolving a
resolver given by name counts in the check's duration only.
"""

from __future__ import annotations

from typing import ClassVar

from monitor.config import Target
from monitor.probes.base import CheckResult, ProbeKit


class DnsProbe:
    phases: ClassVar[tuple[str, ...]] = ("query",)

    def __init__(self, kit: ProbeKit) -> None:
        self._kit = kit

    async def check(self, target: Target) -> CheckResult:
        # dnspython takes ~0.1 s to import: only a monitor with a dns:// target pays for it.
        from monitor.probes import dnscheck  # noqa: PLC0415

        return await dnscheck.check(target)
