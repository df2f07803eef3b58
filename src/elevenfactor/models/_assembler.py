"""``StreamAssembler``: a streamed answer put back together (what the response cache stores
of a stream, and what a validating route judges)."""

from __future__ import annotations

from elevenfactor.models._messages import (
    AssistantMessage,
    Response,
    StreamChunk,
    ToolCall,
    Usage,
)

__all__ = ["StreamAssembler"]


class StreamAssembler:
    """A streamed answer put back together: ``add`` each chunk, then ``response()``."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, list[str]] = {}
        self.ids: dict[int, tuple[str, str]] = {}
        self.finish: str | None = None
        self.usage = Usage()
        self.model = ""

    def add(self, chunk: StreamChunk) -> None:
        """Take one chunk in."""
        self.text.append(chunk.text)
        for delta in chunk.tool_calls:
            self.calls.setdefault(delta.index, []).append(delta.arguments)
            old_id, old_name = self.ids.get(delta.index, ("", ""))
            self.ids[delta.index] = (delta.id or old_id, delta.name or old_name)
        if chunk.finish_reason is not None:
            self.finish = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.model:
            self.model = chunk.model

    def response(self) -> Response:
        """The answer so far; finish reason ``content_filter`` if the stream never finished."""
        calls = [
            ToolCall(id=self.ids[i][0], name=self.ids[i][1], arguments="".join(parts))
            for i, parts in sorted(self.calls.items())
        ]
        text = "".join(self.text)
        return Response.model_validate(
            {
                "message": AssistantMessage(content=text or None, tool_calls=calls),
                "usage": self.usage,
                "model": self.model,
                "finish_reason": self.finish or "content_filter",  # no finish: not stored
            }
        )
