"""The journal of a generated run, step by step: what an agent or a workflow of the product
journals (kinds, names, outputs shaped as the runtime stores them) and how long each step took.

A ``Step`` is not hashed yet: ``_runs_gen`` chains them into events. Model steps carry the call
they made (a ``model_calls`` row); the approval step is a marker the run factory fills in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

from bench.ui._plan import APPROVAL_TOOLS, DEPLOYMENTS
from elevenfactor.context._manifest import LeftOut, Manifest, SectionReport

__all__ = [
    "POLICY",
    "TOOL_LIST",
    "Call",
    "Step",
    "agent_steps",
    "eval_steps",
    "guard_record",
    "workflow_steps",
]

POLICY = "default@3f2a1b9c"
_TOOLS = ("search", "lookup_order", "read_file", "http_get", "calculator")
_QUERY = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
_GATED = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "description": "The order"},
        "amount": {"type": "number", "minimum": 0},
        "note": {"type": "string"},
    },
    "required": ["order_id", "amount"],
}
TOOL_LIST = [
    *({"name": t, "description": f"{t} tool", "parameters": _QUERY, "risk": "low"} for t in _TOOLS),
    *(
        {"name": t, "description": f"{t} (needs a reviewer)", "parameters": _GATED, "risk": "high"}
        for t in APPROVAL_TOOLS
    ),
]
"""What the agents' tool listing step journals: names, schemas and risk."""
_CHAT = [d for d in DEPLOYMENTS if d[2] != "embed"]


@dataclass(frozen=True, slots=True)
class Call:
    """What a model step cost: its deployment, provider, route, tokens, cost and latency."""

    deployment: str
    provider: str
    route: str
    tokens_in: int
    tokens_out: int
    tokens_cached: int
    cost: float
    latency_ms: float


@dataclass(slots=True)
class Step:
    """One step to journal: ``output`` is JSON-ready (None with ``error``)."""

    kind: str
    name: str
    seconds: float
    output: Any = None
    call: Call | None = None
    approval: str | None = None
    """The tool an approval step gates (its decision is the step's output)."""
    child: str | None = None
    """The program of the child run a ``subrun`` step starts."""


def pick_call(rng: random.Random, route: str | None = None) -> Call:
    """A chat call on a deployment (of ``route`` if given), with tokens, cost and latency."""
    options = [d for d in _CHAT if route is None or d[2] == route] or _CHAT
    weights = [d[5] for d in options]
    dep, provider, rt, pin, pout, _ = rng.choices(options, weights)[0]
    tin = int(rng.lognormvariate(7.0, 0.8)) + 50
    tout = int(rng.lognormvariate(5.0, 0.9)) + 5
    cached = int(tin * rng.random() * 0.6) if rng.random() < 0.3 else 0
    cost = round(((tin - cached) * pin + cached * pin * 0.5 + tout * pout) / 1e6, 8)
    latency = 150 + tout * rng.uniform(8, 25) + tin * 0.02
    return Call(dep, provider, rt, tin, tout, cached, cost, latency)


def guard_record(rng: random.Random, stage: str, trip: float = 0.03) -> dict[str, Any]:
    """A guard verdict as the journal stores it (positions, never the matched text)."""
    action, rule, findings, fired = "allow", "", [], []
    if rng.random() < trip:
        action = rng.choice(("redact", "redact", "block", "escalate"))
        rule = rng.choice(("pii.email", "pii.phone", "secrets.api_key", "injection.override"))
        start = rng.randrange(0, 400)
        findings = [
            {"rule": rule, "kind": rule.split(".")[0], "start": start, "end": start + 18,
             "score": 0.93, "detail": None},
        ]  # fmt: skip
        fired = [{"rule": rule, "action": action, "policy": POLICY}]
    return {
        "stage": stage, "action": action, "policy": POLICY, "rule": rule, "findings": findings,
        "fired": fired, "elapsed_us": rng.randrange(40, 900), "policies": [POLICY],
    }  # fmt: skip


def _manifest(rng: random.Random, program: str) -> dict[str, Any]:
    history = rng.randrange(0, 30)
    dropped = [
        LeftOut(id=f"history[{i}]", reason="dropped_oldest", tokens=rng.randrange(20, 300))
        for i in range(max(0, history - 12))
    ]
    sections = [
        SectionReport(name="instructions", priority=None, min_tokens=0, max_tokens=None,
                      wanted=420, tokens=420, included=[f"{program}-system"]),
        SectionReport(name="tools", priority=None, min_tokens=0, max_tokens=None,
                      wanted=260, tokens=260, included=list(_TOOLS[:3])),
        SectionReport(name="input", priority=None, min_tokens=0, max_tokens=None,
                      wanted=90, tokens=90, included=["input"]),
        SectionReport(name="history", priority=2, min_tokens=200, max_tokens=None,
                      wanted=history * 80, tokens=min(history, 12) * 80,
                      included=[f"history[{i}]" for i in range(max(0, history - 12), history)],
                      left_out=dropped),
    ]  # fmt: skip
    total = sum(s.tokens for s in sections) + 12
    manifest = Manifest(
        counter="estimate:1", window=8192, reserved_output=1024, budget=7168, overhead=12,
        total=total, sections=sections,
    )  # fmt: skip
    return manifest.model_dump(mode="json")


def _response(rng: random.Random, call: Call, tool: str | None) -> dict[str, Any]:
    calls = []
    if tool is not None:
        args = orjson.dumps({"query": f"order {rng.randrange(10_000)} status"}).decode()
        calls = [{"id": f"call_{rng.getrandbits(40):010x}", "name": tool, "arguments": args}]
    text = None if tool else "Here is what I found: " + "lorem ipsum " * rng.randrange(2, 12)
    return {
        "message": {"role": "assistant", "content": text, "tool_calls": calls},
        "usage": {"input_tokens": call.tokens_in, "output_tokens": call.tokens_out,
                  "cached_input_tokens": call.tokens_cached},
        "model": call.deployment, "finish_reason": "tool_calls" if tool else "stop",
        "deployment": call.deployment, "cache_hit": False,
    }  # fmt: skip


def agent_steps(
    rng: random.Random,
    program: str,
    turns: int,
    *,
    session: bool,
    approval_turn: int | None = None,
    child: str | None = None,
) -> list[Step]:
    """An agent's journal as ``runtime._agent`` writes it: input guard, clock, prompt, tool
    listing (with their schemas), session, then per turn the context manifest, budget + model
    (+ a tool call between turns, gated by an approval at ``approval_turn``, or a child run),
    and the output guard."""
    steps: list[Step] = [
        Step("guard", "guard.input", 0.002, guard_record(rng, "input")),
        Step("clock", "now", 0.0, rng.uniform(1.7e9, 1.8e9)),
        Step("prompt", "prompt", 0.003, {"prompt": f"{program}-system@a1b2c3", "inputs": 2}),
        Step("tools", "list", 0.001, TOOL_LIST),
    ]
    if session:
        steps.append(Step("session", "session.load", 0.004, {"messages": rng.randrange(0, 40)}))
    route = "smart" if program in ("research", "coder") else "fast"
    for turn in range(turns):
        last = turn == turns - 1
        steps.append(Step("context", "context", 0.004, _manifest(rng, program)))
        call = pick_call(rng, route)
        tool = None if last else rng.choice(_TOOLS)
        held = {"hold": f"hold_{rng.getrandbits(48):012x}", "amount": 0.05}
        steps.append(Step("budget", "budget.reserve", 0.002, held))
        answer = _response(rng, call, tool)
        steps.append(Step("model", "model", call.latency_ms / 1000, answer, call))
        steps.append(Step("budget", "budget.commit", 0.002, {"cost": call.cost}))
        if last:
            break
        if child is not None and turn == 0:
            steps.append(Step("subrun", child, 0.0, None, child=child))
            continue
        steps.append(Step("guard", "guard.tool_call", 0.001, guard_record(rng, "tool_call")))
        if approval_turn == turn:
            gated = rng.choice(APPROVAL_TOOLS)
            steps.append(Step("approval", f"tool:{gated}", 0.0, None, approval=gated))
            tool = gated
        result = {"content": f"{tool} result " + "x" * rng.randrange(20, 200), "is_error": False}
        steps.append(Step("tool", f"tool:{tool}", rng.uniform(0.02, 1.5), result))
        steps.append(Step("guard", "guard.tool_result", 0.001, guard_record(rng, "tool_result")))
    steps.append(Step("guard", "guard.output", 0.003, guard_record(rng, "output")))
    return steps


def workflow_steps(rng: random.Random, program: str, child: str | None = None) -> list[Step]:
    """A workflow's journal: a clock, a few named steps of its own, maybe a child run."""
    steps = [Step("clock", "now", 0.0, rng.uniform(1.7e9, 1.8e9))]
    names = {
        "ingest": ("fetch", "parse", "chunk", "embed", "store"),
        "nightly-report": ("query", "aggregate", "render", "upload"),
        "billing-sync": ("list_invoices", "reconcile", "post_ledger"),
        "webhook-fanout": ("load_subscribers", "deliver", "record"),
    }.get(program, ("work",))
    for name in names[: rng.randrange(2, len(names) + 1)]:
        out = {"ok": True, "items": rng.randrange(0, 500), "note": "y" * rng.randrange(0, 120)}
        steps.append(Step("step", name, rng.uniform(0.01, 3.0), out))
    if child is not None:
        steps.append(Step("subrun", child, 0.0, None, child=child))
    if rng.random() < 0.3:
        steps.append(Step("random", "uuid", 0.0, f"{rng.getrandbits(128):032x}"))
    return steps


def eval_steps(rng: random.Random, suite: str, cases: int) -> list[Step]:
    """An eval run: load the suite, one step per case, the report."""
    steps = [Step("step", "load_suite", 0.01, {"suite": suite, "cases": cases})]
    for i in range(cases):
        steps.append(Step("step", f"case:{i}", rng.uniform(0.5, 4.0), {"passed": True}))
    steps.append(Step("step", "report", 0.02, {"suite": suite}))
    return steps
