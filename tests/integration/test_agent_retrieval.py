"""An agent with retrieval: passages from a real index (the embedded backend, the real local
embedder) go into its context under their ids, the answer's citations are kept, and a grounding
check on a configured route flags an unsupported answer — on SQLite and PostgreSQL stores."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from elevenfactor.config import DeploymentConfig, ProjectConfig, ProviderConfig
from elevenfactor.config._retrieval import IndexConfig
from elevenfactor.context import LocalEmbedder
from elevenfactor.context._index_build import build_index
from elevenfactor.context._index_ops import open_backend
from elevenfactor.context._retrieve import Retrieval
from elevenfactor.governance import DEFAULT_ORG
from elevenfactor.models import (
    AssistantMessage,
    FunctionModel,
    Message,
    ModelRegistry,
    ModelSettings,
    Response,
    wrap_deployment,
)
from elevenfactor.runtime import (
    Agent,
    AgentDeps,
    AgentSpec,
    Programs,
    Worker,
    get_run,
    run_result,
    submit_run,
)
from elevenfactor.runtime._journal import describe_steps
from elevenfactor.store import Store

pytestmark = pytest.mark.integration

DEPLOYMENT = DeploymentConfig(provider="test", model="m", retry={"attempts": 1}, breaker=None)
DOCS = {
    "keys.md": "# Rotating keys\n\nRotate an API key with `elevenfactor keys rotate`; the old "
    "key keeps working for one hour.",
    "tides.md": "# Tides\n\nThe moon's gravity raises two bulges of water: high tides twice a day.",
}


@pytest.fixture
async def backend_dir(store: Store, tmp_path: Path) -> Path:
    source = tmp_path / "docs"
    source.mkdir()
    for name, text in DOCS.items():
        (source / name).write_text(text)
    folder = tmp_path / "indexes"
    backend = open_backend(str(folder))
    retrieval = Retrieval(store, backend)
    await build_index(
        retrieval, "docs", IndexConfig(source=str(source)), source=source, org_id=DEFAULT_ORG,
        embedder=LocalEmbedder(),
    )  # fmt: skip
    await backend.close()
    return folder


def programs(script: FunctionModel, spec: AgentSpec, folder: Path) -> Programs:
    project = ProjectConfig(
        providers={"test": ProviderConfig(type="test")}, models={"m": DEPLOYMENT}
    )
    deployments = {"m": wrap_deployment(script, "test", DEPLOYMENT)}
    deps = AgentDeps(ModelRegistry(project, deployments=deployments), {}, {spec.name: spec})
    deps.retrieval_backend = open_backend(str(folder))
    out = Programs()
    out.register(spec.name, Agent(spec, deps))
    return out


def scripted(supported: bool) -> FunctionModel:
    def script(messages: Sequence[Message], _: ModelSettings) -> Response:
        first = str(messages[0].content)
        if first.startswith("You check whether"):  # the grounding check
            verdict = {"supported": supported, "unsupported": [] if supported else ["a claim"]}
            return Response(message=AssistantMessage(content=json.dumps(verdict)))
        cited = re.search(r"\[([^\]]+)\] \(keys\.md\)", first)
        assert cited, first
        answer = f"Run `elevenfactor keys rotate` [{cited.group(1)}]."
        return Response(message=AssistantMessage(content=answer))

    return FunctionModel(script)


@pytest.mark.parametrize("supported", [True, False])
async def test_an_agent_answers_from_retrieved_passages_and_cites_them(
    store: Store, backend_dir: Path, supported: bool
) -> None:
    model = scripted(supported)
    spec = AgentSpec(
        name="helper", model="m", instructions="Answer from the passages; cite them.",
        retrieval={"index": "docs", "k": 2, "grounding_route": "m"},
    )  # fmt: skip
    rid = await submit_run(store, "helper", "How do I rotate an API key?")
    await Worker(store, programs(model, spec, backend_dir)).run_until_idle()
    info = await get_run(store, rid)
    assert info.status == "succeeded", info.error
    steps = {s["name"]: s for s in await describe_steps(store, rid)}
    hits: list[dict[str, Any]] = steps["retrieve"]["output"]
    assert hits[0]["document"] == "keys.md"  # the relevant passage ranks first
    result = await run_result(store, info)
    assert [c["document"] for c in result["citations"]] == ["keys.md"]
    assert result["citations"][0]["id"] == hits[0]["chunk_id"]
    assert result["grounding"]["supported"] is supported
    assert steps["grounding"]["output"]["supported"] is supported
