"""What an eval report shows, as plain data: one row per case (repeats passed, pass rate,
failed scorers with their reasons, cost, latency), the totals, and the cost or latency drift
against a baseline. The CLI's table and the HTML report are both made from these.

Drift is shown, not gated: a case whose mean cost or latency grew by more than the tolerance
(default 25 %) over the baseline's is listed so a reviewer sees it; ceilings that should fail
the gate are scorers (``max_cost_usd``, ``max_latency_ms``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from elevenfactor.evals._results import CaseResult, SuiteResult

__all__ = ["CaseRow", "Drift", "case_rows", "drift", "totals"]


@dataclass(frozen=True, slots=True)
class CaseRow:
    """One case of a result, for a table."""

    case_id: str
    runs: int
    passes: int
    pass_rate: float
    threshold: float
    passed: bool
    failures: tuple[str, ...]
    """``scorer: reason`` of each distinct failed scorer (or the target's error)."""
    cost_usd: float | None
    latency_ms: float | None
    output: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "case_id": self.case_id,
            "runs": self.runs,
            "passes": self.passes,
            "pass_rate": self.pass_rate,
            "threshold": self.threshold,
            "passed": self.passed,
            "failures": list(self.failures),
            "cost_usd": self.cost_usd,
            "latency_ms": self.latency_ms,
        }


def _failures(results: list[CaseResult]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for r in results:
        if r.error is not None:
            seen.setdefault(f"error: {r.error}", None)
        for s in r.scores:
            if not s.passed:
                seen.setdefault(f"{s.name}: {s.reason}", None)
    return tuple(seen)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def case_rows(result: SuiteResult) -> list[CaseRow]:
    """Every case of ``result``, in suite order."""
    rows: list[CaseRow] = []
    for s in result.cases():
        mine = [r for r in result.results if r.case_id == s.case_id]
        costs = [r.cost_usd for r in mine if r.cost_usd is not None]
        lats = [r.latency_ms for r in mine if r.latency_ms is not None]
        rows.append(
            CaseRow(
                case_id=s.case_id,
                runs=s.runs,
                passes=s.passes,
                pass_rate=s.pass_rate,
                threshold=s.threshold,
                passed=s.passed,
                failures=_failures(mine),
                cost_usd=sum(costs) if costs else None,
                latency_ms=_mean(lats),
                output=mine[0].output if mine else "",
            )
        )
    return rows


def totals(result: SuiteResult) -> dict[str, Any]:
    """Cases passed, failed and in all, the pass rate, the cost and the mean latency."""
    stats = result.cases()
    lats = [r.latency_ms for r in result.results if r.latency_ms is not None]
    priced = [r.cost_usd for r in result.results if r.cost_usd is not None]
    return {
        "passed": result.passed,
        "cases": len(stats),
        "cases_passed": sum(1 for s in stats if s.passed),
        "cases_failed": sum(1 for s in stats if not s.passed),
        "runs": len(result.results),
        "pass_rate": result.pass_rate,
        "cost_usd": sum(priced) if priced else None,
        "latency_ms": _mean(lats),
    }


@dataclass(frozen=True, slots=True)
class Drift:
    """A case whose mean cost or latency grew beyond the tolerance."""

    case_id: str
    metric: str
    before: float
    after: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "case_id": self.case_id,
            "metric": self.metric,
            "before": self.before,
            "after": self.after,
        }


def drift(baseline: SuiteResult, current: SuiteResult, tolerance: float = 0.25) -> list[Drift]:
    """Cases whose mean cost per run or mean latency rose more than ``tolerance`` (a share)
    over the baseline's."""

    def means(result: SuiteResult) -> dict[str, tuple[float | None, float | None]]:
        out: dict[str, tuple[float | None, float | None]] = {}
        for s in result.cases():
            mine = [r for r in result.results if r.case_id == s.case_id]
            costs = [r.cost_usd for r in mine if r.cost_usd is not None]
            lats = [r.latency_ms for r in mine if r.latency_ms is not None]
            out[s.case_id] = (_mean(costs), _mean(lats))
        return out

    before, after = means(baseline), means(current)
    found: list[Drift] = []
    for case_id, (cost, lat) in after.items():
        if case_id not in before:
            continue
        old_cost, old_lat = before[case_id]
        for metric, old, new in (("cost_usd", old_cost, cost), ("latency_ms", old_lat, lat)):
            if old is not None and new is not None and old > 0 and new > old * (1 + tolerance):
                found.append(Drift(case_id, metric, old, new))
    return found
