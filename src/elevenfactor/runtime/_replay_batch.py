"""Replaying many runs from one process (``elevenfactor replay --runs QUERY``, the benchmark):
deterministic replays one after another (they make no call: CPU only), or what-if replays
submitted as one batch on the ``replay`` queue and executed by a worker of this process with
at most ``concurrency`` runs at once, then compared with their recordings (``aggregate``).

A run the batch cannot replay (a workflow run for a what-if, a program not registered here)
is listed in ``skipped`` with the reason rather than stopping the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from elevenfactor.errors import ElevenFactorError
from elevenfactor.governance import Principal
from elevenfactor.runtime._programs import Programs
from elevenfactor.runtime._replay import ReplayReport, replay_run
from elevenfactor.runtime._replay_compare import WhatIfReport, aggregate
from elevenfactor.runtime._replay_runs import ReplayRow, replay_report, start_what_if
from elevenfactor.runtime._replay_whatif import WhatIf
from elevenfactor.runtime._worker import Worker, WorkerOptions
from elevenfactor.store import Store

__all__ = ["REPLAY_QUEUE", "BatchOutcome", "count_finished", "replay_many", "what_if_many"]

REPLAY_QUEUE = "replay"
Progress = Callable[[int, int], None]
"""``(done, total)``."""


@dataclass
class BatchOutcome:
    """What a many-runs replay found."""

    batch_id: str | None
    deterministic: list[ReplayReport] = field(default_factory=list)
    what_if: list[WhatIfReport] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The aggregate report, JSON-ready."""
        if self.batch_id is None:
            diverged = [r for r in self.deterministic if not r.identical]
            return {
                "object": "replay_batch",
                "mode": "deterministic",
                "runs": len(self.deterministic),
                "identical": len(self.deterministic) - len(diverged),
                "diverged": len(diverged),
                "skipped": self.skipped,
                "steps": sum(r.steps for r in self.deterministic),
                "seconds": sum(r.seconds for r in self.deterministic),
                "worst": [r.to_dict() for r in diverged[:10]],
            }
        return {
            "object": "replay_batch",
            "mode": "what_if",
            "batch_id": self.batch_id,
            **aggregate(self.what_if),
            "skipped": self.skipped,
        }


async def replay_many(
    store: Store,
    programs: Programs,
    principal: Principal,
    run_ids: list[str],
    progress: Progress | None = None,
) -> BatchOutcome:
    """Deterministic replays of ``run_ids``."""
    out = BatchOutcome(None)
    for i, rid in enumerate(run_ids):
        try:
            out.deterministic.append(await replay_run(store, programs, rid, principal))
        except ElevenFactorError as exc:
            out.skipped.append({"run_id": rid, "code": exc.code, "message": exc.message})
        if progress is not None:
            progress(i + 1, len(run_ids))
    return out


async def what_if_many(
    store: Store,
    programs: Programs,
    principal: Principal,
    run_ids: list[str],
    options: WhatIf,
    *,
    concurrency: int = 4,
    progress: Progress | None = None,
    flush: Callable[[], Awaitable[Any]] | None = None,
    poll: float = 0.05,
) -> BatchOutcome:
    """What-if replays of ``run_ids`` with ``options``, executed here by a worker (at most
    ``concurrency`` at once); ``flush`` (the call recorder's) runs before the reports are
    read, so their cost and latency are complete."""
    options.check()
    out = BatchOutcome(f"rb_{uuid.uuid4().hex}")
    rows: list[ReplayRow] = []
    for rid in run_ids:
        try:
            rows.append(
                await start_what_if(
                    store,
                    programs,
                    principal,
                    rid,
                    options,
                    batch_id=out.batch_id,
                    queue=REPLAY_QUEUE,
                )
            )
        except ElevenFactorError as exc:
            out.skipped.append({"run_id": rid, "code": exc.code, "message": exc.message})
    ids = [r.replay_run_id for r in rows]
    worker = Worker(store, programs, WorkerOptions(queues=(REPLAY_QUEUE,), concurrency=concurrency))
    task = asyncio.create_task(worker.serve())
    try:
        while True:
            done = await count_finished(store, ids)
            if progress is not None:
                progress(done, len(ids))
            if done >= len(ids):
                break
            if task.done():
                task.result()  # the worker died: its error
            await asyncio.sleep(poll)
    finally:
        await worker.shutdown(5.0)
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if flush is not None:
        await flush()
    out.what_if = [await replay_report(store, row) for row in rows]
    return out


async def count_finished(store: Store, ids: list[str]) -> int:
    """How many of the runs ``ids`` have ended."""
    if not ids:
        return 0
    found = 0
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        row = await store.fetchone(
            f"SELECT COUNT(*) FROM runs WHERE id IN ({', '.join('?' for _ in part)})"
            " AND status IN ('succeeded', 'failed', 'cancelled')",
            part,
        )
        found += int(row[0]) if row is not None else 0
    return found
