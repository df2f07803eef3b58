"""The divergence report of a what-if replay: the recorded run against the new run — the
first step that differs, a diff of the final outputs, the cost and latency deltas (from both
runs' ``model_calls`` rows) and the status of both — and the aggregate over many.

Steps are compared by position (``step_id``), in the recording's write order: the first
position where the new run has no step, another kind or name, or another output is the
first divergence; a step only the new run has comes next. Outputs of ``VOLATILE`` kinds
(clock readings, budget holds, rate-limit grants) differ on every run and are compared by
kind and name only.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import orjson

from elevenfactor.runtime._journal import Event, load_events, load_payloads
from elevenfactor.runtime._replay import text_diff
from elevenfactor.runtime._replay_context import Divergence
from elevenfactor.runtime._runs import RunInfo, get_run, run_result
from elevenfactor.store import Store

__all__ = ["VOLATILE", "RunCost", "WhatIfReport", "aggregate", "compare_runs", "run_costs"]

VOLATILE = frozenset({"clock", "budget", "limits"})


@dataclass(frozen=True, slots=True)
class RunCost:
    """A run's model calls: count, cost, summed latency and tokens."""

    calls: int = 0
    cost: float = 0.0
    latency_ms: float = 0.0
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "calls": self.calls,
            "cost": self.cost,
            "latency_ms": round(self.latency_ms, 3),
            "tokens": self.tokens,
        }


async def run_costs(store: Store, run_ids: list[str]) -> dict[str, RunCost]:
    """``RunCost`` per run (one query; runs without calls get zeros)."""
    out = {rid: RunCost() for rid in run_ids}
    if not run_ids:
        return out
    marks = ", ".join("?" for _ in run_ids)
    rows = await store.fetchall(
        "SELECT run_id, COUNT(*), COALESCE(SUM(cost), 0), COALESCE(SUM(latency_ms), 0),"
        " COALESCE(SUM(tokens_in + tokens_out), 0)"
        f" FROM model_calls WHERE run_id IN ({marks}) GROUP BY run_id",
        run_ids,
    )
    for rid, n, cost, latency, tokens in rows:
        out[str(rid)] = RunCost(int(n), float(cost), float(latency), int(tokens))
    return out


@dataclass
class WhatIfReport:
    """How a what-if run differs from the recording."""

    run_id: str
    replay_run_id: str
    options: dict[str, Any]
    status: str
    replay_status: str
    finished: bool
    divergence: Divergence | None
    steps: int
    replay_steps: int
    output_changed: bool | None
    output_diff: str
    cost: RunCost
    replay_cost: RunCost
    error: dict[str, Any] | None = None
    """The new run's error when it did not succeed."""

    @property
    def diverged(self) -> bool:
        """Any step, or the output, differs."""
        return self.divergence is not None or bool(self.output_changed)

    @property
    def cost_delta(self) -> float:
        """The new run's model cost minus the recording's."""
        return self.replay_cost.cost - self.cost.cost

    @property
    def latency_delta_ms(self) -> float:
        """The new run's summed model latency minus the recording's."""
        return self.replay_cost.latency_ms - self.cost.latency_ms

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "object": "replay",
            "mode": "what_if",
            "run_id": self.run_id,
            "replay_run_id": self.replay_run_id,
            "options": self.options,
            "finished": self.finished,
            "status": self.status,
            "replay_status": self.replay_status,
            "error": self.error,
            "diverged": self.diverged,
            "steps": self.steps,
            "replay_steps": self.replay_steps,
            "divergence": None if self.divergence is None else self.divergence.to_dict(),
            "output_changed": self.output_changed,
            "output_diff": self.output_diff,
            "cost": self.cost.to_dict(),
            "replay_cost": self.replay_cost.to_dict(),
            "cost_delta": self.cost_delta,
            "latency_delta_ms": round(self.latency_delta_ms, 3),
        }


def _latest(events: list[Event]) -> dict[str, Event]:
    return {e.step_id: e for e in events}


def first_divergence(
    a: dict[str, Event], pa: dict[str, bytes], b: dict[str, Event], pb: dict[str, bytes]
) -> Divergence | None:
    """The first position where journal ``b`` differs from ``a`` (see the module docstring)."""
    for ev in sorted(a.values(), key=lambda e: e.n):
        other = b.get(ev.step_id)
        if other is None:
            return Divergence(
                "missing",
                ev.step_id,
                ev.n,
                expected_kind=ev.kind,
                expected_name=ev.name,
                message=f"the replay has no step {ev.step_id} ({ev.kind} {ev.name!r})",
            )
        if (other.kind, other.name) != (ev.kind, ev.name):
            return Divergence(
                "step", ev.step_id, ev.n, other.kind, other.name, ev.kind, ev.name,
                message=f"step {ev.step_id} is {other.kind} {other.name!r} in the replay, "
                f"{ev.kind} {ev.name!r} in the recording",
            )  # fmt: skip
        if ev.kind in VOLATILE:
            continue
        mine = pa.get(ev.output_hash) if ev.output_hash else None
        theirs = pb.get(other.output_hash) if other.output_hash else None
        if (ev.status, ev.error, mine) != (other.status, other.error, theirs):
            return Divergence(
                "output", ev.step_id, ev.n, other.kind, other.name, ev.kind, ev.name,
                expected=_decoded(mine, ev.error), got=_decoded(theirs, other.error),
                message=f"step {ev.step_id} ({ev.kind} {ev.name!r}) has another output",
            )  # fmt: skip
    extra = sorted((e for sid, e in b.items() if sid not in a), key=lambda e: e.n)
    if extra:
        e = extra[0]
        return Divergence(
            "extra", e.step_id, None, e.kind, e.name,
            message=f"the replay has step {e.step_id} ({e.kind} {e.name!r}) the recording does "
            f"not ({len(extra)} such steps)",
        )  # fmt: skip
    return None


def _decoded(data: bytes | None, error: str | None) -> Any:
    if error is not None:
        return {"error": orjson.loads(error)}
    return None if data is None else orjson.loads(data)


def _output(result: Any) -> Any:
    return result.get("output") if isinstance(result, dict) and "output" in result else result


async def compare_runs(
    store: Store, run_id: str, replay_run_id: str, options: dict[str, Any]
) -> WhatIfReport:
    """The report of the what-if run ``replay_run_id`` of ``run_id`` (read as the system:
    the caller checked access to the replay)."""
    original = await get_run(store, run_id)
    replay = await get_run(store, replay_run_id)
    a = _latest(await load_events(store, run_id))
    b = _latest(await load_events(store, replay_run_id))
    payloads = await load_payloads(store, [run_id, replay_run_id])
    costs = await run_costs(store, [run_id, replay_run_id])
    divergence = first_divergence(a, payloads, b, payloads) if replay.finished else None
    changed: bool | None = None
    diff = ""
    if replay.finished:
        before, after = await _result(store, original), await _result(store, replay)
        changed = _output(before) != _output(after)
        diff = text_diff(before, after, names=("recorded", "what-if")) if changed else ""
    return WhatIfReport(
        run_id=run_id,
        replay_run_id=replay_run_id,
        options=options,
        status=original.status,
        replay_status=replay.status,
        finished=replay.finished,
        divergence=divergence,
        steps=len(a),
        replay_steps=len(b),
        output_changed=changed,
        output_diff=diff,
        cost=costs[run_id],
        replay_cost=costs[replay_run_id],
        error=replay.error_dict() if replay.finished and replay.status != "succeeded" else None,
    )


async def _result(store: Store, run: RunInfo) -> Any:
    if run.status == "succeeded":
        return await run_result(store, run)
    return {"status": run.status, "error": run.error_dict()}


def aggregate(reports: list[WhatIfReport], worst: int = 10) -> dict[str, Any]:
    """Over many what-if reports: how many diverged, failed, stayed identical; the cost delta
    in total and per run; the median latency delta; the worst divergences (failed runs first,
    then changed outputs, then the earliest diverging step)."""
    done = [r for r in reports if r.finished]
    failed = [r for r in done if r.replay_status != "succeeded"]
    diverged = [r for r in done if r.diverged]
    deltas = [r.cost_delta for r in done]
    latency = [r.latency_delta_ms for r in done]

    def rank(r: WhatIfReport) -> tuple[int, int, int]:
        n = r.divergence.n if r.divergence is not None and r.divergence.n is not None else 1 << 30
        return (r.replay_status == "succeeded", not r.output_changed, n)

    return {
        "runs": len(reports),
        "finished": len(done),
        "identical": len(done) - len(diverged),
        "diverged": len(diverged),
        "failed": len(failed),
        "output_changed": sum(1 for r in done if r.output_changed),
        "cost_delta": sum(deltas),
        "cost_delta_per_run": (sum(deltas) / len(deltas)) if deltas else 0.0,
        "cost": sum(r.cost.cost for r in done),
        "replay_cost": sum(r.replay_cost.cost for r in done),
        "latency_delta_ms_p50": statistics.median(latency) if latency else 0.0,
        "worst": [
            {
                "run_id": r.run_id,
                "replay_run_id": r.replay_run_id,
                "replay_status": r.replay_status,
                "output_changed": r.output_changed,
                "divergence": None if r.divergence is None else r.divergence.to_dict(),
                "cost_delta": r.cost_delta,
            }
            for r in sorted(diverged, key=rank)[:worst]
        ],
    }
