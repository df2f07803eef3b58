"""MCP wire types to ours: tool listings to ``Tool``, call results to ``ToolResult``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import mcp.types as mt
import orjson

from elevenfactor.tools._base import Risk, Tool, ToolResult

__all__ = ["risk_from_annotations", "to_tool", "to_tool_result"]


def risk_from_annotations(annotations: mt.ToolAnnotations | None) -> Risk:
    """The spec's defaults applied: a tool is read-only only if it says so, and a tool that
    writes is destructive unless it says ``destructiveHint: false``."""
    if annotations is None:
        return "destructive"
    if annotations.read_only_hint:
        return "read"
    if annotations.destructive_hint is False:
        return "write"
    return "destructive"


def to_tool(
    tool: mt.Tool,
    *,
    overrides: Mapping[str, Risk],
    trust_annotations: bool,
    timeout: float | None,
) -> Tool:
    """An MCP tool as ours. ``overrides`` (by the server's tool name) win over annotations;
    untrusted annotations are ignored and every tool counts as destructive."""
    risk = overrides.get(tool.name)
    if risk is None:
        risk = risk_from_annotations(tool.annotations) if trust_annotations else "destructive"
    description = tool.description or tool.title or ""
    return Tool(
        name=tool.name,
        description=description,
        parameters=dict(tool.input_schema),
        risk=risk,
        timeout=timeout,
        output_schema=tool.output_schema,
    )


def to_tool_result(result: mt.CallToolResult) -> ToolResult:
    """Content blocks joined as text (non-text blocks described); ``structuredContent`` kept."""
    text = content_to_text(result.content)
    if not text and result.structured_content is not None:
        text = orjson.dumps(result.structured_content).decode()
    return ToolResult(
        content=text,
        structured=result.structured_content,
        is_error=result.is_error,
        error_code="tool_error" if result.is_error else None,
    )


def content_to_text(blocks: Sequence[mt.ContentBlock]) -> str:
    """Each block as text, one after another."""
    return "\n".join(_block_text(block) for block in blocks)


def _block_text(block: mt.ContentBlock) -> str:
    if isinstance(block, mt.TextContent):
        return block.text
    if isinstance(block, mt.ImageContent | mt.AudioContent):
        kind = "image" if isinstance(block, mt.ImageContent) else "audio"
        return f"[{kind} {block.mime_type}, {len(block.data) * 3 // 4} bytes]"
    if isinstance(block, mt.ResourceLink):
        about = f": {block.description}" if block.description else ""
        return f"[resource link {block.uri} ({block.name}){about}]"
    if isinstance(block, mt.EmbeddedResource):
        res = block.resource
        if isinstance(res, mt.TextResourceContents):
            return res.text
        return f"[resource {res.uri} {res.mime_type or ''}, {len(res.blob) * 3 // 4} bytes]"
    return f"[{getattr(block, 'type', 'unknown')} content]"  # pragma: no cover - future types
