"""Token counting: the ``TokenCounter`` protocol, the calibrated ``EstimateCounter``, and
``counter_for`` that picks the right counter for a route or deployment.

A model's own tokenizer is used where one is available locally (the ``local`` provider's GGUF:
``GGUFCounter``); for other providers, an estimate calibrated on real text against real
tokenizers (SmolLM2's byte-level BPE and all-MiniLM-L6-v2's WordPiece; ``python -m bench.context
tokens`` measures it). The estimate is a linear function of character-class counts, scaled so
that it rarely undercounts: budgets built on it leave the window some slack rather than
overflowing it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol, runtime_checkable

import orjson

from elevenfactor.config import ProjectConfig
from elevenfactor.context._ctx_cache import BoundedCache
from elevenfactor.context._ctx_gguf import GGUFCounter
from elevenfactor.context._ctx_target import deployments_of, local_model_path
from elevenfactor.models._messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)

__all__ = [
    "CALIBRATED",
    "FEATURES",
    "EstimateCounter",
    "EstimateWeights",
    "GGUFCounter",
    "TokenCounter",
    "counter_for",
    "text_features",
]


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens the way one model (or a conservative estimate of it) does."""

    @property
    def name(self) -> str:
        """What counts (``gguf:<file>``, ``estimate:v1``): recorded in every manifest."""
        ...

    def count(self, text: str) -> int:
        """Tokens of ``text`` alone, without any chat framing."""
        ...

    def count_messages(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition] = ()
    ) -> int:
        """Prompt tokens of a request: the messages in the chat template, and the tools."""
        ...


_LETTERS = bytes(range(ord("a"), ord("z") + 1)) + bytes(range(ord("A"), ord("Z") + 1))
_DIGITS = b"0123456789"
_SPACES = b" \t\n\r\x0b\x0c"
_WORD = re.compile(rb"[A-Za-z]+")
_INDENT = re.compile(rb"[ \t]{2,}")
_CJK = re.compile(
    "[\u2e80-\u2fdf\u3000-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\uff00-\uffef\U00020000-\U0003ffff]"
)
_HANGUL = re.compile("[\u1100-\u11ff\ua960-\ua97f\uac00-\ud7ff]")
_NON_ASCII_RUN = re.compile("[^\x00-\x7f]+")

Features = tuple[int, int, int, int, int, int, int, int, int]

FEATURES = (
    "letters",
    "words",
    "digits",
    "punct",
    "indent_runs",
    "cjk",
    "hangul",
    "other_non_ascii",
    "non_ascii_runs",
)
"""What the estimate counts: ASCII letters, runs of ASCII letters (words), digits, ASCII
punctuation, runs of two or more spaces or tabs (indentation), CJK characters (Han, kana, wide
forms), hangul, other non-ASCII characters, and runs of non-ASCII characters."""


def text_features(text: str) -> Features:
    """Counts of ``text`` per class in ``FEATURES`` order (C-speed passes, no Python loop)."""
    if text.isascii():
        raw = text.encode("ascii")
        cjk = hangul = other = runs = 0
    else:
        raw = text.encode("ascii", "ignore")
        cjk = len(_CJK.findall(text))
        hangul = len(_HANGUL.findall(text))
        other = len(text) - len(raw) - cjk - hangul
        runs = len(_NON_ASCII_RUN.findall(text))
    n = len(raw)
    letters = n - len(raw.translate(None, _LETTERS))
    digits = n - len(raw.translate(None, _DIGITS))
    spaces = n - len(raw.translate(None, _SPACES))
    words = len(_WORD.findall(raw)) if letters else 0
    indents = len(_INDENT.findall(raw)) if spaces else 0
    punct = n - letters - digits - spaces
    return letters, words, digits, punct, indents, cjk, hangul, other, runs


@dataclass(frozen=True, slots=True)
class EstimateWeights:
    """Tokens per unit of each feature, safety factors, and chat overheads."""

    version: str
    per_feature: tuple[float, ...]
    """Tokens per unit of each of ``FEATURES``, in order."""
    safety: float
    """Multiplies the fitted count of ASCII-only text, so the estimate rarely undercounts."""
    safety_non_ascii: float
    """Multiplies the fitted count of text with any non-ASCII character (other languages
    tokenize worse, in ways character classes capture only in part)."""
    per_message: int
    """Tokens a chat template adds around each message."""
    priming: int
    """Tokens added once per request (the assistant turn's opening)."""
    per_tool: int
    """Tokens added per tool definition beyond its JSON."""
    tools_preamble: int
    """Tokens added once when tools are offered (the tool-use instructions)."""


CALIBRATED = EstimateWeights(
    version="v1",
    per_feature=(0.2605, 0.1361, 1.0861, 0.8001, 0.4556, 1.6472, 2.0467, 0.7071, 1.9329),
    safety=1.16,
    safety_non_ascii=1.25,
    per_message=6,
    priming=4,
    per_tool=10,
    tools_preamble=48,
)
"""Weights fitted by ``python -m bench.context tokens --fit`` on the corpus in
``bench/context/corpus`` against SmolLM2's and all-MiniLM-L6-v2's tokenizers (the larger of the
two counts per sample); the measured errors are in ``bench/results/context-tokens-*.json``."""


class EstimateCounter:
    """A calibrated estimate, for models whose tokenizer is not available locally."""

    def __init__(self, weights: EstimateWeights = CALIBRATED, *, cache_size: int = 16_384):
        if len(weights.per_feature) != len(FEATURES):
            raise ValueError(f"per_feature needs {len(FEATURES)} weights ({', '.join(FEATURES)})")
        self.weights = weights
        self._texts: BoundedCache[str, int] = BoundedCache(cache_size)
        self._messages: BoundedCache[tuple[str, ...], int] = BoundedCache(cache_size)

    @property
    def name(self) -> str:
        """``estimate:<version>``."""
        return f"estimate:{self.weights.version}"

    def count(self, text: str) -> int:
        """The estimated tokens of ``text`` (0 for empty text, else at least 1)."""
        if not text:
            return 0
        return self._texts.get(text, lambda: self._estimate(text))

    def _estimate(self, text: str) -> int:
        f = text_features(text)
        w = self.weights
        value = sum(x * y for x, y in zip(f, w.per_feature, strict=True) if x)
        value *= w.safety if text.isascii() else w.safety_non_ascii
        return max(1, int(value + 0.999))

    def count_messages(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition] = ()
    ) -> int:
        """Estimated prompt tokens: each message with the template overhead, plus tools."""
        w = self.weights
        total = w.priming
        data = self._messages.data
        for m in messages:
            kind = type(m)
            if kind is SystemMessage or (kind is UserMessage and not m.name):  # type: ignore[union-attr]
                key: tuple[str, ...] = (m.role, m.content)  # type: ignore[assignment]
            elif kind is AssistantMessage and not m.tool_calls:  # type: ignore[union-attr]
                key = ("assistant", m.content or "")
            else:
                key = self._key(m)
            cost = data.get(key)
            if cost is None:
                cost = self._messages.get(key, partial(self._message_tokens, key))
            total += cost
        if tools:
            total += w.tools_preamble
            for t in tools:
                total += w.per_tool + self._tool(t)
        return total

    @staticmethod
    def _key(m: Message) -> tuple[str, ...]:
        if isinstance(m, AssistantMessage):
            calls = (p for tc in m.tool_calls for p in (tc.id, tc.name, tc.arguments))
            return ("assistant", m.content or "", *calls)
        if isinstance(m, ToolMessage):
            return ("tool", m.tool_call_id, m.content)
        if isinstance(m, UserMessage):
            return ("user", m.content, m.name or "")
        return (m.role, m.content)

    def _message_tokens(self, key: tuple[str, ...]) -> int:
        # role, then text parts; a tool call's parts ride in a JSON object of ~8 tokens
        calls = (len(key) - 2) // 3 if key[0] == "assistant" else 0  # id, name, arguments
        parts = sum(self.count(p) for p in key[1:])
        return self.weights.per_message + parts + 8 * calls

    def _tool(self, tool: ToolDefinition) -> int:
        text = orjson.dumps(
            {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        ).decode()
        return self.count(text)


_SHARED_LOCK = threading.Lock()
_SHARED: dict[str, TokenCounter] = {}


def _shared(key: str, make: Callable[[], TokenCounter]) -> TokenCounter:
    """One counter per key and process, so every assembly shares its cache."""
    found = _SHARED.get(key)
    if found is None:
        with _SHARED_LOCK:
            found = _SHARED.get(key)
            if found is None:
                found = _SHARED[key] = make()
    return found


def counter_for(project: ProjectConfig, model: str) -> TokenCounter:
    """The counter for a route or deployment of ``project``.

    When every deployment the route sends a request to (its chain, or its weighted targets) is a
    ``local`` one reading the same GGUF file, that file's own tokenizer (``GGUFCounter``);
    otherwise the calibrated estimate. Counters are shared per process (one cache each).
    """
    paths = {local_model_path(project, name) for name, _ in deployments_of(project, model)}
    if len(paths) == 1 and (path := next(iter(paths))) is not None and path.is_file():
        return _shared(f"gguf:{path.resolve()}", lambda: GGUFCounter(path))
    return _shared(f"estimate:{CALIBRATED.version}", EstimateCounter)
