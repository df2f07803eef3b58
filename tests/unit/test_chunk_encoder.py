"""The gateway's pre-serialised chunk events are the bytes ``chunk_to_openai`` would give."""

from __future__ import annotations

import orjson
import pytest

from elevenfactor.models import StreamChunk
from elevenfactor.models._messages import ToolCallDelta
from elevenfactor.models.openai_format import ChunkEncoder, chunk_to_openai

CHUNKS = [
    StreamChunk(text="Hello"),
    StreamChunk(text='quote " and \\ and \n and é ✓'),
    StreamChunk(finish_reason="stop"),
    StreamChunk(text="", finish_reason="length"),
    StreamChunk(
        tool_calls=[ToolCallDelta(index=0, id="call_1", name="lookup", arguments='{"q"')],
    ),
    StreamChunk(tool_calls=[ToolCallDelta(index=1, arguments="1}")], finish_reason="tool_calls"),
]


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("first", [True, False])
def test_encoder_matches_chunk_to_openai(chunk: StreamChunk, first: bool) -> None:
    fields = {"completion_id": "chatcmpl-abc", "created": 1_700_000_000, "model": 'm"odel/ü'}
    want = b"data: " + orjson.dumps(chunk_to_openai(chunk, first=first, **fields)) + b"\n\n"
    assert ChunkEncoder(**fields).sse(chunk, first) == want  # type: ignore[arg-type]
