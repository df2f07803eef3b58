"""A scripted OpenAI-compatible model on loopback for eval tests: it follows its system prompt
the way a test needs (a prompt saying "BANANA" makes it answer only ``BANANA``; otherwise it
answers helpfully, repeating the question), optionally after a delay, and counts the requests
it got per question — so a test can tell which cases were executed, and how many times.

    async with EvalUpstream(delay=0.3) as up:
        ... providers: {up: {type: openai, base_url: up.base_url, api_key: x}} ...
        assert up.asked["How do I get a refund?"] == 1
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from aiohttp import web

from tests.conftest import free_port

__all__ = ["EvalUpstream", "answer"]


def answer(messages: list[dict[str, Any]]) -> str:
    """What the scripted model says to ``messages``."""
    system = " ".join(str(m.get("content") or "") for m in messages if m.get("role") == "system")
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    question = users[-1] if users else ""
    if "BANANA" in system:
        return "BANANA"
    return f"Happy to help with: {question} A refund takes 5 days."


class EvalUpstream:
    """The scripted upstream (see the module docstring)."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.asked: Counter[str] = Counter()
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """The OpenAI base URL."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> EvalUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self.port = free_port()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, shutdown_timeout=0.5).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.Response:
        payload = await request.json()
        messages = payload.get("messages", [])
        users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
        self.requests += 1
        self.asked[users[-1] if users else ""] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        text = answer(messages)
        return web.json_response(
            {
                "id": "chatcmpl-eval",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": str(payload.get("model") or ""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
            }
        )
