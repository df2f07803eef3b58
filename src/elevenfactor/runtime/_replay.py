"""Deterministic replay: re-execute a finished run's program from its journal, with no model,
tool or other external call, and show that it reproduces every step and the result byte for
byte (what is recorded and what recomputed: ``_replay_context``).

``replay_run`` reads the run once — its row, its journal and payloads, the request hashes of
its model calls: four queries, none per step — and writes nothing. A difference is a
reported defect (``ReplayReport.divergence``: the first diverging step, what was expected and
what the program did, with a text diff); a program that changed since the run (an agent spec
edited, a step added) diverges at the first step that differs instead of failing.
"""

from __future__ import annotations

import asyncio
import difflib
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from elevenfactor.errors import ElevenFactorError, RequestError
from elevenfactor.governance import SYSTEM, Principal
from elevenfactor.runtime._claims import run_owner
from elevenfactor.runtime._codec import encode
from elevenfactor.runtime._journal import Event, load_events, load_payloads
from elevenfactor.runtime._programs import Programs
from elevenfactor.runtime._replay_context import (
    Divergence,
    ReplayContext,
    ReplayStop,
    ReplayTracker,
)
from elevenfactor.runtime._run_state import RunState
from elevenfactor.runtime._runs import Lease, RunInfo, get_run
from elevenfactor.runtime._steps import Park
from elevenfactor.store import Store, get_blob

__all__ = ["ReplayReport", "Replayed", "load_replayable", "replay_run", "text_diff"]

_CUT_SHORT = frozenset({"deadline_exceeded", "run_cancelled", "lease_lost"})
"""Error codes of runs stopped from outside: their journal ends where they were stopped."""
DIFF_LINES = 400


def text_diff(expected: Any, got: Any, *, names: tuple[str, str] = ("recorded", "replay")) -> str:
    """A unified diff of two decoded values, as indented JSON (at most ``DIFF_LINES`` lines)."""

    def lines(value: Any) -> list[str]:
        if isinstance(value, str):
            return value.splitlines()
        text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
        return text.splitlines()

    diff = list(difflib.unified_diff(lines(expected), lines(got), *names, lineterm="", n=2))
    if len(diff) > DIFF_LINES:
        diff = [*diff[:DIFF_LINES], f"... {len(diff) - DIFF_LINES} more lines"]
    return "\n".join(diff)


@dataclass
class ReplayReport:
    """The outcome of a deterministic replay of one run."""

    run_id: str
    program: str
    status: str
    """The run's status (a replay never changes it)."""
    steps: int
    """Steps in the journal (the latest event at each position)."""
    replayed: int
    """Steps the program issued and the journal served."""
    recomputed: int
    recomputed_identical: int
    requests_verified: int
    """Model steps whose request matched one recorded for the run."""
    requests_unverified: int
    """Model steps with no recorded request to compare with (payloads not recorded)."""
    result_identical: bool | None
    """The result (or error) byte for byte the run's; None when the run was stopped from
    outside (cancelled, past its deadline) and has no result of its own."""
    divergence: Divergence | None
    seconds: float
    pins: list[tuple[str, str, bytes]] = field(default_factory=list, repr=False)

    @property
    def identical(self) -> bool:
        """No divergence: every step and the result reproduced."""
        return self.divergence is None

    @property
    def diff(self) -> str:
        """A text diff of the diverging step's decoded outputs ('' when identical)."""
        d = self.divergence
        if d is None or (d.expected is None and d.got is None):
            return ""
        return text_diff(d.expected, d.got)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (without the pins)."""
        return {
            "object": "replay",
            "mode": "deterministic",
            "run_id": self.run_id,
            "program": self.program,
            "status": self.status,
            "identical": self.identical,
            "steps": self.steps,
            "replayed": self.replayed,
            "recomputed": self.recomputed,
            "recomputed_identical": self.recomputed_identical,
            "requests_verified": self.requests_verified,
            "requests_unverified": self.requests_unverified,
            "result_identical": self.result_identical,
            "divergence": None if self.divergence is None else self.divergence.to_dict(),
            "diff": self.diff,
            "seconds": round(self.seconds, 6),
        }


@dataclass(frozen=True, slots=True)
class Replayed:
    """A run loaded for replay: its row, input, journal (latest event per position), payloads
    and recorded model requests."""

    info: RunInfo
    lease: Lease
    payload: Any
    by_step: dict[str, Event]
    payloads: dict[str, bytes]
    requests: list[tuple[str, str]]
    """``(request hash, route)`` of the run's recorded model calls."""
    result: bytes | None


async def load_replayable(store: Store, run_id: str, principal: Principal = SYSTEM) -> Replayed:
    """The finished run ``run_id`` that ``principal`` may read, loaded for replay
    (``RunNotFound`` otherwise; ``run_not_finished`` 409 while it runs)."""
    info = await get_run(store, run_id, principal)
    if not info.finished:
        raise RequestError(
            f"run {run_id} is {info.status}; only finished runs can be replayed",
            code="run_not_finished",
            status=409,
        )
    row = await store.fetchone(
        "SELECT genesis_hash, tags, session_id FROM runs WHERE id = ?", (run_id,)
    )
    assert row is not None
    events = await load_events(store, run_id)
    payloads = await load_payloads(store, [run_id])
    requests = await store.fetchall(
        "SELECT request_hash, route FROM model_calls WHERE run_id = ? AND request_hash IS NOT NULL",
        (run_id,),
    )
    data = await get_blob(store, info.input_hash)
    result = await get_blob(store, info.result_hash) if info.result_hash else None
    owner = await run_owner(store, (info.org_id, info.team_id, info.user_id, info.key_id))
    lease = Lease(
        run_id=info.id,
        program=info.program,
        queue=info.queue,
        fence=info.fence,
        attempt=info.attempt,
        input_hash=info.input_hash,
        genesis_hash=str(row[0]),
        deadline_at=None,
        expires_at=math.inf,
        owner=owner,
        input_data=data,
        tags=tuple(orjson.loads(row[1])) if row[1] else (),
        session_id=row[2],
    )
    return Replayed(
        info,
        lease,
        orjson.loads(data) if data is not None else None,
        {e.step_id: e for e in events},  # a step re-run by a later attempt: its latest event
        payloads,
        [(str(h), str(r)) for h, r in requests],
        result,
    )


def _end(info: RunInfo, outcome: tuple[str, Any], tracker: ReplayTracker) -> bool | None:
    """Whether the program ended as the run did (the divergence noted when not)."""
    kind, value = outcome
    err = info.error_dict() or {}
    if info.status == "succeeded":
        expected: Any = ("result", None)
    elif err.get("code") in _CUT_SHORT or info.status == "cancelled":
        return None
    else:
        expected = ("error", err)
    if kind == "stopped":
        return False
    if expected[0] == "result" and kind == "result":
        return True  # compared by the caller (bytes)
    if expected[0] == "error" and kind == "error" and value == err:
        return True
    got = value if kind == "error" else orjson.loads(bytes(value))
    tracker.diverged(
        Divergence(
            "result" if kind == "result" else "error",
            expected=err if expected[0] == "error" else f"the run {info.status}",
            got=got,
            message=f"the run {info.status}, the replay "
            + ("returned a result" if kind == "result" else f"failed: {value.get('message')}"),
        )
    )
    return False


async def replay_run(
    store: Store,
    programs: Programs,
    run_id: str,
    principal: Principal = SYSTEM,
    *,
    loaded: Replayed | None = None,
) -> ReplayReport:
    """Re-execute the finished run ``run_id`` from its journal (see the module docstring).
    ``RunNotFound`` for a run ``principal`` may not read; ``ProgramNotFound`` when its program
    is not registered here."""
    found = loaded or await load_replayable(store, run_id, principal)
    info = found.info
    program = programs.get(info.program)
    tracker = ReplayTracker(
        requests=Counter(h for h, _ in found.requests),
        routes=tuple(dict.fromkeys(r for _, r in found.requests)),
    )
    last = max(found.by_step.values(), key=lambda e: e.n, default=None)
    state = RunState(
        store=store,
        lease=found.lease,
        by_step=found.by_step,
        payloads=found.payloads,
        written=len(found.by_step),
        head_hash=last.hash if last is not None else found.lease.genesis_hash,
        lease_expires=math.inf,
    )
    state.inline = None  # never write, not even inline
    ctx = ReplayContext(state, "", tracker)
    start = time.perf_counter()
    outcome: tuple[str, Any]
    try:
        value = await program(ctx, found.payload)
        outcome = ("result", encode(value))
    except ReplayStop:
        outcome = ("stopped", None)
    except Park as park:
        tracker.diverged(Divergence("parked", message=f"the program parked: {park.reason}"))
        outcome = ("stopped", None)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        code = exc.code if isinstance(exc, ElevenFactorError) else "program_error"
        outcome = ("error", {"code": code, "message": f"{type(exc).__name__}: {exc}"})
    seconds = time.perf_counter() - start
    same = _end(info, outcome, tracker)
    d = tracker.divergence
    stopped_there = len(tracker.consumed) == len(found.by_step)
    if same is None and d is not None and d.reason == "missing" and stopped_there:
        tracker.divergence = None  # the program went on where the run was stopped
    got_bytes = outcome[1] if outcome[0] == "result" else None
    if same and isinstance(got_bytes, bytes) and got_bytes != found.result:
        same = False
        tracker.diverged(
            Divergence(
                "result",
                expected=orjson.loads(found.result) if found.result else None,
                got=orjson.loads(got_bytes),
                message="the program returned another result than the run's",
            )
        )
    if outcome[0] != "stopped" and tracker.divergence is None:
        left = sorted(
            (e for sid, e in found.by_step.items() if sid not in tracker.consumed),
            key=lambda e: e.n,
        )
        if left and same is not None:
            e = left[0]
            tracker.diverged(
                Divergence(
                    "extra",
                    e.step_id,
                    e.n,
                    expected_kind=e.kind,
                    expected_name=e.name,
                    message=f"the journal has step {e.step_id} ({e.kind} {e.name!r}), which "
                    f"the program did not issue ({len(left)} such steps)",
                )
            )
    return ReplayReport(
        run_id=info.id,
        program=info.program,
        status=info.status,
        steps=len(found.by_step),
        replayed=len(tracker.consumed),
        recomputed=tracker.recomputed,
        recomputed_identical=tracker.recomputed_identical,
        requests_verified=tracker.requests_verified,
        requests_unverified=tracker.requests_unverified,
        result_identical=same,
        divergence=tracker.divergence,
        seconds=seconds,
        pins=tracker.pins,
    )
