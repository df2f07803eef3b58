"""Scorers on what a run did rather than what it said (factor 11): ``trajectory`` (which tools,
in what order, with what arguments) and the ceilings ``max_cost_usd``, ``max_latency_ms`` and
``max_tokens``.

``trajectory`` order modes: ``exact`` (the calls are exactly the expected ones, in order),
``in_order`` (the expected calls appear in order, other calls may come between) and
``any_order`` (each expected call matches a different observed call). Per expected call:
``args`` compared by ``args_match`` ``subset`` (default: every given key present and equal,
nested objects compared the same way) or ``exact``; ``args_regex`` maps an argument to a
pattern its value (as text) must match. ``forbidden`` tools must not be called at all. The
value is the share of expected calls matched.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from elevenfactor.evals._observed import Observed, ObservedCall, ScoreContext
from elevenfactor.evals._results import Score
from elevenfactor.evals._scorers import ScorerBase

if TYPE_CHECKING:
    from elevenfactor.evals._suite import Case

__all__ = [
    "ExpectedCall",
    "MaxCostScorer",
    "MaxLatencyScorer",
    "MaxTokensScorer",
    "TrajectoryScorer",
    "subset_match",
]


def subset_match(expected: Any, actual: Any) -> bool:
    """``expected`` is contained in ``actual``: objects key by key (recursively), anything
    else equal (lists element-wise, same length)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and subset_match(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(subset_match(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return bool(expected == actual)


class ExpectedCall(BaseModel):
    """One expected tool call: its name and, optionally, argument matchers."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    args: dict[str, Any] | None = None
    args_match: Literal["subset", "exact"] = "subset"
    args_regex: dict[str, str] = Field(default_factory=dict)

    @field_validator("args_regex")
    @classmethod
    def _compiles(cls, value: dict[str, str]) -> dict[str, str]:
        for key, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{key}: not a valid regular expression: {exc}") from None
        return value

    def matches(self, call: ObservedCall) -> bool:
        """Whether ``call`` is this call."""
        if call.name != self.name:
            return False
        if self.args is not None:
            if self.args_match == "exact" and call.arguments != self.args:
                return False
            if self.args_match == "subset" and not subset_match(self.args, call.arguments):
                return False
        for key, pattern in self.args_regex.items():
            if key not in call.arguments:
                return False
            value = call.arguments[key]
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            if re.search(pattern, text) is None:
                return False
        return True


def _in_order(expected: list[ExpectedCall], calls: tuple[ObservedCall, ...]) -> int:
    """How many expected calls match, in order (greedy earliest match is optimal)."""
    i = 0
    for call in calls:
        if i < len(expected) and expected[i].matches(call):
            i += 1
    return i


def _any_order(expected: list[ExpectedCall], calls: tuple[ObservedCall, ...]) -> int:
    """The largest number of expected calls matched to distinct observed calls."""
    owner: dict[int, int] = {}  # observed index -> expected index

    def augment(e: int, seen: set[int]) -> bool:
        for o, call in enumerate(calls):
            if o in seen or not expected[e].matches(call):
                continue
            seen.add(o)
            if o not in owner or augment(owner[o], seen):
                owner[o] = e
                return True
        return False

    return sum(augment(e, set()) for e in range(len(expected)))


class TrajectoryScorer(ScorerBase):
    """The run's tool calls follow ``calls`` (see the module docstring)."""

    type: Literal["trajectory"] = "trajectory"
    calls: list[ExpectedCall] = Field(default_factory=list)
    order: Literal["exact", "in_order", "any_order"] = "in_order"
    forbidden: list[str] = Field(default_factory=list)

    async def score(self, observed: Observed, case: Case, ctx: ScoreContext) -> Score:
        """Pass when the expected calls are all matched and no forbidden tool was called."""
        calls = observed.tool_calls
        names = [c.name for c in calls]
        if self.order == "exact":
            prefix = 0
            for exp, call in zip(self.calls, calls, strict=False):
                if not exp.matches(call):
                    break
                prefix += 1
            matched = prefix
            ok = prefix == len(self.calls) == len(calls)
        else:
            fit = _in_order if self.order == "in_order" else _any_order
            matched = fit(self.calls, calls)
            ok = matched == len(self.calls)
        bad = [n for n in self.forbidden if n in names]
        value = matched / len(self.calls) if self.calls else 1.0
        if bad:
            return self.result(False, "forbidden tools called: " + ", ".join(bad), 0.0)
        if ok:
            return self.result(True, f"{matched} expected calls matched ({self.order})", value)
        want = ", ".join(c.name for c in self.calls) or "(none)"
        got = ", ".join(names) or "(none)"
        reason = f"expected {want} ({self.order}); called {got}"
        return self.result(False, reason[:300], value)


class _Ceiling(ScorerBase):
    value: float = Field(ge=0)

    def _check(self, what: str, seen: float | None, unit: str) -> Score:
        if seen is None:
            return self.failure(f"the {what} was not recorded")
        ok = seen <= self.value
        verb = "within" if ok else "over"
        return self.result(ok, f"{what} {seen:g}{unit} {verb} the ceiling {self.value:g}{unit}")


class MaxCostScorer(_Ceiling):
    """The output cost at most ``value`` US dollars."""

    type: Literal["max_cost_usd"] = "max_cost_usd"

    async def score(self, observed: Observed, case: Case, ctx: ScoreContext) -> Score:
        """Pass when the recorded cost is within the ceiling."""
        return self._check("cost", observed.cost_usd, " USD")


class MaxLatencyScorer(_Ceiling):
    """The output took at most ``value`` milliseconds."""

    type: Literal["max_latency_ms"] = "max_latency_ms"

    async def score(self, observed: Observed, case: Case, ctx: ScoreContext) -> Score:
        """Pass when the recorded latency is within the ceiling."""
        return self._check("latency", observed.latency_ms, " ms")


class MaxTokensScorer(_Ceiling):
    """The output used at most ``value`` tokens (``of``: ``total`` (default), ``input`` or
    ``output``)."""

    type: Literal["max_tokens"] = "max_tokens"
    of: Literal["total", "input", "output"] = "total"

    async def score(self, observed: Observed, case: Case, ctx: ScoreContext) -> Score:
        """Pass when the token count is within the ceiling."""
        seen = {
            "total": observed.total_tokens,
            "input": observed.input_tokens,
            "output": observed.output_tokens,
        }[self.of]
        return self._check(f"{self.of} tokens", float(seen), "")
