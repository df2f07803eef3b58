"""An agent's instructions from a versioned prompt file, and its context window assembled under
one token budget with a journaled manifest — on SQLite and PostgreSQL, deterministic models."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from elevenfactor.cli import main
from elevenfactor.config import DeploymentConfig, ProjectConfig, ProviderConfig
from elevenfactor.context import Manifest, load_prompts
from elevenfactor.errors import ConfigError
from elevenfactor.models import (
    AssistantMessage,
    FunctionModel,
    Message,
    ModelRegistry,
    ModelSettings,
    Response,
    SystemMessage,
    Usage,
    UserMessage,
    wrap_deployment,
)
from elevenfactor.observe import CallRecorder
from elevenfactor.runtime import (
    Agent,
    AgentDeps,
    AgentSpec,
    Programs,
    Worker,
    get_run,
    load_agents,
    submit_run,
)
from elevenfactor.runtime._journal import describe_steps
from elevenfactor.store import Store

PROMPT = """---
id: support
description: Billing support
model: {temperature: 0.2}
inputs:
  type: object
  properties: {customer: {type: string}, tier: {type: string}}
  required: [customer]
---
You help {{ customer }}{% if tier %} ({{ tier }}){% endif %} with billing.
"""


def deployment(window: int | None = None) -> DeploymentConfig:
    return DeploymentConfig(
        provider="test", model="scripted-1", context_window=window, retry={"attempts": 1},
        breaker=None,
    )  # fmt: skip


def setup(
    script: FunctionModel,
    spec: AgentSpec,
    *,
    window: int | None = None,
    prompts_dir: Path | None = None,
    labels: dict[str, dict[str, str]] | None = None,
    recorder: CallRecorder | None = None,
    cheap: FunctionModel | None = None,
) -> Programs:
    models = {"m": deployment(window)}
    deployments = {"m": wrap_deployment(script, "test", models["m"])}
    if cheap is not None:
        models["cheap"] = deployment(window)
        deployments["cheap"] = wrap_deployment(cheap, "test", models["cheap"])
    project = ProjectConfig(providers={"test": ProviderConfig(type="test")}, models=models)
    registry = ModelRegistry(project, deployments=deployments)
    prompts = load_prompts(prompts_dir, labels) if prompts_dir is not None else None
    deps = AgentDeps(registry, {}, {spec.name: spec}, recorder, prompts=prompts)
    programs = Programs()
    programs.register(spec.name, Agent(spec, deps))
    return programs


def answer(text: str) -> Response:
    return Response(message=AssistantMessage(content=text), usage=Usage(input_tokens=5))


async def steps(store: Store, run_id: str) -> list[dict[str, Any]]:
    return [s for s in await describe_steps(store, run_id) if s["status"] == "done"]


async def test_an_agent_renders_its_prompt_and_records_the_version(
    store: Store, tmp_path: Path
) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "support.md").write_text(PROMPT)
    seen: list[Sequence[Message]] = []
    settings_seen: list[ModelSettings] = []

    def script(messages: Sequence[Message], settings: ModelSettings) -> Response:
        seen.append(list(messages))
        settings_seen.append(settings)
        return answer("done")

    spec = AgentSpec(name="clerk", model="m", prompt="support", prompt_inputs={"customer": "Ada"})
    recorder = CallRecorder(store)
    programs = setup(FunctionModel(script), spec, prompts_dir=tmp_path / "prompts",
                     recorder=recorder)  # fmt: skip
    rid = await submit_run(store, "clerk", {"input": "hi", "prompt_inputs": {"tier": "pro"}})
    await Worker(store, programs).run_until_idle()
    assert (await get_run(store, rid)).status == "succeeded"
    system = seen[0][0]
    assert isinstance(system, SystemMessage)
    assert system.content == "You help Ada (pro) with billing."
    assert settings_seen[0].temperature == 0.2  # the prompt's model parameters
    registry = load_prompts(tmp_path / "prompts")
    ref = registry.get("support").ref
    prompt_step = next(s for s in await steps(store, rid) if s["kind"] == "prompt")
    assert prompt_step["output"]["ref"] == ref
    row = await store.fetchone("SELECT prompt_id FROM prompt_versions")
    assert row is not None and row[0] == "support"
    await recorder.flush()
    call = await store.fetchone("SELECT prompt FROM model_calls WHERE run_id = ?", (rid,))
    assert call is not None and call[0] == ref


async def test_a_label_keeps_serving_its_version_after_the_file_changes(
    store: Store, tmp_path: Path
) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "support.md").write_text(PROMPT)
    old = load_prompts(folder).get("support")
    seen: list[str] = []

    def script(messages: Sequence[Message], _: ModelSettings) -> Response:
        seen.append(str(messages[0].content))
        return answer("ok")

    spec = AgentSpec(name="clerk", model="m", prompt="support", prompt_inputs={"customer": "Ada"})
    await Worker(store, setup(FunctionModel(script), spec, prompts_dir=folder)).run_until_idle()
    await submit_run(store, "clerk", "first")
    await Worker(store, setup(FunctionModel(script), spec, prompts_dir=folder)).run_until_idle()
    (folder / "support.md").write_text(PROMPT.replace("with billing", "with refunds"))
    pinned = spec.model_copy(update={"prompt": "support@production"})
    labels = {"support": {"production": old.version}}
    programs = setup(FunctionModel(script), pinned, prompts_dir=folder, labels=labels)
    rid = await submit_run(store, "clerk", "second")
    await Worker(store, programs).run_until_idle()
    assert (await get_run(store, rid)).status == "succeeded"
    assert seen == ["You help Ada with billing.", "You help Ada with billing."]  # from the store


async def test_missing_prompt_inputs_fail_the_run_with_a_clear_error(
    store: Store, tmp_path: Path
) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "support.md").write_text(PROMPT)
    spec = AgentSpec(name="clerk", model="m", prompt="support")
    model = FunctionModel(lambda m, s: answer("x"))
    programs = setup(model, spec, prompts_dir=tmp_path / "prompts")
    rid = await submit_run(store, "clerk", "hi")
    await Worker(store, programs).run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "failed"
    assert "customer" in str(run.error)


def test_an_agent_file_naming_an_unknown_prompt_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "clerk.yaml").write_text("prompt: nope@production\nmodel: m\n")
    with pytest.raises(ConfigError, match="unknown prompt 'nope'"):
        load_agents(tmp_path, {}, {"m"}, known_prompts={"support"})
    (tmp_path / "clerk.yaml").write_text("prompt: support\ninstructions: hi\n")
    with pytest.raises(ConfigError, match="prompt or instructions"):
        load_agents(tmp_path, {}, {"default"}, known_prompts={"support"})


async def show(store_url: str, *args: str) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, main, list(args), env={"DATABASE_URL": store_url, "COLUMNS": "200"}
    )


async def test_a_session_continues_and_its_old_turns_are_dropped_to_fit(
    store: Store, store_url: str
) -> None:
    seen: list[Sequence[Message]] = []

    def script(messages: Sequence[Message], _: ModelSettings) -> Response:
        seen.append(list(messages))
        return answer(f"answer {len(seen)} about invoices and payments")

    spec = AgentSpec(
        name="clerk", model="m", instructions="Be brief.",
        context={"reserve_output": 64, "history": {"min_tokens": 16}},
    )  # fmt: skip
    programs = setup(FunctionModel(script), spec, window=400)
    for i in range(12):
        rid = await submit_run(
            store, "clerk", f"question {i} about invoices and payments", session_id="s1"
        )
        await Worker(store, programs).run_until_idle()
        assert (await get_run(store, rid)).status == "succeeded"
    # The second run saw the first one's question and answer: the session continued.
    assert [m.content for m in seen[1][1:]] == [
        "question 0 about invoices and payments",
        "answer 1 about invoices and payments",
        "question 1 about invoices and payments",
    ]
    # The last run's history no longer fits: the oldest turns were dropped, the newest kept.
    last = seen[-1]
    assert last[-1].content == "question 11 about invoices and payments"
    assert "question 0 about invoices and payments" not in [m.content for m in last]
    manifest = Manifest.model_validate(
        next(s for s in await steps(store, rid) if s["kind"] == "context")["output"]
    )
    history = manifest.section("history")
    assert manifest.window == 400 and manifest.reserved_output == 64
    assert manifest.total <= manifest.budget
    assert history.left_out and {x.reason for x in history.left_out} == {"dropped_oldest"}
    rows = await store.fetchone("SELECT count(*) FROM session_messages WHERE session_id = 's1'")
    assert rows is not None and rows[0] == 24  # each run's question and answer, once
    # The CLI prints the manifest of a context step.
    step = next(s for s in await steps(store, rid) if s["kind"] == "context")["step_id"]
    shown = await show(store_url, "runs", "show", rid, "--context", step, "--json")
    assert shown.exit_code == 0, shown.output
    assert Manifest.model_validate_json(shown.stdout) == manifest
    table = await show(store_url, "runs", "show", rid, "--context", step)
    assert "history" in table.stdout and "dropped_oldest" in table.stdout
    missing = await show(store_url, "runs", "show", rid, "--context", "nope")
    assert missing.exit_code != 0 and "step_not_found" in missing.output + str(missing.stderr)


async def test_old_turns_are_summarised_by_the_cheaper_route_once(store: Store) -> None:
    summaries: list[str] = []

    def cheap(messages: Sequence[Message], _: ModelSettings) -> Response:
        summaries.append(str(messages[-1].content))
        return answer("The user asked about invoices.")

    spec = AgentSpec(
        name="clerk", model="m", instructions="Be brief.",
        context={"reserve_output": 64, "history": {
            "min_tokens": 16, "summarise": True, "route": "cheap", "summary_tokens": 32}},
    )  # fmt: skip
    model = FunctionModel(lambda m, s: answer("noted, about invoices and payments"))
    programs = setup(model, spec, window=400, cheap=FunctionModel(cheap))
    for i in range(12):
        rid = await submit_run(store, "clerk", f"question {i} about invoices", session_id="s2")
        await Worker(store, programs).run_until_idle()
        assert (await get_run(store, rid)).status == "succeeded"
    assert summaries and "question 0 about invoices" in summaries[0]
    assert len(summaries) < 12  # a summary serves the following runs too
    manifest = Manifest.model_validate(
        next(s for s in await steps(store, rid) if s["kind"] == "context")["output"]
    )
    assert any(x.reason == "summarised" for x in manifest.section("history").left_out)


async def test_without_a_known_window_the_messages_go_as_they_are(store: Store) -> None:
    seen: list[Sequence[Message]] = []

    def script(messages: Sequence[Message], _: ModelSettings) -> Response:
        seen.append(list(messages))
        return answer("ok")

    programs = setup(FunctionModel(script), AgentSpec(name="clerk", model="m", instructions="Hi."))
    rid = await submit_run(store, "clerk", "hello")
    await Worker(store, programs).run_until_idle()
    assert (await get_run(store, rid)).status == "succeeded"
    assert [type(m) for m in seen[0]] == [SystemMessage, UserMessage]
    assert not [s for s in await steps(store, rid) if s["kind"] == "context"]


async def test_a_declared_context_with_an_unknown_window_is_a_clear_error(store: Store) -> None:
    spec = AgentSpec(name="clerk", model="m", context={})
    programs = setup(FunctionModel(lambda m, s: answer("x")), spec)
    rid = await submit_run(store, "clerk", "hello")
    await Worker(store, programs).run_until_idle()
    run = await get_run(store, rid)
    assert run.status == "failed" and "context window" in str(run.error)
