"""The chaos test's workload: a real multi-step agent with side-effecting tools.

``chaos_order`` (loaded by workers through ``programs:`` in the project file) runs the agent
loop with a deterministic policy model, then parks on a durable timer, then takes one more
side-effecting step of its own:

1. model -> ``reserve(A)`` and ``reserve(B)`` in parallel
2. model -> ``charge``
3. model -> ``ship`` and ``notify`` in parallel
4. model -> the final answer
5. ``ctx.sleep`` (the run parks; any worker may resume it)
6. ``receipt`` (a plain ``ctx.step``)

Every model request and tool call records its execution in the ledger (``chaos_ledger``); the six
side effects are written idempotently by step key. Executions take a few tens of milliseconds
after their effect, so a SIGKILL often lands between an effect and its journal write.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from typing import Any

from elevenfactor.config import ProjectConfig
from elevenfactor.models import (
    AssistantMessage,
    FunctionModel,
    Message,
    ModelRegistry,
    ModelSettings,
    Response,
    ToolCall,
    ToolMessage,
    Usage,
    UserMessage,
)
from elevenfactor.runtime import Agent, AgentDeps, AgentSpec, Programs, RunContext, step_key
from elevenfactor.tools import FunctionToolset, ToolContext
from tests.support import chaos_ledger

__all__ = ["SLEEP_SECONDS", "expected_answer", "expected_effects", "programs"]

SLEEP_SECONDS = 0.3


async def _work() -> None:
    """Time spent after the effect: the window where a kill forces a re-execution."""
    await asyncio.sleep(random.uniform(0.03, 0.1))


async def _effect(name: str, args: dict[str, Any], key: str | None) -> None:
    attempt = await chaos_ledger.begin("tool", name, args, key, effect=True)
    await _work()
    await chaos_ledger.finish(attempt)


shop = FunctionToolset(name="shop", risk="write", raise_errors=True)


@shop.tool
async def reserve(sku: str, qty: int, ctx: ToolContext) -> str:
    """Reserve stock.

    Args:
        sku: The item.
        qty: How many.
    """
    await _effect("reserve", {"sku": sku, "qty": qty}, ctx.step_key)
    return f"reserved {qty} x {sku}"


@shop.tool
async def charge(order: str, amount: int, ctx: ToolContext) -> str:
    """Charge the customer.

    Args:
        order: The order id.
        amount: Cents.
    """
    await _effect("charge", {"order": order, "amount": amount}, ctx.step_key)
    return f"charged {amount} for {order}"


@shop.tool
async def ship(order: str, ctx: ToolContext) -> str:
    """Ship an order.

    Args:
        order: The order id.
    """
    await _effect("ship", {"order": order}, ctx.step_key)
    return f"shipped {order}"


@shop.tool
async def notify(order: str, channel: str, ctx: ToolContext) -> str:
    """Tell the customer.

    Args:
        order: The order id.
        channel: email or sms.
    """
    await _effect("notify", {"order": order, "channel": channel}, ctx.step_key)
    return f"notified {order} by {channel}"


def _call(name: str, args: dict[str, Any], i: int) -> ToolCall:
    return ToolCall(id=f"call_{i}_{name}", name=name, arguments=json.dumps(args))


def _plan(order: str, amount: int) -> list[list[tuple[str, dict[str, Any]]]]:
    """The tool calls of each turn; the same for every execution of a run."""
    return [
        [
            ("reserve", {"sku": f"A-{order}", "qty": 1}),
            ("reserve", {"sku": f"B-{order}", "qty": 2}),
        ],
        [("charge", {"order": order, "amount": amount})],
        [("ship", {"order": order}), ("notify", {"order": order, "channel": "email"})],
    ]


def _amount(order: str) -> int:
    return 100 + sum(map(ord, order)) % 900


def expected_effects(order: str) -> list[tuple[str, dict[str, Any]]]:
    """Every side effect a run of ``order`` must have, once each."""
    effects = [call for turn in _plan(order, _amount(order)) for call in turn]
    return [*effects, ("receipt", {"order": order})]


def expected_answer(order: str) -> str:
    """The agent's final answer for ``order``."""
    return f"{order}: reserved, charged {_amount(order)}, shipped, notified"


async def _policy(messages: Sequence[Message], settings: ModelSettings) -> Response:
    """A deterministic model: the next turn of the plan, given the tool results so far."""
    order = next(m.content for m in messages if isinstance(m, UserMessage))
    assert isinstance(order, str)
    done = sum(isinstance(m, ToolMessage) for m in messages)
    attempt = await chaos_ledger.begin("model", "model", {"done": done}, step_key(), effect=False)
    await _work()
    await chaos_ledger.finish(attempt)
    usage = Usage(input_tokens=1, output_tokens=1)
    seen = 0
    for turn in _plan(order, _amount(order)):
        if done == seen:
            calls = [_call(name, args, j) for j, (name, args) in enumerate(turn)]
            message = AssistantMessage(content=None, tool_calls=calls)
            return Response(message=message, finish_reason="tool_calls", usage=usage)
        seen += len(turn)
    if done != seen:
        raise AssertionError(f"{order}: {done} tool results, the plan has {seen}")
    text = expected_answer(order)
    return Response(message=AssistantMessage(content=text), finish_reason="stop", usage=usage)


_SPEC = AgentSpec(
    name="shopkeeper",
    instructions="Fulfil the order with the shop tools.",
    tools=[{"toolset": "shop"}],
    limits={"max_steps": 6, "max_tool_calls": 10},
)
_MODEL = FunctionModel(_policy, name="chaos-policy")
_AGENT = Agent(
    _SPEC,
    AgentDeps(
        ModelRegistry(ProjectConfig(), deployments={"default": _MODEL}),
        {"shop": shop},
        {_SPEC.name: _SPEC},
    ),
)


async def _receipt(order: str) -> str:
    await _effect("receipt", {"order": order}, step_key())
    return f"receipt for {order}"


programs = Programs()


@programs.workflow("chaos_order")
async def chaos_order(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """The agent, a durable timer, then one more side effect."""
    order = str(data["order"])
    result = await _AGENT(ctx, {"input": order})
    await ctx.sleep(SLEEP_SECONDS)
    receipt = await ctx.step("receipt", _receipt, order)
    return {"answer": result["output"], "turns": result["turns"], "receipt": receipt}
