"""Typed messages, settings and responses: the vocabulary every model speaks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AssistantMessage",
    "CacheRequest",
    "Message",
    "ModelSettings",
    "Response",
    "ResponseFormat",
    "StreamChunk",
    "SystemMessage",
    "ToolCall",
    "ToolCallDelta",
    "ToolDefinition",
    "ToolMessage",
    "Usage",
    "UserMessage",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SystemMessage(_Model):
    """Instructions from the developer."""

    role: Literal["system"] = "system"
    content: str


class UserMessage(_Model):
    """A turn from the user."""

    role: Literal["user"] = "user"
    content: str
    name: str | None = None


class ToolCall(_Model):
    """A call the model asks for; ``arguments`` is a JSON object encoded as a string."""

    id: str
    name: str
    arguments: str


class AssistantMessage(_Model):
    """A turn from the model: text, tool calls, or both."""

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ToolMessage(_Model):
    """The result of a tool call, sent back to the model."""

    role: Literal["tool"] = "tool"
    content: str
    tool_call_id: str


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class ToolDefinition(_Model):
    """A tool the model may call, with a JSON schema for its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ResponseFormat(_Model):
    """Structured output: free text, any JSON object, or JSON matching ``json_schema``."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    json_schema: dict[str, Any] | None = None
    strict: bool | None = None


class CacheRequest(_Model):
    """A request's ask for the response cache: serve and store its answer for ``ttl`` seconds
    (None: the route's ttl, else 300)."""

    ttl: int | None = Field(default=None, gt=0, le=30 * 86400)


class ModelSettings(_Model):
    """Per-request parameters. ``None`` means the deployment's default."""

    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    tools: list[ToolDefinition] = Field(default_factory=list)
    tool_choice: Literal["auto", "none", "required"] | str | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    tags: list[str] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)
    cache: CacheRequest | Literal[False] | None = Field(
        default=None,
        description="Response cache: an object asks for it (a hit is served even for a "
        "sampling request), false bypasses it; None: the route's `cache` setting.",
    )
    prompt_version: str | None = Field(
        default=None, description="The version of the prompt, part of the response cache key."
    )

    def merged_over(self, defaults: dict[str, Any]) -> ModelSettings:
        """These settings with unset fields taken from a deployment's ``params``."""
        if not defaults:
            return self
        known = {k: v for k, v in defaults.items() if k in ModelSettings.model_fields}
        extra = {k: v for k, v in defaults.items() if k not in ModelSettings.model_fields}
        updates: dict[str, Any] = {
            k: v for k, v in known.items() if getattr(self, k) in (None, [], {})
        }
        if extra:
            updates["extra"] = {**extra, **self.extra}
        return self.model_copy(update=updates) if updates else self


class Usage(_Model):
    """Token counts of one call. ``cached_input_tokens`` are the part of ``input_tokens`` the
    provider read from its prompt cache (billed at the cached-input price)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output."""
        return self.input_tokens + self.output_tokens


class Response(_Model):
    """A finished model call."""

    message: AssistantMessage
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"] = "stop"
    deployment: str | None = None
    """The deployment that answered (set by agents, so a journaled response can be priced)."""
    cache_hit: bool = False
    """Served from the response cache (set by agents: a hit is committed at no cost)."""


class ToolCallDelta(_Model):
    """A fragment of a streamed tool call; ``index`` groups fragments of one call."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class StreamChunk(_Model):
    """A piece of a streamed response. The last chunk carries ``finish_reason`` and ``usage``."""

    text: str = ""
    tool_calls: list[ToolCallDelta] = Field(default_factory=list)
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"] | None = None
    usage: Usage | None = None
    model: str | None = None
