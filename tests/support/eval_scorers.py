"""Custom eval scorers for tests, referenced as ``tests.support.eval_scorers:NAME``."""

from __future__ import annotations

from typing import Any

from elevenfactor.evals import Observed, Score, ScoreContext

__all__ = ["LengthAtMost", "broken", "not_async", "raises", "short_answer", "word_share"]


async def short_answer(observed: Observed, case: Any, ctx: ScoreContext) -> bool:
    """Pass when the answer has at most five words."""
    return len(observed.text.split()) <= 5


async def word_share(observed: Observed, case: Any, ctx: ScoreContext) -> float:
    """The share of the case's input words found in the answer."""
    words = case.input_text().lower().split()
    text = observed.text.lower()
    return sum(w in text for w in words) / len(words) if words else 1.0


class LengthAtMost:
    """A configurable scorer class: the answer is at most ``limit`` characters."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    async def score(self, observed: Observed, case: Any, ctx: ScoreContext) -> Score:
        """A full ``Score``."""
        ok = len(observed.text) <= self.limit
        return Score("length", ok, 1.0 if ok else 0.0, f"{len(observed.text)} characters")


def not_async(observed: Observed, case: Any, ctx: ScoreContext) -> bool:
    """Does not fit the protocol: not a coroutine function."""
    return True


async def raises(observed: Observed, case: Any, ctx: ScoreContext) -> bool:
    """A scorer that fails."""
    raise RuntimeError("scorer bug")


async def broken(observed: Observed, case: Any, ctx: ScoreContext) -> str:
    """Returns something that is not a score."""
    return "yes"
