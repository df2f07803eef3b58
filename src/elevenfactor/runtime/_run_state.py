"""The state of one execution of a run, shared by its ``RunContext`` and the branch views of
its parallel steps: the journal loaded for replay (by step position), the payloads it
references, and the head of the chain the next event links to."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from elevenfactor.runtime._journal import Event, load_events, load_payloads
from elevenfactor.runtime._runs import Lease
from elevenfactor.store import Store

__all__ = ["RunState", "load_state"]


@dataclass
class RunState:
    """State shared by a run's context and its branch views."""

    store: Store
    lease: Lease
    by_step: dict[str, Event]
    payloads: dict[str, bytes]
    written: int
    head_hash: str
    lease_expires: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    cancel_reason: str | None = None
    lease_lost: bool = False
    executed: int = 0
    hooks: dict[str, Any] = field(default_factory=dict)
    inline: Callable[[str, Sequence[Any]], int | None] | None = field(init=False)
    """The store's inline statement runner (SQLite), for appends that need no lock."""

    def __post_init__(self) -> None:
        self.inline = getattr(self.store, "try_execute", None)


async def load_state(store: Store, lease: Lease) -> RunState:
    """The state of ``lease``'s run: its journal and the payloads it references, loaded for
    replay (three queries), or nothing for a fresh run (``lease.has_journal`` False: the first
    execution of a run with no events)."""
    events: list[Event] = []
    payloads: dict[str, bytes] = {}
    if lease.has_journal:
        events = await load_events(store, lease.run_id)
        payloads = await load_payloads(store, [lease.run_id])
    return RunState(
        store=store,
        lease=lease,
        by_step={e.step_id: e for e in events},
        payloads=payloads,
        written=len(events),
        head_hash=events[-1].hash if events else lease.genesis_hash,
        lease_expires=lease.expires_at,
        cancel_reason="cancelled by request" if lease.cancel_requested else None,
    )
