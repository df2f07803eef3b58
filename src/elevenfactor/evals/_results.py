"""What an eval run produces (factor 11): a ``Score`` per scorer, a ``CaseResult`` per case
and repeat, a ``SuiteResult`` per suite run, and ``compare`` of a baseline with a new run.

Everything here is plain data and pure functions: the runner fills it, ``to_dict`` /
``from_dict`` round-trip it through JSON so results can be stored and baselines saved as files.

A case passes when its **pass rate** (the share of its repeats whose scores all passed) is at
least its threshold; a suite passes when every case does. A **regression** is a case that
passed in the baseline and fails now (``now_failing``), or whose pass rate dropped by more than
a tolerance while still passing (``pass_rate_drop``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CaseResult",
    "CaseStats",
    "Comparison",
    "Regression",
    "Score",
    "SuiteResult",
    "compare",
]

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Score:
    """One scorer's judgement of one output: ``value`` in [0, 1], whether it ``passed``, a
    short ``reason``; ``error`` is set when the scorer could not judge (a judge that answered
    garbage, a missing observation), which also fails it."""

    name: str
    passed: bool
    value: float
    reason: str = ""
    error: str | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.value) or not 0.0 <= self.value <= 1.0:
            raise ValueError(f"a score's value must be in [0, 1], got {self.value!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {
            "name": self.name,
            "passed": self.passed,
            "value": self.value,
            "reason": self.reason,
        }
        if self.error is not None:
            out["error"] = self.error
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        """The inverse of ``to_dict``."""
        return cls(
            name=str(data["name"]),
            passed=bool(data["passed"]),
            value=float(data["value"]),
            reason=str(data.get("reason", "")),
            error=data.get("error"),
        )


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One repeat of one case: what was observed (a short summary), its scores, whether all
    passed, and its cost and latency. ``error`` is set when the target itself failed."""

    case_id: str
    repeat: int
    scores: tuple[Score, ...]
    output: str = ""
    cost_usd: float | None = None
    latency_ms: float | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        """No error and every score passed."""
        return self.error is None and all(s.passed for s in self.scores)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "case_id": self.case_id,
            "repeat": self.repeat,
            "passed": self.passed,
            "scores": [s.to_dict() for s in self.scores],
            "output": self.output,
            "cost_usd": self.cost_usd,
            "latency_ms": self.latency_ms,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        """The inverse of ``to_dict`` (``passed`` is recomputed from the scores)."""
        return cls(
            case_id=str(data["case_id"]),
            repeat=int(data["repeat"]),
            scores=tuple(Score.from_dict(s) for s in data.get("scores", [])),
            output=str(data.get("output", "")),
            cost_usd=data.get("cost_usd"),
            latency_ms=data.get("latency_ms"),
            error=data.get("error"),
        )


@dataclass(frozen=True, slots=True)
class CaseStats:
    """A case over its repeats: runs, passes, pass rate and the threshold it is held to."""

    case_id: str
    runs: int
    passes: int
    threshold: float

    @property
    def pass_rate(self) -> float:
        """Passes over runs (0 for a case that never ran)."""
        return self.passes / self.runs if self.runs else 0.0

    @property
    def passed(self) -> bool:
        """The pass rate reaches the threshold (a case that never ran fails)."""
        return self.runs > 0 and self.pass_rate + _EPS >= self.threshold


@dataclass(slots=True)
class SuiteResult:
    """A run of one suite: every ``CaseResult`` and each case's pass-rate threshold.
    ``metadata`` records what the run varied (model, prompt, release) and when it ran."""

    suite_id: str
    suite_version: str
    results: list[CaseResult] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def cases(self) -> list[CaseStats]:
        """Per-case statistics, in the order cases first appear (thresholds without results
        are cases that never ran)."""
        order: list[str] = []
        runs: dict[str, int] = {}
        passes: dict[str, int] = {}
        for r in self.results:
            if r.case_id not in runs:
                order.append(r.case_id)
                runs[r.case_id] = passes[r.case_id] = 0
            runs[r.case_id] += 1
            passes[r.case_id] += int(r.passed)
        order.extend(c for c in self.thresholds if c not in runs)
        return [
            CaseStats(c, runs.get(c, 0), passes.get(c, 0), self.thresholds.get(c, 1.0))
            for c in order
        ]

    def stats(self, case_id: str) -> CaseStats | None:
        """One case's statistics, or None when the suite has no such case."""
        return next((s for s in self.cases() if s.case_id == case_id), None)

    @property
    def passed(self) -> bool:
        """Every case reached its threshold (and there was at least one)."""
        stats = self.cases()
        return bool(stats) and all(s.passed for s in stats)

    @property
    def pass_rate(self) -> float:
        """The share of cases that passed."""
        stats = self.cases()
        return sum(s.passed for s in stats) / len(stats) if stats else 0.0

    @property
    def cost_usd(self) -> float:
        """The recorded cost of every repeat of every case."""
        return sum(r.cost_usd or 0.0 for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (with the computed per-case statistics, for reports)."""
        return {
            "suite_id": self.suite_id,
            "suite_version": self.suite_version,
            "passed": self.passed,
            "metadata": dict(self.metadata),
            "thresholds": dict(self.thresholds),
            "cases": [
                {
                    "case_id": s.case_id,
                    "runs": s.runs,
                    "passes": s.passes,
                    "pass_rate": s.pass_rate,
                    "threshold": s.threshold,
                    "passed": s.passed,
                }
                for s in self.cases()
            ],
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuiteResult:
        """The inverse of ``to_dict`` (statistics are recomputed, not trusted)."""
        return cls(
            suite_id=str(data["suite_id"]),
            suite_version=str(data.get("suite_version", "")),
            results=[CaseResult.from_dict(r) for r in data.get("results", [])],
            thresholds={str(k): float(v) for k, v in data.get("thresholds", {}).items()},
            metadata=dict(data.get("metadata", {})),
        )


@dataclass(frozen=True, slots=True)
class Regression:
    """A case worse now than in the baseline."""

    case_id: str
    kind: Literal["now_failing", "pass_rate_drop"]
    before: float
    after: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "case_id": self.case_id,
            "kind": self.kind,
            "before": self.before,
            "after": self.after,
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """A baseline against a new run: regressions, cases fixed since, and cases only one of
    the two has."""

    regressions: tuple[Regression, ...]
    fixed: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """No regressions (what a CI gate checks)."""
        return not self.regressions

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "regressions": [r.to_dict() for r in self.regressions],
            "fixed": list(self.fixed),
            "added": list(self.added),
            "removed": list(self.removed),
        }


def compare(baseline: SuiteResult, current: SuiteResult, *, tolerance: float = 0.0) -> Comparison:
    """What changed from ``baseline`` to ``current``, case by case. A pass-rate drop larger
    than ``tolerance`` in a case that still passes is a regression too (a flakier case)."""
    before = {s.case_id: s for s in baseline.cases()}
    after = {s.case_id: s for s in current.cases()}
    regressions: list[Regression] = []
    fixed: list[str] = []
    for case_id, now in after.items():
        then = before.get(case_id)
        if then is None or then.runs == 0:
            continue
        if then.passed and not now.passed:
            regressions.append(Regression(case_id, "now_failing", then.pass_rate, now.pass_rate))
        elif now.passed and then.pass_rate - now.pass_rate > tolerance + _EPS:
            regressions.append(Regression(case_id, "pass_rate_drop", then.pass_rate, now.pass_rate))
        elif now.passed and not then.passed:
            fixed.append(case_id)
    return Comparison(
        regressions=tuple(regressions),
        fixed=tuple(fixed),
        added=tuple(c for c in after if c not in before),
        removed=tuple(c for c in before if c not in after),
    )
