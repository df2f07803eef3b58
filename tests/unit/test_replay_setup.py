"""What the replay tests record runs with (no tests here): a teller agent — a prompt file,
priced scripted deployments with a known context window (so context assembly is journaled),
a bank toolset whose calls are counted — and a workflow with parallel steps, a random number,
a uuid, the clock and a durable timer."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elevenfactor.config import DeploymentConfig, ProjectConfig, ProviderConfig
from elevenfactor.context import load_prompts
from elevenfactor.models import (
    AssistantMessage,
    FunctionModel,
    Message,
    ModelRegistry,
    ModelSettings,
    Response,
    SystemMessage,
    ToolCall,
    ToolMessage,
    Usage,
    UserMessage,
    wrap_deployment,
)
from elevenfactor.observe import CallRecorder
from elevenfactor.runtime import Agent, AgentDeps, AgentSpec, Programs, RunContext
from elevenfactor.runtime._replay_whatif import register_replay_program
from elevenfactor.store import Store
from elevenfactor.tools import FunctionToolset

effects: Counter[str] = Counter()
"""Every real call of a bank tool (``balance:alice``)."""
bank = FunctionToolset(name="bank")
BALANCES = {"alice": 120, "bob": 30, "carol": 7, "dan": 55, "erin": 1}


@bank.tool(risk="read")
def balance(account: str) -> int:
    """The balance of an account."""
    effects[f"balance:{account}"] += 1
    return BALANCES.get(account, 0)


PROMPT = """---
id: teller
description: Bank teller
inputs: {{type: object, properties: {{}}}}
---
You are a bank teller. {style}
"""
V1 = "Answer briefly."
V2 = "Answer in CAPITALS (SHOUT)."


def priced(price: float) -> DeploymentConfig:
    return DeploymentConfig(
        provider="test", model="scripted", context_window=8000,
        price={"input_per_mtok": price, "output_per_mtok": price * 5},
        retry={"attempts": 1}, breaker=None,
    )  # fmt: skip


def _system(messages: Sequence[Message]) -> str:
    return " ".join(str(m.content) for m in messages if isinstance(m, SystemMessage))


def _accounts(messages: Sequence[Message]) -> list[str]:
    text = next(str(m.content) for m in messages if isinstance(m, UserMessage))
    return [w for w in text.replace(",", " ").split() if w in BALANCES]


def teller(messages: Sequence[Message], _: ModelSettings) -> Response:
    """Looks up every account named in the question (in parallel), then adds them up; shouts
    when the system prompt says so."""
    usage = Usage(input_tokens=sum(len(str(m.content or "")) for m in messages), output_tokens=7)
    done = [m.content for m in messages if isinstance(m, ToolMessage)]
    if not done:
        calls = [
            ToolCall(id=f"c{i}", name="balance", arguments=json.dumps({"account": a}))
            for i, a in enumerate(_accounts(messages))
        ]
        if calls:
            message = AssistantMessage(tool_calls=calls)
            return Response(message=message, finish_reason="tool_calls", usage=usage)
    text = f"total {sum(int(str(x)) for x in done)}"
    if "SHOUT" in _system(messages):
        text = text.upper()
    return Response(message=AssistantMessage(content=text), usage=usage)


def nosy(messages: Sequence[Message], settings: ModelSettings) -> Response:
    """``teller``, but it also asks about carol (a call the recording does not have)."""
    first = teller(messages, settings)
    calls = first.message.tool_calls
    if calls:
        extra = ToolCall(id="cx", name="balance", arguments=json.dumps({"account": "carol"}))
        message = AssistantMessage(tool_calls=[*calls, extra])
        return Response(message=message, finish_reason="tool_calls", usage=first.usage)
    return first


async def chores(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """A workflow: clock, random, uuid, squares in parallel, a durable timer."""
    started = await ctx.now()
    pick = await ctx.random()
    ident = await ctx.uuid()

    async def square(branch: RunContext, x: int) -> int:
        return int(await branch.step("square", lambda: x * x))

    squares = await ctx.map(square, list(data["xs"]), limit=3)
    await ctx.sleep(0.0, name="pause")
    return {"sum": sum(squares), "heads": pick < 0.5, "id": ident, "late": started > 0}


@dataclass
class World:
    """A runtime to record and replay with."""

    programs: Programs
    deps: AgentDeps
    recorder: CallRecorder


def world(
    store: Store,
    prompts_dir: Path,
    *,
    style: str = V1,
    instructions: str | None = None,
    output_schema: dict[str, Any] | None = None,
) -> World:
    """Programs ``teller`` (an agent), ``chores`` (a workflow) and ``elevenfactor.replay``;
    the prompt file written with ``style``. ``instructions`` replaces the prompt."""
    prompts_dir.mkdir(parents=True, exist_ok=True)
    (prompts_dir / "teller.md").write_text(PROMPT.format(style=style))
    models = {"m": priced(2.0), "m2": priced(8.0), "nosy": priced(2.0)}
    project = ProjectConfig(providers={"test": ProviderConfig(type="test")}, models=models)
    handlers = {"m": teller, "m2": teller, "nosy": nosy}
    deployments = {
        name: wrap_deployment(FunctionModel(handlers[name], name=name), "test", models[name])
        for name in models
    }
    registry = ModelRegistry(project, deployments=deployments)
    given: dict[str, Any] = (
        {"instructions": instructions} if instructions is not None else {"prompt": "teller"}
    )
    spec = AgentSpec(
        name="teller", model="m", tools=[{"toolset": "bank"}], output_schema=output_schema,
        **given,
    )  # fmt: skip
    recorder = CallRecorder(store)
    recorder.start()
    deps = AgentDeps(
        registry, {"bank": bank}, {"teller": spec}, recorder, prompts=load_prompts(prompts_dir)
    )
    programs = Programs()
    programs.register("teller", Agent(spec, deps))
    programs.register("chores", chores)
    register_replay_program(programs, deps)
    return World(programs, deps, recorder)


QUESTIONS = [
    "how much do alice and bob have?",
    "balance of carol",
    "dan, erin and alice together?",
    "nobody at all",
    "bob",
]


def question(i: int) -> str:
    """A varied question (accounts differ run to run)."""
    base = QUESTIONS[i % len(QUESTIONS)]
    return f"{base} (ticket {i})"
