"""Context assembly latency for a 200-turn session, beside a bare floor, in the same run.

The session: 200 turns of a user question, an answer, and every third turn a tool call with a
~2 KB result (about 530 messages in all), plus 8 scored passages and 4 memories. Scenarios:

- ``fits``: a 128k window, everything goes in;
- ``drop_oldest``: SmolLM2's 8192 window, most of the history is dropped and old tool results
  shortened;
- ``summary_reused``: the 8192 window with summaries on, the summary of the span given back
  (the assembler reuses it; the summariser, a deterministic in-process function, is not called
  again).

The floor does the least any budget must: count each message (from the same warm cache) and
slice off the newest messages that fit. Each iteration times the floor and the assembler back
to back, so both see the same machine state. Counts are warm (the first assembly fills the
caches; its time is reported as ``cold_ms``). Each scenario runs twice: with the garbage
collector as it is, and with the warm heap frozen (``gc.freeze()``, as a long-lived server does
after start-up), since the collector's full passes over a large heap show up in the p99.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Sequence
from typing import Any

from bench.stats import summarize
from elevenfactor.context._assemble import Item, assemble
from elevenfactor.context._ctx_history import unit_tokens
from elevenfactor.context._spec import ContextSpec
from elevenfactor.context._tokens import EstimateCounter, GGUFCounter, TokenCounter
from elevenfactor.models._messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)

__all__ = ["run", "session"]

TURNS = 200


def session(turns: int = TURNS) -> list[Message]:
    """A deterministic conversation of ``turns`` turns."""
    out: list[Message] = []
    for i in range(turns):
        out.append(
            UserMessage(
                content=f"Turn {i}: what is the balance of account {1000 + i}, and did the "
                f"refund of order {i * 37} arrive? Please check the ledger for week {i % 52}."
            )
        )
        if i % 3 == 0:
            rows = [
                {"date": f"2026-{1 + i % 12:02d}-{1 + d:02d}", "amount": (i * 13 + d) % 997}
                for d in range(40)
            ]
            out.append(
                AssistantMessage(
                    tool_calls=[
                        ToolCall(
                            id=f"call_{i}",
                            name="ledger_lookup",
                            arguments=json.dumps({"account": 1000 + i, "week": i % 52}),
                        )
                    ]
                )
            )
            out.append(ToolMessage(tool_call_id=f"call_{i}", content=json.dumps(rows)))
        out.append(
            AssistantMessage(
                content=f"The balance of account {1000 + i} is {(i * 7919) % 10000} EUR. The "
                f"refund of order {i * 37} arrived on day {i % 28 + 1}; nothing else is pending."
            )
        )
    return out


TOOLS = [
    ToolDefinition(
        name="ledger_lookup",
        description="Look up an account's ledger entries for one week.",
        parameters={
            "type": "object",
            "properties": {"account": {"type": "integer"}, "week": {"type": "integer"}},
            "required": ["account", "week"],
        },
    )
]
PASSAGES = [
    Item(
        id=f"doc-{i}",
        text=f"Refunds are booked within {i + 2} business days; see policy section {i}. " * 4,
        score=1 - i / 10,
    )
    for i in range(8)
]
MEMORY = [
    Item(id=f"mem-{i}", text=f"The user prefers answers in EUR ({i}).", score=0.5) for i in range(4)
]


def _messages(ids: Sequence[str]) -> int:
    """How many history messages ids like ``history[3]`` and ``history[3-7]`` name."""
    n = 0
    for item in ids:
        first, _, last = item.removeprefix("history[").removesuffix("]").partition("-")
        n += int(last or first) - int(first) + 1
    return n


def floor(counter: TokenCounter, messages: Sequence[Message], budget: int) -> list[Message]:
    """The least a budget does: count each message, keep the newest that fit."""
    total = counter.count_messages([])
    keep = len(messages)
    for i in range(len(messages) - 1, -1, -1):
        cost = unit_tokens(counter, [messages[i]])
        if total + cost > budget:
            break
        total += cost
        keep = i
    return list(messages[keep:])


async def _summarise(messages: Sequence[Message]) -> str:  # deterministic, in-process
    return f"The user asked about {len(messages)} messages' worth of balances and refunds."


async def _scenario(counter: TokenCounter, name: str, iterations: int) -> dict[str, Any]:
    history = session()
    new = [UserMessage(content="And what about account 1200?")]
    window = 131_072 if name == "fits" else 8192
    spec = ContextSpec.model_validate({"history": {"summarise": name == "summary_reused"}})
    kwargs: dict[str, Any] = {
        "window": window,
        "reserved_output": 256,
        "instructions": "You answer billing questions. Use the tools; never guess amounts.",
        "tools": TOOLS,
        "memory": MEMORY,
        "passages": PASSAGES,
        "history": history,
        "input": new,
        "summarise": _summarise,
    }
    t0 = time.perf_counter()
    first = await assemble(spec, counter, **kwargs)
    cold = time.perf_counter() - t0
    kwargs["summaries"] = first.summaries
    timings: dict[str, dict[str, Any]] = {}
    for gc_mode in ("default", "frozen"):
        gc.collect()
        if gc_mode == "frozen":
            gc.freeze()  # what a long-lived server does after start-up
        floor_ms: list[float] = []
        asm_ms: list[float] = []
        full_passes = gc.get_stats()[2]["collections"]
        for _ in range(iterations):
            t0 = time.perf_counter()
            floor(counter, [SystemMessage(content="-"), *history, *new], window - 256)
            t1 = time.perf_counter()
            done = await assemble(spec, counter, **kwargs)
            t2 = time.perf_counter()
            floor_ms.append((t1 - t0) * 1000)
            asm_ms.append((t2 - t1) * 1000)
        gc.unfreeze()
        timings[gc_mode] = {
            "floor_ms": summarize(floor_ms),
            "assemble_ms": summarize(asm_ms),
            "gc_full_passes": gc.get_stats()[2]["collections"] - full_passes,
        }
    m = done.manifest
    hist = m.section("history")
    return {
        "counter": counter.name,
        "scenario": name,
        "messages_in_session": len(history) + 1,
        "window": window,
        "cold_ms": cold * 1000,
        **timings["default"],
        "gc_frozen": timings["frozen"],
        "total_tokens": m.total,
        "history_in": _messages(hist.included),
        "history_left_out": _messages([x.id for x in hist.left_out]),
        "summary_reused": hist.summary.reused if hist.summary else None,
    }


def run(iterations: int = 300, *, gguf_path: str | None = None) -> list[dict[str, Any]]:
    """Every scenario with the estimate and (when the GGUF is there) SmolLM2's vocabulary."""
    counters: list[TokenCounter] = [EstimateCounter()]
    if gguf_path is not None:
        counters.append(GGUFCounter(gguf_path))

    async def main() -> list[dict[str, Any]]:
        return [
            await _scenario(c, name, iterations)
            for c in counters
            for name in ("fits", "drop_oldest", "summary_reused")
        ]

    return asyncio.run(main())
