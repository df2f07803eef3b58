"""Model call records (``model_calls`` rows hashed with the project's ``record_hash``): the calls
runs make, and gateway calls (chat and embeddings, some checked by a guard policy) spread over
the seeded period by the users' weights."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import orjson

from bench.ui._people import Member
from bench.ui._plan import DEPLOYMENTS
from bench.ui._sink import SqliteSink
from bench.ui._steps import POLICY, Call, guard_record, pick_call
from elevenfactor.observe._calls import record_hash

__all__ = ["call_row", "gateway_calls"]

_ERRORS = ("RateLimited", "Timeout", "ProviderError")


def call_row(
    call_id: str,
    trace_id: str,
    at: float,
    member: Member,
    call: Call,
    *,
    ok: bool = True,
    run_id: str | None = None,
    agent: str | None = None,
    session_id: str | None = None,
    tags: Sequence[str] = (),
    prompt: str | None = None,
    kind: str | None = None,
    guard: dict[str, Any] | None = None,
    stream: bool = False,
) -> tuple[Any, ...]:
    """A ``model_calls`` row (``RECORD_COLUMNS`` order, then its ``record_hash``)."""
    org, team, user, key = member.owner
    saved = round(call.cost * 0.1, 8) if call.tokens_cached else 0.0
    row = (
        call_id, trace_id, at, key, call.route, call.provider, call.deployment, call.deployment,
        int(stream), "ok" if ok else "error", None if ok else _ERRORS[len(call_id) % 3],
        call.tokens_in if ok else 0, call.tokens_out if ok else 0, call.latency_ms,
        call.cost if ok else None, 0, orjson.dumps([call.deployment]).decode(), None, None,
        org, team, user, run_id, agent, session_id,
        orjson.dumps(list(tags)).decode() if tags else None,
        call.tokens_cached if ok else 0, None, saved if ok else None, prompt, kind,
        orjson.dumps(guard).decode() if guard is not None else None, None,
    )  # fmt: skip
    return (*row, record_hash(row))


def _embedding(rng: random.Random) -> Call:
    dep, provider, route, *_ = next(d for d in DEPLOYMENTS if d[2] == "embed")
    tokens = rng.randrange(20, 2000)
    return Call(dep, provider, route, tokens, 0, 0, 0.0, rng.uniform(5, 60))


def gateway_calls(
    rng: random.Random,
    sink: SqliteSink,
    members: Sequence[Member],
    weights: Sequence[float],
    count: int,
    start: float,
    end: float,
) -> int:
    """``count`` gateway calls between ``start`` and ``end`` (in time order); how many were
    written."""
    times = sorted(rng.uniform(start, end) for _ in range(count))
    picks = rng.choices(range(len(members)), weights, k=count)
    for at, who in zip(times, picks, strict=True):
        member = members[who]
        embed = rng.random() < 0.08
        call = _embedding(rng) if embed else pick_call(rng)
        guard: dict[str, Any] | None = None
        if not embed and rng.random() < 0.35:
            verdicts = [guard_record(rng, "input", 0.05)]
            if rng.random() < 0.5:
                verdicts.append(guard_record(rng, "output", 0.02))
            guard = {"policies": [POLICY], "verdicts": verdicts}
        ok = rng.random() > 0.03
        tags = ["prod"] if rng.random() < 0.6 else []
        sink.add(
            "model_calls",
            call_row(
                f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(128):032x}", at, member,
                call, ok=ok, tags=tags, kind="embedding" if embed else None, guard=guard,
                stream=rng.random() < 0.3,
                session_id=f"sess-{member.person.name}-{rng.randrange(40)}"
                if rng.random() < 0.2 else None,
            ),
        )  # fmt: skip
    return count
