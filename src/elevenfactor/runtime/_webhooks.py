"""Webhook notifications (e.g. "an approval is pending"), sent in the background with retries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

__all__ = ["webhook_hook"]

logger = logging.getLogger("elevenfactor.webhooks")


def webhook_hook(
    url: str, *, attempts: int = 4, timeout: float = 5.0
) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """A hook that POSTs its payload as JSON to ``url``; delivery retries with backoff and never
    blocks or fails the run that triggered it."""
    tasks: set[asyncio.Task[None]] = set()

    async def deliver(payload: dict[str, Any]) -> None:
        body = orjson.dumps(payload)
        for attempt in range(attempts):
            try:
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
                    http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp,
                ):
                    if resp.status < 300:
                        return
                    logger.warning("webhook %s answered %s", url, resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("webhook %s failed: %r", url, exc)
            await asyncio.sleep(0.5 * 2**attempt)
        logger.error("webhook %s: giving up on %s", url, payload.get("event"))

    async def hook(payload: dict[str, Any]) -> None:
        task = asyncio.create_task(deliver(payload))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return hook
