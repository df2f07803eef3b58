"""From raw rounds to figures: the cost of the checks (everything on minus nothing configured,
per round), issue 2's goals with everything on, and the checks against the issue's targets."""

from __future__ import annotations

from typing import Any

from bench.gateway.report import GOALS, evaluate, summarize_results
from bench.limits.config import BURST_CALLS
from bench.limits.targets import PAIRS
from bench.stats import median

__all__ = ["ISSUE2_GOALS", "REDIS_TARGET_US", "checks", "pairs", "summarize"]

REDIS_TARGET_US = 200.0
# Issue 2's goals this benchmark measures (no RSS check: that is bench.gateway's).
ISSUE2_GOALS = [g for g in GOALS if not g.key.startswith("rss_")]
_STREAM_GOALS = {"ttft_added_vs_floor", "ttft_added_p50_ms"}
ON_TARGETS = ["ef-sqlite-on", "ef-pg-on", "ef-redis-on"]


def _at(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _diff(rounds: list[dict[str, Any]], on: str, none: str, *path: str) -> float | None:
    """Median over rounds of on - none (each difference taken within one round)."""
    diffs = []
    for rnd in rounds:
        a, b = _at(rnd.get(on), *path), _at(rnd.get(none), *path)
        if isinstance(a, int | float) and isinstance(b, int | float):
            diffs.append(a - b)
    return median(diffs)


def _ratio(rounds: list[dict[str, Any]], on: str, none: str, *path: str) -> float | None:
    ratios = []
    for rnd in rounds:
        a, b = _at(rnd.get(on), *path), _at(rnd.get(none), *path)
        if isinstance(a, int | float) and isinstance(b, int | float) and b > 0:
            ratios.append(a / b)
    return median(ratios)


def pairs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """For each (everything on, nothing configured) pair that ran: the added latency, CPU
    per request and the req/s ratio, medians of per-round figures."""
    lat, thr = results["rounds"]["latency"], results["rounds"]["throughput"]
    out = []
    for on, none, label in PAIRS:
        if on not in results["summary"] or none not in results["summary"]:
            continue
        out.append(
            {
                "on": on,
                "none": none,
                "label": label,
                "added_p50_us": _diff(lat, on, none, "latency_us", "p50"),
                "added_p99_us": _diff(lat, on, none, "latency_us", "p99"),
                "added_cpu_us_per_request": _diff(thr, on, none, "server_cpu_us_per_request"),
                "added_wrk_p50_us": _diff(thr, on, none, "p50_us"),
                "rps_ratio": _ratio(thr, on, none, "rps"),
                "errors": sum(
                    int(results["summary"][n].get(k) or 0)
                    for n in (on, none)
                    for k in ("latency_errors", "wrk_errors")
                ),
            }
        )
    return out


def summarize(results: dict[str, Any]) -> None:
    """Fill in ``summary`` (bench.gateway's medians per target), ``goals`` (issue 2's, the
    floor being the relay of the same rounds), ``pairs`` and ``checks``."""
    results["summary"] = {
        name: summarize_results(results, name)
        for name, info in results["targets"].items()
        if info.get("status") in ("ok", "died")
    }
    floor = results["summary"].get("relay")
    results["goals"] = {}
    for name, s in results["summary"].items():
        if not name.startswith("ef-"):
            continue
        goals = evaluate(s, floor)
        results["goals"][name] = {
            g.key: goals[g.key]
            for g in ISSUE2_GOALS
            if g.key not in _STREAM_GOALS or s.get("streams_measured")
        }
    results["pairs"] = pairs(results)
    results["checks"] = checks(results)


def _check(label: str, value: str, met: bool | None, why: str = "") -> dict[str, Any]:
    return {"label": label, "value": value, "met": met, "why": why}


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets: each with its value and met / not met / None (not measured)."""
    out = []
    redis = next((p for p in results["pairs"] if p["on"] == "ef-redis-on"), None)
    label = f"<= {REDIS_TARGET_US:.0f} µs p50 added per request with Redis (auth + budget + limits)"
    if redis is None or redis["added_p50_us"] is None:
        out.append(_check(label, "—", None, "not measured"))
    elif redis["errors"]:
        out.append(_check(label, f"{redis['added_p50_us']:+.0f} µs", False, "failed requests"))
    else:
        v = redis["added_p50_us"]
        out.append(_check(label, f"{v:+.0f} µs", v <= REDIS_TARGET_US))
    for key, backend in (
        ("ef-postgres", "PostgreSQL"),
        ("ef-redis", "Redis"),
        ("ef-sqlite-1p", "SQLite"),
    ):
        out.append(_overshoot_check(results["overshoot"].get(key), backend))
    for name in ON_TARGETS:
        goals = results["goals"].get(name)
        label = f"issue 2's targets with everything on ({name}; RSS: see bench.gateway)"
        if not goals:
            out.append(_check(label, "—", None, "not measured"))
            continue
        measured = [g for g in goals.values() if g["met"] is not None]
        missed = [g["label"] for g in measured if not g["met"]]
        value = f"{len(measured) - len(missed)} of {len(measured)} met"
        unknown = len(goals) - len(measured)
        why = "; ".join(missed) + (f"; {unknown} not measurable" if unknown else "")
        out.append(_check(label, value, not missed if measured else None, why.strip("; ")))
    for key, info in results["overshoot"].items():
        if key.startswith("litellm") and "admitted" in info:
            out.append(
                _check(
                    f"LiteLLM overshoot ({info['backend']}, {info['processes']} x"
                    f" {info['per_process']}): reported as measured",
                    f"{info['admitted']} calls admitted for {BURST_CALLS} allowed"
                    f" (${info['let_through_usd']:.3f} for a ${info['limit_usd']:.3f} budget)",
                    None,
                    "no target for a peer",
                )
            )
    return out


def _overshoot_check(info: dict[str, Any] | None, backend: str) -> dict[str, Any]:
    if not info or "admitted" not in info:
        label = f"zero overshoot, elevenfactor on {backend}"
        return _check(label, "—", None, (info or {}).get("reason", "not measured"))
    label = (
        f"zero overshoot, elevenfactor on {backend}"
        f" ({info['processes']} process(es) x {info['per_process']} concurrent)"
    )
    value = (
        f"committed ${info['committed_usd']:.6f} of ${info['budget_limit_usd']:.6f};"
        f" {info['admitted']} admitted for {info['allowed_calls']} allowed"
    )
    over = info["overshoot_usd"] > 1e-9 or info["admitted"] > info["allowed_calls"]
    why = []
    if info["admitted"] < info["allowed_calls"]:
        why.append(f"{info['allowed_calls'] - info['admitted']} fewer than the budget allows")
    if not info["only_budget_errors"]:
        why.append("some refusals were not budget_exceeded")
    if info["reserved_after_usd"]:
        why.append(f"${info['reserved_after_usd']} still reserved")
    return _check(label, value, not over and not why, "; ".join(why))
