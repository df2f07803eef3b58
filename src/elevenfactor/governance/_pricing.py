"""Prices: what a call costs, what it may cost at worst, and which price version charged it.

A deployment's price is, in order: its own ``price:``; ``prices:`` of the project file under the
deployment's name; ``prices:`` under its model id; the shipped list price of its model id
(``config/defaults/prices.yaml``, where a snapshot id such as ``gpt-4o-2024-08-06`` takes its
base id's price); else it is unpriced (its calls cost ``None``, and count 0 toward budgets).

Each resolved price has a ``version``: the first 16 hex digits of the SHA-256 of the model id and
the price fields, as canonical JSON. A price change is a new version; ``store_prices`` keeps every
version seen in the ``prices`` table, and each call record names the version it was charged at.

A ``PriceBook`` resolves every deployment once, when it is built; its methods are dictionary
lookups and a few multiplications, cheap enough for every request.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import orjson
import yaml

from elevenfactor.config import DeploymentConfig, PriceConfig, ProjectConfig
from elevenfactor.errors import ConfigError
from elevenfactor.models._messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    ToolMessage,
    Usage,
    UserMessage,
)
from elevenfactor.observe import Bill
from elevenfactor.store import Executor

__all__ = [
    "DEFAULT_OUTPUT_CAP",
    "Price",
    "PriceBook",
    "estimate_prompt_tokens",
    "price_book",
    "shipped_prices",
    "store_prices",
]

DEFAULT_OUTPUT_CAP = 4096
"""Output tokens assumed for a deployment that states no cap and no context window."""

_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")
_PER_MESSAGE = 8  # role markers and separators of a chat template, per message (OpenAI: 3-4)
_PRIMING = 8  # the template's reply priming (OpenAI: 3)
_TOOLS_OVERHEAD = 1024  # hidden tool-use system prompt (Anthropic documents up to ~530)
_PER_TOOL = 64  # JSON keys and punctuation around a tool definition


@dataclass(frozen=True, slots=True)
class Price:
    """The resolved price of one deployment, per million tokens (and per request).

    ``source`` says where it came from: ``models.NAME.price``, ``prices.KEY`` or ``default``.
    """

    deployment: str
    model: str
    input_per_mtok: float
    cached_input_per_mtok: float
    output_per_mtok: float
    per_request: float
    source: str
    version: str

    def cost(self, usage: Usage) -> float:
        """What ``usage`` costs: uncached input, cached input and output tokens at their
        prices, plus the per-request price."""
        cached = min(max(usage.cached_input_tokens, 0), usage.input_tokens)
        return round(
            (
                (usage.input_tokens - cached) * self.input_per_mtok
                + cached * self.cached_input_per_mtok
                + usage.output_tokens * self.output_per_mtok
            )
            / 1_000_000
            + self.per_request,
            10,
        )

    def list_cost(self, usage: Usage) -> float:
        """What ``usage`` would cost with no prompt-cache discount (every input token at the
        input price)."""
        return round(
            (usage.input_tokens * self.input_per_mtok + usage.output_tokens * self.output_per_mtok)
            / 1_000_000
            + self.per_request,
            10,
        )

    def fields(self) -> dict[str, Any]:
        """The price as stored in the ``prices`` table (and hashed into its version)."""
        return {
            "model": self.model,
            "input_per_mtok": self.input_per_mtok,
            "cached_input_per_mtok": self.cached_input_per_mtok,
            "output_per_mtok": self.output_per_mtok,
            "per_request": self.per_request,
        }


def _price(deployment: str, model: str, config: PriceConfig, source: str) -> Price:
    cached = config.cached_input_per_mtok
    price = Price(
        deployment=deployment,
        model=model,
        input_per_mtok=float(config.input_per_mtok),
        cached_input_per_mtok=float(config.input_per_mtok if cached is None else cached),
        output_per_mtok=float(config.output_per_mtok),
        per_request=float(config.per_request),
        source=source,
        version="",
    )
    digest = hashlib.sha256(orjson.dumps(price.fields(), option=orjson.OPT_SORT_KEYS)).hexdigest()
    return replace(price, version=digest[:16])


@functools.cache
def shipped_prices() -> Mapping[str, PriceConfig]:
    """The list prices shipped with elevenfactor (``config/defaults/prices.yaml``), by model id."""
    source = "built-in prices (elevenfactor/config/defaults/prices.yaml)"
    text = resources.files("elevenfactor.config").joinpath("defaults/prices.yaml")
    data = yaml.safe_load(text.read_text(encoding="utf-8")) or {}
    out: dict[str, PriceConfig] = {}
    for key, value in data.items():
        try:
            out[str(key)] = PriceConfig.model_validate(value)
        except ValueError as exc:
            raise ConfigError(f"invalid price: {exc}", source=source, key=str(key)) from None
    return out


@dataclass(frozen=True, slots=True)
class _Entry:
    price: Price | None
    output_cap: int


class PriceBook:
    """Every deployment's resolved price and output cap, computed once.

    Build it with ``PriceBook.from_project`` (or ``price_book`` for a cached one per project).
    """

    def __init__(self, entries: Mapping[str, _Entry]) -> None:
        self._entries = dict(entries)

    @classmethod
    def from_project(
        cls, project: ProjectConfig, defaults: Mapping[str, PriceConfig] | None = None
    ) -> PriceBook:
        """Resolve the price and output cap of every deployment of ``project``, with
        ``defaults`` (by model id; the shipped list prices when None) as the last resort."""
        shipped = shipped_prices() if defaults is None else defaults
        entries: dict[str, _Entry] = {}
        for name, dep in project.models.items():
            entries[name] = _Entry(
                price=_resolve(name, dep, project.prices, shipped),
                output_cap=_output_cap(dep),
            )
        return cls(entries)

    @property
    def deployments(self) -> list[str]:
        """The deployments this book knows, in project order."""
        return list(self._entries)

    def price(self, deployment: str | None) -> Price | None:
        """The price of ``deployment``; None when it is unknown or unpriced."""
        entry = self._entries.get(deployment or "")
        return entry.price if entry is not None else None

    def cost(self, deployment: str | None, usage: Usage) -> float | None:
        """What ``usage`` cost on ``deployment``; None when it is unknown or unpriced."""
        entry = self._entries.get(deployment or "")
        if entry is None or entry.price is None:
            return None
        return entry.price.cost(usage)

    def bill(self, deployment: str | None, usage: Usage, cache_hit: bool = False) -> Bill:
        """Cost, savings and price version of one call. A response-cache hit costs 0 and saves
        what the call would have cost; otherwise the savings are the prompt-cache discount.
        All None when the deployment is unknown or unpriced."""
        price = self.price(deployment)
        if price is None:
            return Bill(None, None, None)
        full = price.list_cost(usage)
        cost = 0.0 if cache_hit else price.cost(usage)
        return Bill(cost, round(full - cost, 10), price.version)

    def output_cap(self, deployment: str | None) -> int:
        """Output tokens a request to ``deployment`` that sets no ``max_tokens`` may produce:
        its ``params.max_tokens``, else ``max_output_tokens``, else its context window, else
        ``DEFAULT_OUTPUT_CAP``."""
        entry = self._entries.get(deployment or "")
        return entry.output_cap if entry is not None else DEFAULT_OUTPUT_CAP

    def worst_case(
        self, deployments: Sequence[str], prompt_tokens: int, max_tokens: int | None
    ) -> float:
        """The most a call may cost on any of ``deployments`` (the members of its route's
        chain): ``prompt_tokens`` at the input price, plus the output tokens at the output
        price, plus the per-request price. Output tokens are ``max_tokens`` when given, else
        the deployment's ``output_cap``. Unknown and unpriced deployments count 0. Cached input
        is not discounted: a reservation assumes no cache hit."""
        worst = 0.0
        for name in deployments:
            entry = self._entries.get(name)
            if entry is None or entry.price is None:
                continue
            p = entry.price
            out = entry.output_cap if max_tokens is None else max_tokens
            cost = (
                prompt_tokens * p.input_per_mtok + out * p.output_per_mtok
            ) / 1_000_000 + p.per_request
            worst = max(worst, cost)
        return round(worst, 10)

    def versions(self) -> list[Price]:
        """Every resolved price (one per priced deployment)."""
        return [e.price for e in self._entries.values() if e.price is not None]


def _resolve(
    name: str,
    dep: DeploymentConfig,
    prices: Mapping[str, PriceConfig],
    shipped: Mapping[str, PriceConfig],
) -> Price | None:
    if dep.price is not None:
        return _price(name, dep.model, dep.price, f"models.{name}.price")
    for key in (name, dep.model):
        if key in prices:
            return _price(name, dep.model, prices[key], f"prices.{key}")
    for key in (dep.model, _SNAPSHOT.sub("", dep.model)):
        if key in shipped:
            return _price(name, dep.model, shipped[key], "default")
    return None


def _output_cap(dep: DeploymentConfig) -> int:
    params_max = dep.params.get("max_tokens")
    if isinstance(params_max, int) and not isinstance(params_max, bool) and params_max > 0:
        return params_max
    return dep.max_output_tokens or dep.context_window or DEFAULT_OUTPUT_CAP


_BOOKS: dict[int, tuple[ProjectConfig, PriceBook]] = {}


def price_book(project: ProjectConfig) -> PriceBook:
    """The ``PriceBook`` of ``project``, built on first use and kept while the project is
    (a few projects at most: one per running configuration)."""
    found = _BOOKS.get(id(project))
    if found is not None and found[0] is project:
        return found[1]
    book = PriceBook.from_project(project)
    if len(_BOOKS) >= 8:
        _BOOKS.pop(next(iter(_BOOKS)))
    _BOOKS[id(project)] = (project, book)
    return book


def estimate_prompt_tokens(messages: Sequence[Message], settings: ModelSettings) -> int:
    """An upper bound on the prompt tokens of a request, without a tokenizer.

    It counts the UTF-8 bytes of every message's text (content, name, tool calls), of the tool
    definitions and of the response schema as JSON, plus 8 tokens per message and 8 for the
    reply's priming (chat templates add 3-4 per message), plus 1024 when tools are given (the
    tool-use system prompt some providers add). It is an upper bound because the tokenizers of
    these models (byte-level BPE, SentencePiece with byte fallback) never produce a token for
    less than one byte of text: tokens never exceed bytes. Real prompts are about 4 bytes per
    token in English, so the bound over-reserves by about 4x; the reservation is released when
    the real usage is committed.
    """
    total = _PRIMING
    for m in messages:
        total += _PER_MESSAGE + _bytes(m.content or "")
        if isinstance(m, UserMessage) and m.name:
            total += _bytes(m.name)
        elif isinstance(m, AssistantMessage):
            for tc in m.tool_calls:
                total += _PER_MESSAGE + _bytes(tc.id) + _bytes(tc.name) + _bytes(tc.arguments)
        elif isinstance(m, ToolMessage):
            total += _bytes(m.tool_call_id)
    if settings.tools:
        total += _TOOLS_OVERHEAD
        for t in settings.tools:  # the definition as JSON: name, description, schema, keys
            total += _PER_TOOL + _bytes(t.name) + _bytes(t.description)
            total += len(orjson.dumps(t.parameters))
    if settings.response_format is not None and settings.response_format.json_schema:
        total += len(orjson.dumps(settings.response_format.json_schema))
    return total


def _bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


async def store_prices(db: Executor, book: PriceBook, now: float | None = None) -> int:
    """Record every price version of ``book`` not yet in the ``prices`` table (one row per
    version, never updated: old call records keep the price they were charged at). Call it
    when a server or worker starts. Returns how many versions it offered."""
    return await insert_prices(db, book.versions(), now)


async def insert_prices(db: Executor, prices: Iterable[Price], now: float | None = None) -> int:
    """Record each of ``prices`` whose version is not in the ``prices`` table yet; how many
    were offered."""
    rows = [
        (p.version, p.deployment, p.model, orjson.dumps(p.fields(), option=orjson.OPT_SORT_KEYS)
         .decode(), time.time() if now is None else now)
        for p in prices
    ]  # fmt: skip
    if rows:
        await db.executemany(
            "INSERT INTO prices (version, deployment, model, price, first_seen)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (version) DO NOTHING",
            rows,
        )
    return len(rows)
