"""What a call was charged (``Bill``), and the interface that prices calls (``Pricer``).

The prices themselves live in ``elevenfactor.governance`` (``PriceBook``); this module only names
what the recorder needs, so that observability does not depend on governance.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from elevenfactor.models import Usage

__all__ = ["Bill", "Pricer", "call_cost"]


class Bill(NamedTuple):
    """What one call was charged: its cost, what caching saved (the prompt-cache discount, or
    the whole cost of a response-cache hit) and the price version; all None when unpriced."""

    cost: float | None
    saved: float | None
    version: str | None


class Pricer(Protocol):
    """Prices calls by deployment: ``elevenfactor.governance.PriceBook``."""

    def bill(self, deployment: str | None, usage: Usage, cache_hit: bool = False) -> Bill:
        """Cost, savings and price version of one call on ``deployment``."""
        ...


def call_cost(
    prices: Pricer, deployment: str | None, usage: Usage, *, cache_hit: bool = False
) -> float | None:
    """What ``usage`` cost on ``deployment`` (uncached and cached input, output, per request;
    0 for a response-cache hit), priced by ``prices`` (the project's ``PriceBook``: see
    ``elevenfactor.governance.price_book``); ``None`` when the deployment is unknown or
    unpriced. The gateway and agents both record and commit this figure."""
    return prices.bill(deployment, usage, cache_hit).cost
