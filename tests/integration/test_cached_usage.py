"""Prompt-cache reads reported by a provider reach ``Usage.cached_input_tokens`` (issue 8), so
they are billed at the cached-input price."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from elevenfactor.config import DeploymentConfig, ProviderConfig
from elevenfactor.models import Call, ModelSettings, UserMessage
from elevenfactor.models.providers.anthropic import AnthropicModel, AnthropicProvider
from tests.conftest import free_port
from tests.support.anthropic_upstream import API_KEY, AnthropicUpstream, Reply

pytestmark = pytest.mark.integration


@pytest.fixture
async def cached_upstream() -> AsyncIterator[AnthropicUpstream]:
    server = AnthropicUpstream()
    plain = server._message

    def with_cache_read(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message = plain(body, reply)
        usage = message["usage"]
        usage.update(input_tokens=5, cache_creation_input_tokens=3, cache_read_input_tokens=40)
        return message

    server._message = with_cache_read  # type: ignore[method-assign]
    await server.start(free_port())
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def claude(cached_upstream: AnthropicUpstream) -> AsyncIterator[AnthropicModel]:
    provider = AnthropicProvider(
        "anthropic",
        ProviderConfig(type="anthropic", base_url=cached_upstream.url, api_key=API_KEY),
    )
    try:
        yield provider.deployment(
            "claude", DeploymentConfig(provider="anthropic", model="claude-test-1")
        )
    finally:
        await provider.aclose()


async def test_anthropic_cache_reads_are_cached_input(
    claude: AnthropicModel, cached_upstream: AnthropicUpstream
) -> None:
    cached_upstream.script(Reply([{"type": "text", "text": "hi"}], output_tokens=2))
    response = await claude.request([UserMessage(content="x")], ModelSettings(), Call())
    assert response.usage.input_tokens == 48  # uncached + cache writes + cache reads
    assert response.usage.cached_input_tokens == 40

    cached_upstream.script(Reply([{"type": "text", "text": "streamed"}], output_tokens=2))
    chunks = [
        c async for c in claude.request_stream([UserMessage(content="x")], ModelSettings(), Call())
    ]
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.input_tokens, usage.cached_input_tokens) == (48, 40)
