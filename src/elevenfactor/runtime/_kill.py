"""Pulling a kill switch from the runtime's side: the switch stops new calls (governance), and
the queued and running runs it covers are cancelled (a running run stops at its next step;
parked runs stay parked, and their calls are refused if they resume)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from elevenfactor.errors import RequestError
from elevenfactor.governance import Killed, Principal, kill
from elevenfactor.runtime._runs import RunInfo, cancel_run
from elevenfactor.store import Store

__all__ = ["KillResult", "kill_and_cancel"]


@dataclass(frozen=True, slots=True)
class KillResult:
    """The switch pulled (``killed``) and the runs it cancelled, as they are now (a running
    one stays ``running`` with ``cancel_requested`` until its worker stops it)."""

    killed: Killed
    cancelled: tuple[RunInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        """The switch with the ids of the runs it cancelled."""
        return {**self.killed.switch.to_dict(), "runs": [r.id for r in self.cancelled]}


async def kill_and_cancel(
    store: Store, principal: Principal, scope: str, reason: str
) -> KillResult:
    """``kill`` ``scope`` as ``principal`` and cancel the runs it covers that have not finished
    meanwhile, with the switch and ``reason`` as the runs' cancellation reason."""
    killed = await kill(store, principal, scope, reason)
    why = f"kill switch {killed.switch.id} ({killed.switch.scope}): {reason}"
    cancelled = []
    for run_id in killed.runs:
        try:
            cancelled.append(await cancel_run(store, run_id, why, principal))
        except RequestError:
            continue  # it finished meanwhile
    return KillResult(killed, tuple(cancelled))
