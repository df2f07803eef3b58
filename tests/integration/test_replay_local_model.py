"""Runs recorded with the real local model (SmolLM2-135M through llama.cpp, in-process) replay
byte for byte, on both stores: the model is never loaded for the replay's sake — every answer
comes from the journal — and its requests are the recorded ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from elevenfactor.config import DeploymentConfig, ProjectConfig, ProviderConfig
from elevenfactor.governance import SYSTEM
from elevenfactor.models import ModelRegistry
from elevenfactor.observe import CallRecorder
from elevenfactor.runtime import Agent, AgentDeps, AgentSpec, Programs, Worker, get_run, submit_run
from elevenfactor.runtime._replay_batch import replay_many
from elevenfactor.store import Store
from tests.unit.test_replay_setup import bank, effects

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SMOL = DeploymentConfig(
    provider="local",
    model="SmolLM2-135M-Instruct-Q4_1",
    context_window=2048,
    params={"temperature": 0.7, "repeat_penalty": 1.3, "seed": 7},
)


def _programs(store: Store) -> tuple[Programs, ModelRegistry, CallRecorder]:
    project = ProjectConfig(
        providers={"local": ProviderConfig(type="local")}, models={"smol": SMOL}
    )
    registry = ModelRegistry.from_project(project)
    spec = AgentSpec(
        name="smol-teller",
        model="smol",
        instructions="You are a bank teller. Use the balance tool when asked about an account.",
        tools=[{"toolset": "bank"}],
        settings={"max_tokens": 24},
        limits={"max_steps": 3},
    )
    recorder = CallRecorder(store)
    recorder.start()
    programs = Programs()
    programs.register(spec.name, Agent(spec, AgentDeps(registry, {"bank": bank}, {}, recorder)))
    return programs, registry, recorder


async def test_local_model_runs_replay_identically(store: Store, tmp_path: Path) -> None:
    programs, registry, recorder = _programs(store)
    questions = ["What is alice's balance?", "Say hello.", "How much does bob have?"]
    ids = [await submit_run(store, "smol-teller", q) for q in questions]
    try:
        await Worker(store, programs).run_until_idle()
        await recorder.flush()
    finally:
        await recorder.aclose()
        await registry.aclose()
    finished = [await get_run(store, rid) for rid in ids]
    assert all(r.finished for r in finished)
    calls = sum(effects.values())
    replayer, registry2, recorder2 = _programs(store)
    try:
        out = await replay_many(store, replayer, SYSTEM, ids)
    finally:
        await recorder2.aclose()
        await registry2.aclose()
    assert not out.skipped
    assert [r.to_dict() for r in out.deterministic if not r.identical] == []
    succeeded = [r for r in out.deterministic if r.status == "succeeded"]
    assert succeeded and all(r.requests_verified >= 1 for r in succeeded)
    assert sum(effects.values()) == calls
