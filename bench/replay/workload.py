"""The recorded workload: a teller agent (a scripted model answering after a realistic delay,
parallel tool calls against an in-process bank) and the questions it is asked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass

from elevenfactor.config import DeploymentConfig, ProjectConfig, ProviderConfig
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
    wrap_deployment,
)
from elevenfactor.observe import CallRecorder
from elevenfactor.runtime import Agent, AgentDeps, AgentSpec, Programs
from elevenfactor.runtime._replay_whatif import register_replay_program
from elevenfactor.store import Store
from elevenfactor.tools import FunctionToolset

BALANCES = {"alice": 120, "bob": 30, "carol": 7, "dan": 55, "erin": 1}
bank = FunctionToolset(name="bank")


@bank.tool(risk="read")
def balance(account: str) -> int:
    """The balance of an account."""
    return BALANCES.get(account, 0)


def _deployment(price: float) -> DeploymentConfig:
    return DeploymentConfig(
        provider="test", model="scripted", context_window=8000,
        price={"input_per_mtok": price, "output_per_mtok": price * 5},
        retry={"attempts": 1}, breaker=None,
    )  # fmt: skip


def _teller(delay: float):  # type: ignore[no-untyped-def]
    async def answer(messages: Sequence[Message], _: ModelSettings) -> Response:
        await asyncio.sleep(delay)  # what a hosted model takes, roughly
        usage = Usage(input_tokens=sum(len(str(m.content or "")) for m in messages) // 4 + 1,
                      output_tokens=12)  # fmt: skip
        done = [m.content for m in messages if isinstance(m, ToolMessage)]
        if not done:
            text = next(str(m.content) for m in messages if isinstance(m, UserMessage))
            names = [w for w in text.replace(",", " ").split() if w in BALANCES]
            calls = [
                ToolCall(id=f"c{i}", name="balance", arguments=json.dumps({"account": a}))
                for i, a in enumerate(names)
            ]
            if calls:
                return Response(message=AssistantMessage(tool_calls=calls),
                                finish_reason="tool_calls", usage=usage)  # fmt: skip
        total = sum(int(str(x)) for x in done)
        return Response(message=AssistantMessage(content=f"total {total}"), usage=usage)

    return answer


QUESTIONS = [
    "how much do alice and bob have?",
    "dan, erin and alice together?",
    "balance of carol",
    "what about bob and dan?",
]


def question(i: int) -> str:
    """A varied question."""
    return f"{QUESTIONS[i % len(QUESTIONS)]} (ticket {i})"


@dataclass
class Runtime:
    """The programs (``teller``, ``elevenfactor.replay``) and the recorder."""

    programs: Programs
    recorder: CallRecorder


def runtime(store: Store, delay: float) -> Runtime:
    """A runtime whose model ``m`` answers after ``delay`` seconds; ``m2`` too, pricier."""
    models = {"m": _deployment(2.0), "m2": _deployment(3.0)}
    project = ProjectConfig(providers={"test": ProviderConfig(type="test")}, models=models)
    deployments = {
        n: wrap_deployment(FunctionModel(_teller(delay), name=n), "test", models[n]) for n in models
    }
    registry = ModelRegistry(project, deployments=deployments)
    spec = AgentSpec(name="teller", model="m", instructions="You are a bank teller.",
                     tools=[{"toolset": "bank"}])  # fmt: skip
    recorder = CallRecorder(store)
    recorder.start()
    deps = AgentDeps(registry, {"bank": bank}, {"teller": spec}, recorder)
    programs = Programs()
    programs.register("teller", Agent(spec, deps))
    register_replay_program(programs, deps)
    return Runtime(programs, recorder)
