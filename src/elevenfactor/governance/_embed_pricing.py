"""Prices of embedding models: what a ``POST /v1/embeddings`` call costs, may cost at worst, and
which price version charged it.

An embedding model's price is its ``embeddings.models.NAME.price`` (per million input tokens
and per request); unset, the bundled ``local`` model is free and an upstream is unpriced (its
calls cost None and count 0 toward budgets, like a chat deployment with no price). A price has
a ``version`` computed as a deployment's is (``Price.version``: the model id and the price
fields, hashed), recorded in the ``prices`` table under the embedding model's name the first
time a process charges it, so an old call record keeps the price it was charged at.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from elevenfactor.config import PriceConfig, ProjectConfig
from elevenfactor.config._embeddings import LOCAL_MODEL, LOCAL_PROVIDER, EmbeddingsConfig
from elevenfactor.governance._pricing import Price, _price, insert_prices
from elevenfactor.models import Usage
from elevenfactor.observe import Bill
from elevenfactor.store import Store

__all__ = ["EmbeddingPrices", "embedding_prices"]

_SPECIAL_TOKENS = 2
"""Tokens a tokenizer may add around each input (``[CLS]``/``[SEP]``)."""


class EmbeddingPrices:
    """Every embedding model's resolved price, computed once."""

    def __init__(self, config: EmbeddingsConfig) -> None:
        self._prices: dict[str, Price | None] = {}
        for name, model in config.models.items():
            model_id = model.model or LOCAL_MODEL
            price = model.price
            if price is not None:
                fields = PriceConfig(
                    input_per_mtok=price.input_per_mtok,
                    output_per_mtok=0.0,
                    per_request=price.per_request,
                )
                found: Price | None = _price(
                    name, model_id, fields, f"embeddings.models.{name}.price"
                )
            elif model.provider == LOCAL_PROVIDER:
                free = PriceConfig(input_per_mtok=0.0, output_per_mtok=0.0)
                found = _price(name, model_id, free, "default")
            else:
                found = None
            self._prices[name] = found
        self._stored: weakref.WeakSet[Store] = weakref.WeakSet()

    def price(self, name: str) -> Price | None:
        """The price of the embedding model ``name``; None when unknown or unpriced."""
        return self._prices.get(name)

    def bill(self, name: str, tokens: int) -> Bill:
        """Cost and price version of one call that read ``tokens`` (all None when unpriced;
        nothing is ever saved by a cache)."""
        price = self._prices.get(name)
        if price is None:
            return Bill(None, None, None)
        return Bill(price.cost(Usage(input_tokens=tokens)), 0.0, price.version)

    def worst_case(self, name: str, texts: Sequence[str]) -> float:
        """The most embedding ``texts`` may cost: every UTF-8 byte a token (no tokenizer makes
        more tokens than bytes), plus the special tokens of each input; 0 when unpriced."""
        price = self._prices.get(name)
        if price is None:
            return 0.0
        tokens = sum(len(t.encode()) + _SPECIAL_TOKENS for t in texts)
        return round(tokens * price.input_per_mtok / 1_000_000 + price.per_request, 10)

    async def record_versions(self, store: Store) -> None:
        """Record every price version in ``store``'s ``prices`` table, once per store and
        process (rows are never updated)."""
        if store in self._stored:
            return
        await insert_prices(store, [p for p in self._prices.values() if p is not None])
        self._stored.add(store)


_PRICES: dict[int, tuple[ProjectConfig, EmbeddingPrices]] = {}


def embedding_prices(project: ProjectConfig) -> EmbeddingPrices:
    """The ``EmbeddingPrices`` of ``project``, built on first use and kept while the project
    is (a few projects at most: one per running configuration)."""
    found = _PRICES.get(id(project))
    if found is not None and found[0] is project:
        return found[1]
    prices = EmbeddingPrices(project.embeddings)
    if len(_PRICES) >= 8:
        _PRICES.pop(next(iter(_PRICES)))
    _PRICES[id(project)] = (project, prices)
    return prices
