"""One record per model call: a JSON log line now, a row in the store soon after.

Rows are written by a background batch writer so the request path never waits on a commit; the
writer flushes every ``interval`` seconds or ``batch`` records, and on close.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from elevenfactor.models import Call, Usage
from elevenfactor.observe._bill import Pricer
from elevenfactor.observe._call_sql import RECORD_COLUMNS, RECORD_COLUMNS_V1, statements
from elevenfactor.observe._ids import new_id
from elevenfactor.observe._logs import emit
from elevenfactor.observe._metrics import record_call
from elevenfactor.store import Store, blob_hash

__all__ = [
    "RECORD_COLUMNS",
    "RECORD_COLUMNS_V1",
    "CallRecord",
    "CallRecorder",
    "record_hash",
]

logger = logging.getLogger("elevenfactor.calls")

_V1 = len(RECORD_COLUMNS_V1)
_ALL = len(RECORD_COLUMNS)
_GUARD = _ALL - 1  # a row up to ``guard``: without ``release_id`` (m027)
_KIND = _ALL - 2  # a row up to ``kind``: without ``guard`` (m020)
_SLICE = 32  # records hashed between two yields to the event loop


@dataclass(slots=True)
class CallRecord:
    """What one logical model call did, and whom it is attributed to.

    ``step`` (an agent's own calls) goes to the log line only. ``tags`` are the request's tags;
    ``saved`` what caching saved (see ``Bill``); ``price_version`` the ``prices`` row charged;
    ``prompt`` the prompt the call used, as ``id@version`` (``Prompt.ref``); ``kind`` what was
    called: None for a chat completion (a model call), ``embedding`` for embeddings; ``guard``
    the guard policies a gateway call was checked with and their verdicts
    (``{"policies": [...], "verdicts": [...]}``; None when no policy applied); ``release_id``
    the release the call was made under (None: the recorder's, see ``CallRecorder``).
    """

    trace_id: str
    route: str
    stream: bool
    status: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    provider: str | None = None
    deployment: str | None = None
    model: str | None = None
    error_class: str | None = None
    cost: float | None = None
    cache_hit: bool = False
    failover_path: list[str] = field(default_factory=list)
    api_key_id: str | None = None
    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    run_id: str | None = None
    request: bytes | None = None
    response: bytes | None = None
    agent: str | None = None
    step: str | None = None
    session_id: str | None = None
    tags: list[str] = field(default_factory=list)
    tokens_cached: int = 0
    price_version: str | None = None
    saved: float | None = None
    prompt: str | None = None
    kind: str | None = None
    guard: dict[str, Any] | None = None
    release_id: str | None = None
    id: str = field(default_factory=new_id)
    created_at: float = field(default_factory=time.time)

    @classmethod
    def from_call(
        cls,
        call: Call,
        usage: Usage | None = None,
        prices: Pricer | None = None,
        /,
        **kw: Any,
    ) -> CallRecord:
        """Fill provider, deployment, model and path from a finished ``Call``; given ``usage``,
        the token counts, and with ``prices`` (the project's ``PriceBook``) its cost, savings
        and price version too (a response-cache hit costs 0 and saves its whole cost)."""
        final = call.final
        if usage is not None:
            kw["tokens_in"], kw["tokens_out"] = usage.input_tokens, usage.output_tokens
            kw["tokens_cached"] = usage.cached_input_tokens
            if prices is not None:
                bill = prices.bill(final.deployment if final else None, usage, call.cache_hit)
                kw["cost"], kw["saved"], kw["price_version"] = bill
        return cls(
            trace_id=call.trace_id,
            route=call.route,
            cache_hit=call.cache_hit,
            provider=final.provider if final else None,
            deployment=final.deployment if final else None,
            model=final.model if final else None,
            failover_path=call.path,
            latency_ms=(time.perf_counter() - call.started) * 1000,
            **kw,
        )

    def log_fields(self) -> dict[str, Any]:
        """The fields of the JSON log line."""
        return {
            "trace_id": self.trace_id,
            "route": self.route,
            "provider": self.provider,
            "deployment": self.deployment,
            "model": self.model,
            "stream": self.stream,
            "status": self.status,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "tokens_cached": self.tokens_cached,
            "latency_ms": round(self.latency_ms, 3),
            "cost": self.cost,
            "saved": self.saved,
            "price_version": self.price_version,
            "cache_hit": self.cache_hit,
            "failover_path": self.failover_path,
            "error_class": self.error_class,
            **({"run_id": self.run_id} if self.run_id is not None else {}),
            **({"agent": self.agent} if self.agent is not None else {}),
            **({"step": self.step} if self.step is not None else {}),
            **({"session_id": self.session_id} if self.session_id is not None else {}),
            **({"tags": self.tags} if self.tags else {}),
            **({"prompt": self.prompt} if self.prompt is not None else {}),
            **({"kind": self.kind} if self.kind is not None else {}),
            **({"guard": self.guard} if self.guard is not None else {}),
            **({"release_id": self.release_id} if self.release_id is not None else {}),
        }


def record_hash(row: tuple[Any, ...]) -> str:
    """SHA-256 over a call record's columns (``RECORD_COLUMNS``): what ``audit verify``
    recomputes, so an edited token count or cost is caught.

    ``release_id`` (the last column) is covered only when set: a call made under no release
    hashes exactly as it did before the column existed (m027), and setting or clearing it
    changes the hash. Likewise ``prompt``, ``kind`` and ``guard`` (the three before): a
    call made without a prompt (or a chat call: no kind; or one no guard policy applied to)
    hashes exactly as it did before the column existed, and setting any of them on such a row,
    or clearing it on a row that had one, changes the hash (a row with a guard record and no
    kind or prompt hashes their NULLs too, as a row with a kind and no prompt hashes the
    prompt's NULL). A row whose newer columns (after ``RECORD_COLUMNS_V1``) are all NULL was
    written before they existed and is hashed over the old columns, so it still verifies. A
    row written since always has ``tokens_cached``, so clearing its newer columns changes its
    hash."""
    if len(row) == _ALL and row[-1] is None:  # no release
        row = row[:-1]
    if len(row) == _GUARD and row[-1] is None:  # no guard record
        row = row[:-1]
    if len(row) == _KIND and row[-1] is None:  # no kind
        row = row[:-1]
        if row[-1] is None:  # and no prompt
            row = row[:-1]
    if len(row) > _V1 and all(v is None for v in row[_V1:]):
        row = row[:_V1]
    return hashlib.sha256(orjson.dumps(list(row))).hexdigest()


class CallRecorder:
    """Logs each call at once and writes it to the store in batches.

    The queue is bounded so a store that falls behind cannot grow memory without limit: past
    half of ``max_pending`` queued records new ones are stored without their payloads, and past
    ``max_pending`` they are not stored at all (their JSON log line still goes out). Both are
    counted (``payloads_shed``, ``dropped``) and logged. A record without a ``release_id``
    gets the recorder's (``release_id``: the release the process runs under).
    """

    def __init__(
        self,
        store: Store,
        *,
        record_payloads: bool = True,
        interval: float = 0.05,
        batch: int = 512,
        max_pending: int = 20_000,
    ) -> None:
        self.store = store
        self.record_payloads = record_payloads
        self.interval = interval
        self.batch = batch
        self.max_pending = max_pending
        self.payloads_shed = 0
        self.dropped = 0
        self._warned_at = 0.0
        self._pending: list[CallRecord] = []
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()  # one write at a time: flush() waits for one under way
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0
        self.release_id: str | None = None
        """The release this process runs under: recorded with every call that names none."""

    def start(self) -> None:
        """Start the background writer on the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="call-recorder")

    def record(self, rec: CallRecord) -> None:
        """Log ``rec`` now, count it in the metrics and queue it for the store."""
        if rec.release_id is None:
            rec.release_id = self.release_id
        record_call(rec)
        if logger.isEnabledFor(logging.INFO):
            emit(logger, logging.INFO, "model_call", {"event": "model_call", **rec.log_fields()})
        queued = len(self._pending)
        if queued >= self.max_pending // 2:
            self._shed(rec, queued)
            if queued >= self.max_pending:
                return
        self._pending.append(rec)
        if queued + 1 >= self.batch:
            self._wake.set()

    def _shed(self, rec: CallRecord, queued: int) -> None:
        if queued >= self.max_pending:
            self.dropped += 1
        elif rec.request is not None or rec.response is not None:
            rec.request = rec.response = None
            self.payloads_shed += 1
        now = time.monotonic()
        if now - self._warned_at > 10:
            self._warned_at = now
            logger.warning(
                "the store is behind on call records",
                extra={
                    "event": "call_records_shed",
                    "queued": queued,
                    "dropped": self.dropped,
                    "payloads_shed": self.payloads_shed,
                },
            )

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # keep recording; the next flush retries the rows
                logger.exception("writing model calls failed; will retry")
                await asyncio.sleep(min(1.0, self.interval * 10))

    async def flush(self) -> int:
        """Write every queued record, after any write already under way (so every record
        queued before the call is in the store when it returns); return how many."""
        async with self._writing:
            return await self._write_pending()

    async def _write_pending(self) -> int:
        if not self._pending:
            return 0
        records, self._pending = self._pending, []
        blobs: dict[str, bytes] = {}
        rows = []
        for i, r in enumerate(records):
            if i and not i % _SLICE:
                # Hashing a big batch in one go would hold up the requests waiting on this
                # loop (a few ms at thousands of calls a second): let them run in between.
                await asyncio.sleep(0)
            req_hash = resp_hash = None
            if self.record_payloads and r.request is not None:
                req_hash = blob_hash(r.request)
                blobs[req_hash] = r.request
            if self.record_payloads and r.response is not None:
                resp_hash = blob_hash(r.response)
                blobs[resp_hash] = r.response
            row = (
                r.id,
                r.trace_id,
                r.created_at,
                r.api_key_id,
                r.route,
                r.provider,
                r.deployment,
                r.model,
                int(r.stream),
                r.status,
                r.error_class,
                r.tokens_in,
                r.tokens_out,
                r.latency_ms,
                r.cost,
                int(r.cache_hit),
                orjson.dumps(r.failover_path).decode(),
                req_hash,
                resp_hash,
                r.org_id,
                r.team_id,
                r.user_id,
                r.run_id,
                r.agent,
                r.session_id,
                orjson.dumps(r.tags).decode() if r.tags else None,
                r.tokens_cached,
                r.price_version,
                r.saved,
                r.prompt,
                r.kind,
                orjson.dumps(r.guard).decode() if r.guard is not None else None,
                r.release_id,
            )
            rows.append((*row, record_hash(row)))
        try:
            now = time.time()
            blob_rows = [(h, len(c), c, now) for h, c in blobs.items()]
            await self.store.write_batch(statements(self.store.dialect, blob_rows, rows))
        except BaseException:
            self._pending[:0] = records
            raise
        self.written += len(records)
        return len(records)

    async def aclose(self) -> None:
        """Stop the writer and flush what is left."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
