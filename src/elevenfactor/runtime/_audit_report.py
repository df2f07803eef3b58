"""What ``audit`` reports: findings (what, which object, where, why) and the counts checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from elevenfactor.governance import Block

__all__ = ["AuditReport", "Finding"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing that does not check out: what (``kind``), which object, where in it, why."""

    kind: str
    subject: str
    where: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """As JSON."""
        return {
            "kind": self.kind,
            "subject": self.subject,
            "where": self.where,
            "message": self.message,
        }


@dataclass
class AuditReport:
    """What ``audit`` checked and found."""

    runs: int = 0
    events: int = 0
    payloads: int = 0
    erased: int = 0
    """Payloads erased by retention or a forget (hashes kept): not re-hashed, not findings."""
    erased_by: set[int] = field(default_factory=set)
    """The ledger entries that erased them."""
    approvals: int = 0
    calls: int = 0
    ledger_entries: int = 0
    blocks: int = 0
    unsealed: int = 0
    head: Block | None = None
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Nothing found."""
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """As JSON."""
        return {
            "ok": self.ok,
            "runs": self.runs,
            "events": self.events,
            "payloads": self.payloads,
            "erased": self.erased,
            "erased_by": sorted(self.erased_by),
            "approvals": self.approvals,
            "calls": self.calls,
            "ledger_entries": self.ledger_entries,
            "blocks": self.blocks,
            "unsealed": self.unsealed,
            "head": None if self.head is None else {"n": self.head.n, "hash": self.head.hash},
            "seconds": round(self.seconds, 3),
            "findings": [f.to_dict() for f in self.findings],
        }
