"""What a scorer looks at: ``Observed``, one output of a target (a model ``Response``, an
agent run's result dict or plain text) in one shape, and ``ScoreContext``, what scorers may
need from outside (guard policies, the judge, the project directory).

``observe`` reads an agent result dict's ``output`` (or ``text``/``answer``/``content``),
``tool_calls`` (``[{name, arguments}]``, arguments a dict or a JSON string; ``tool``/``args``
are accepted too), ``usage`` (``input_tokens``/``output_tokens``), ``cost_usd`` and
``latency_ms``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from elevenfactor.governance._guard_judge import Judge
from elevenfactor.models._messages import Response, Usage

if TYPE_CHECKING:
    from elevenfactor.evals._results import Score
    from elevenfactor.evals._suite import Case
    from elevenfactor.governance._policy_model import Policy

__all__ = ["Observed", "ObservedCall", "ScoreContext", "Scorer", "observe"]

_TEXT_KEYS = ("output", "text", "answer", "content")


@dataclass(frozen=True, slots=True)
class ObservedCall:
    """A tool call the target made: its name and decoded arguments (``{}`` when they were
    not a JSON object)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Observed:
    """One output of a target, as scorers read it. ``None`` cost or latency: not recorded."""

    text: str = ""
    tool_calls: tuple[ObservedCall, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float | None = None

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def summary(self, limit: int = 500) -> str:
        """The text, cut to ``limit`` characters (what a ``CaseResult`` keeps)."""
        return self.text if len(self.text) <= limit else self.text[: limit - 1] + "…"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Observed:
        """An ``Observed`` from its journaled form (``dataclasses.asdict``)."""
        return cls(
            text=str(data.get("text", "")),
            tool_calls=tuple(
                ObservedCall(str(c["name"]), dict(c.get("arguments") or {}))
                for c in data.get("tool_calls", [])
            ),
            input_tokens=int(data.get("input_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            cost_usd=data.get("cost_usd"),
            latency_ms=data.get("latency_ms"),
        )


@dataclass(frozen=True, slots=True)
class ScoreContext:
    """What scorers may need besides the output: guard ``policies`` by id (the ``guard``
    scorer), the LLM ``judge`` and its default route (the ``judge`` scorer) and the project
    directory ``base`` (put on ``sys.path`` for ``custom`` scorer references)."""

    policies: Mapping[str, Policy] = field(default_factory=dict)
    judge: Judge | None = None
    judge_route: str | None = None
    base: Path | None = None


@runtime_checkable
class Scorer(Protocol):
    """Judges one observed output of one case."""

    @property
    def label(self) -> str:
        """The name its ``Score`` carries."""
        ...

    async def score(self, observed: Observed, case: Case, ctx: ScoreContext) -> Score:
        """The score of ``observed``, the output for ``case``."""
        ...


def _args(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return {}
    return dict(raw) if isinstance(raw, Mapping) else {}


def _call(raw: Any) -> ObservedCall:
    if isinstance(raw, ObservedCall):
        return raw
    if isinstance(raw, Mapping):
        fn = raw.get("function")
        if isinstance(fn, Mapping):  # the OpenAI wire shape
            return ObservedCall(str(fn.get("name", "")), _args(fn.get("arguments")))
        name = raw.get("name", raw.get("tool", ""))
        return ObservedCall(str(name), _args(raw.get("arguments", raw.get("args"))))
    name, arguments = getattr(raw, "name", ""), getattr(raw, "arguments", None)
    return ObservedCall(str(name), _args(arguments))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def observe(
    value: Response | Mapping[str, Any] | str | Observed,
    *,
    cost_usd: float | None = None,
    latency_ms: float | None = None,
) -> Observed:
    """``value`` as an ``Observed``; ``cost_usd`` and ``latency_ms`` (measured by the
    runner) are used when ``value`` does not record its own."""
    if isinstance(value, Observed):
        return value
    if isinstance(value, str):
        return Observed(text=value, cost_usd=cost_usd, latency_ms=latency_ms)
    if isinstance(value, Response):
        return Observed(
            text=value.message.content or "",
            tool_calls=tuple(_call(c) for c in value.message.tool_calls),
            input_tokens=value.usage.input_tokens,
            output_tokens=value.usage.output_tokens,
            cost_usd=cost_usd,
            latency_ms=latency_ms,
        )
    text = next((value[k] for k in _TEXT_KEYS if isinstance(value.get(k), str)), "")
    usage = value.get("usage")
    if isinstance(usage, Usage):
        usage = usage.model_dump()
    usage = usage if isinstance(usage, Mapping) else {}
    calls = value.get("tool_calls")
    own_cost = _number(value.get("cost_usd", value.get("cost")))
    own_latency = _number(value.get("latency_ms"))
    return Observed(
        text=text,
        tool_calls=tuple(_call(c) for c in calls) if isinstance(calls, list | tuple) else (),
        input_tokens=int(usage.get("input_tokens", 0) or 0),
        output_tokens=int(usage.get("output_tokens", 0) or 0),
        cost_usd=own_cost if own_cost is not None else cost_usd,
        latency_ms=own_latency if own_latency is not None else latency_ms,
    )
