"""The sealer loop: chains new ledger entries into blocks every few hundred milliseconds, and
on a schedule writes a signed head to a folder (``ELEVENFACTOR_LEDGER_HEAD_DIR``).

Every ``serve`` and ``worker`` process runs one; an advisory lock lets one seal at a time, so
more processes only mean more chances, not more work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

import orjson

from elevenfactor.config import Settings
from elevenfactor.governance._ledger import count_sealed, ledger_head, seal
from elevenfactor.governance._signing import SignedHead, sign_head
from elevenfactor.observe import log_event
from elevenfactor.store import Store

__all__ = ["Sealer", "export_head", "write_head"]

logger = logging.getLogger("elevenfactor.ledger")


async def export_head(store: Store, private_b64: str) -> SignedHead | None:
    """Seal what is pending, then sign the newest block (None if the ledger is empty)."""
    while await seal(store) is not None:
        pass
    head = await ledger_head(store)
    if head is None:
        return None
    return sign_head(head, private_b64, await count_sealed(store))


def write_head(head: SignedHead, path: Path) -> None:
    """Write a head file atomically (a reader never sees half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(head.to_dict(), option=orjson.OPT_INDENT_2))
    tmp.replace(path)


class Sealer:
    """Seals every ``ledger_seal_interval``; exports a signed head every
    ``ledger_head_interval`` when a signing key and a head folder are configured."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._task: asyncio.Task[None] | None = None
        self._last_export = 0.0

    def start(self) -> None:
        """Start the loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-sealer")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ledger_seal_interval)
            try:
                await self.tick()
            except Exception:  # a failed seal is retried next time; nothing is lost
                logger.exception("sealing the ledger failed")

    async def tick(self) -> None:
        """Seal once; export a signed head if one is due."""
        await seal(self.store)
        key, folder = self.settings.ledger_signing_key, self.settings.ledger_head_dir
        if (
            key
            and folder
            and time.monotonic() - self._last_export >= (self.settings.ledger_head_interval)
        ):
            self._last_export = time.monotonic()
            head = await export_head(self.store, key)
            if head is not None:
                await asyncio.to_thread(write_head, head, folder / f"head-{head.n:012d}.json")
                await asyncio.to_thread(write_head, head, folder / "latest.json")
                log_event(logger, "ledger_head_signed", n=head.n, hash=head.hash)

    async def aclose(self) -> None:
        """Stop the loop and seal what is pending."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await seal(self.store)
