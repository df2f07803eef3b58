"""``POST /v1/embeddings`` metered like a chat completion.

Each request goes through the gateway's admission (``admit_charge``). The caller's rate limits
(``limits.key``/``keys``, ``user``/``users``, ``team``/``teams``; ``limits.models`` names chat
routes and models only) take one request and its estimated input tokens as ``tpm`` (UTF-8 bytes
/ 4, corrected to the tokens really read afterwards), waiting up to ``x-elevenfactor-timeout``
or ``limits.max_wait`` (else 429 ``rate_limit_exceeded`` with ``Retry-After``). A kill switch
covering the caller refuses it (403 ``killed``), and cancels it if pulled while it runs.
Budgets hold its worst case (every input byte a token, at the model's ``price``) and are
charged the real cost (429 ``budget_exceeded`` when one cannot cover it). Budgets and switches
match it as a call by its caller (org, team, user, key) to ``model:NAME``, NAME the embedding
model's name as the request gives it.

Every request admitted or refused by admission is recorded in ``model_calls`` with
``kind = 'embedding'``: route and deployment the embedding model's name, its provider and model
id, the input tokens, the cost and the price version, and the request (not the vectors). So
``GET /v1/cost`` and ``elevenfactor cost report`` count embedding spend (``by=kind`` separates
it from chat).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Sequence

from starlette.types import Scope

from elevenfactor.context import Embedding, MeteredEmbedder
from elevenfactor.errors import ModelError
from elevenfactor.governance import Charge, Hold, Principal
from elevenfactor.governance._embed_pricing import EmbeddingPrices, embedding_prices
from elevenfactor.observe import Bill, CallRecord, new_id
from elevenfactor.server._admit import Admission, admit_charge, wait_of
from elevenfactor.server._state import Gateway

__all__ = ["KIND", "embed_metered"]

KIND = "embedding"
"""``model_calls.kind`` of an embeddings request."""


async def embed_metered(
    gw: Gateway,
    scope: Scope,
    principal: Principal,
    name: str,
    embedder: MeteredEmbedder,
    texts: Sequence[str],
    dimensions: int | None,
    request: bytes,
) -> tuple[Embedding, int]:
    """Admit, embed, settle and record one request for the embedding model ``name`` (see the
    module docstring); the vectors and the input tokens read."""
    prices = embedding_prices(gw.project)
    trace_id = str(scope.get("trace_id") or new_id())
    started = time.perf_counter()
    record = _Recorder(gw, principal, name, embedder, trace_id, started, request)
    try:
        adm = await _admit(gw, scope, principal, name, texts, prices)
    except ModelError as exc:  # refused: a rate limit, a budget, a kill switch
        record(0, Bill(None, None, None), exc.error_class)
        raise
    try:
        vectors, tokens = await embedder.embed_with_usage(texts, dimensions)
    except asyncio.CancelledError:
        killed = adm.killed()
        await adm.settle(None)
        if killed is None:
            raise
        record(0, Bill(None, None, None), killed.error_class)
        raise killed from None
    except ModelError as exc:  # an upstream embedder's failure
        await adm.settle(None)
        record(0, Bill(None, None, None), exc.error_class)
        raise
    except BaseException:
        await adm.settle(None)
        raise
    bill = prices.bill(name, tokens)
    await adm.settle(bill.cost, tokens)
    if bill.version is not None and gw.store is not None:
        await prices.record_versions(gw.store)
    record(tokens, bill, None)
    return vectors, tokens


async def _admit(
    gw: Gateway,
    scope: Scope,
    principal: Principal,
    name: str,
    texts: Sequence[str],
    prices: EmbeddingPrices,
) -> Admission:
    meter = gw.meter
    hold_id = f"emb:{new_id()}"
    charge = None
    if meter is not None:  # matched as a call to the model NAME, whatever a route NAME reaches
        charge = dataclasses.replace(meter.charge(principal, name), models=(name,))

    def hold(charge: Charge) -> Awaitable[Hold]:
        assert meter is not None
        amount = prices.worst_case(name, texts)
        return meter.gate.reserve(hold_id, charge, amount, meter.hold_ttl, pooled=True)

    return await admit_charge(
        meter, hold_id, principal, None, charge, lambda: _estimate(texts), hold,
        limiter=gw.limiter, project=gw.project, wait=wait_of(gw, scope),
    )  # fmt: skip


def _estimate(texts: Sequence[str]) -> int:
    """Tokens the rate limits take before the call (as for chat: UTF-8 bytes / 4)."""
    return max(1, sum(len(t.encode()) for t in texts) // 4)


@dataclasses.dataclass(frozen=True, slots=True)
class _Recorder:
    gw: Gateway
    principal: Principal
    name: str
    embedder: MeteredEmbedder
    trace_id: str
    started: float
    request: bytes

    def __call__(self, tokens: int, bill: Bill, error_class: str | None) -> None:
        config = self.gw.project.embeddings.models.get(self.name)
        assert self.gw.recorder is not None
        self.gw.recorder.record(
            CallRecord(
                trace_id=self.trace_id,
                route=self.name,
                stream=False,
                status="ok" if error_class is None else "error",
                error_class=error_class,
                tokens_in=tokens,
                tokens_out=0,
                latency_ms=(time.perf_counter() - self.started) * 1000,
                provider=config.provider if config is not None else None,
                deployment=self.name,
                model=self.embedder.model,
                cost=bill.cost,
                saved=bill.saved,
                price_version=bill.version,
                request=self.request,
                kind=KIND,
                api_key_id=self.principal.key_id,
                org_id=self.principal.org_id,
                team_id=self.principal.team_id,
                user_id=self.principal.user_id,
            )
        )
