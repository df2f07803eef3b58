"""Measuring a guard policy on a labelled corpus (``guard eval``, ``bench/guards``).

A corpus is JSONL: one object per line with ``text`` and ``label`` (``benign`` is a negative,
any other label a positive), optionally ``stage`` (where the row is checked) and ``expect``
(the rule names, rule kinds or finding kinds that should fire on it). ``read_corpus`` reads a
file or a directory of them; ``evaluate`` runs a policy on every row and reports, per rule and
for the policy as a whole, how often it fired on positives and negatives, its precision, the
expected finding kinds it found and the time a check took.

``check_stages`` runs a policy on one text (or tool call) at several stages (``guard test``);
``split_findings`` attributes a verdict's findings to the rules that produced them, so that
``guard test`` can print a row per rule.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elevenfactor.errors import RequestError
from elevenfactor.governance._guard_pii import PII_KINDS
from elevenfactor.governance._guard_pipeline import GuardEntry, pipeline_for
from elevenfactor.governance._guard_redact import PlaceholderMap
from elevenfactor.governance._guard_secrets import SECRET_KINDS
from elevenfactor.governance._guard_types import STAGES, Finding, Stage, Verdict
from elevenfactor.governance._policy_model import Policy

__all__ = [
    "CORPUS_HINT",
    "Sample",
    "check_stages",
    "evaluate",
    "evaluate_async",
    "read_corpus",
    "split_findings",
    "spread",
]

CORPUS_HINT = 'one JSON object per line: {"text": "...", "label": "benign" | "injection" | …}'
"""The hint of a ``guard_corpus_invalid`` error: what a corpus row looks like."""
_INJECTION_KINDS = frozenset({"prompt_injection", "jailbreak", "injection"})


@dataclass(frozen=True, slots=True)
class Sample:
    """One corpus row: its text, whether it is a positive, its stage and expected kinds."""

    text: str
    positive: bool
    stage: Stage | None = None
    expect: tuple[str, ...] = ()


def split_findings(entries: Sequence[GuardEntry], verdict: Verdict) -> list[list[Finding] | None]:
    """Per entry of a stage, the findings of ``verdict`` it produced (None: it did not fire),
    from the verdict's ``fired`` list (entry order, with counts)."""
    out: list[list[Finding] | None] = []
    fired = list(verdict.extra.get("fired", []))
    pos, j = 0, 0
    for entry in entries:
        hit = fired[j] if j < len(fired) else None
        if (
            hit is not None
            and hit["rule"] == entry.label
            and (hit["action"] == entry.guard.action or "guard_error" in hit["kinds"])
        ):
            out.append(list(verdict.findings[pos : pos + hit["count"]]))
            pos, j = pos + hit["count"], j + 1
        else:
            out.append(None)
    return out


async def check_stages(
    policy: Policy,
    stages: Sequence[Stage],
    text: str | None,
    tool: str | None = None,
    args: Mapping[str, Any] | None = None,
) -> list[tuple[Stage, Verdict, str]]:
    """The verdict of ``policy`` at each of ``stages``, in order, with the content checked
    there; one placeholder map serves every stage (as it would a conversation). At
    ``tool_call`` with a ``tool``, the call ``tool(args)`` is checked (its content: ``args`` as
    JSON); every other stage checks ``text`` (empty when None)."""
    pipeline = pipeline_for([policy])
    mapping, arguments = PlaceholderMap(), dict(args or {})
    out: list[tuple[Stage, Verdict, str]] = []
    for st in stages:
        if st == "tool_call" and tool is not None:
            verdict = await pipeline.check_tool_call(tool, arguments, placeholders=mapping)
            content = json.dumps(arguments, ensure_ascii=False, default=str)
        else:
            content = text or ""
            verdict = await pipeline.check(st, content, placeholders=mapping)
        out.append((st, verdict, content))
    return out


def _corpus_error(message: str) -> RequestError:
    return RequestError(message, code="guard_corpus_invalid", param="corpus", hint=CORPUS_HINT)


def _sample(row: Any, where: str) -> Sample:
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise _corpus_error(f"{where}: expected an object with a string `text`")
    label, expect, stage = row.get("label"), row.get("expect"), row.get("stage")
    if label is not None and not isinstance(label, str):
        raise _corpus_error(f"{where}: `label` must be a string")
    if expect is not None and not (
        isinstance(expect, list) and all(isinstance(e, str) for e in expect)
    ):
        raise _corpus_error(f"{where}: `expect` must be a list of rule names or kinds")
    if label is None and expect is None:
        raise _corpus_error(f"{where}: a row needs `label` (benign is negative) or `expect`")
    if stage is not None and stage not in STAGES:
        raise _corpus_error(f"{where}: unknown stage {stage!r}; one of {', '.join(STAGES)}")
    positive = label != "benign" if label is not None else bool(expect)
    return Sample(row["text"], positive, stage, tuple(expect or ()))


def read_corpus(path: Path) -> list[Sample]:
    """The rows of a JSONL file, or of every ``*.jsonl`` in a directory (sorted by name).
    ``RequestError`` (code ``guard_corpus_invalid``) naming the file (and line) when one cannot
    be read or is malformed."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise _corpus_error(f"{path}: no *.jsonl files in the directory")
    samples: list[Sample] = []
    for file in files:
        try:
            data = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not valid UTF-8"
            raise _corpus_error(f"cannot read {file}: {reason}") from None
        for n, line in enumerate(data.split("\n"), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise _corpus_error(f"{file}:{n}: not valid JSON ({exc.msg})") from None
                samples.append(_sample(row, f"{file}:{n}"))
    return samples


def spread(samples: Sequence[Sample], limit: int | None) -> list[Sample]:
    """``limit`` rows spread evenly over ``samples`` (all of them when ``limit`` is None or
    not smaller than their number)."""
    if limit is None or limit >= len(samples):
        return list(samples)
    return [samples[i * len(samples) // limit] for i in range(limit)]


@dataclass
class _Tally:
    """Fired / not fired on positives and negatives, and expected kinds found."""

    name: str
    action: str
    covers: frozenset[str] = frozenset()
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, positive: bool, fired: bool) -> None:
        self.counts[("tp" if fired else "fn") if positive else ("fp" if fired else "tn")] += 1

    def report(self) -> dict[str, Any]:
        c = self.counts
        pos, neg, hits = c["tp"] + c["fn"], c["fp"] + c["tn"], c["tp"] + c["fp"]
        return {
            "rule": self.name,
            "action": self.action,
            **{k: c[k] for k in ("tp", "fp", "fn", "tn")},
            "detection_rate": c["tp"] / pos if pos else None,
            "false_positive_rate": c["fp"] / neg if neg else None,
            "precision": c["tp"] / hits if hits else None,
            "kinds_expected": c["kinds_expected"],
            "kinds_found": c["kinds_found"],
        }


def _covers(entry: GuardEntry) -> frozenset[str]:
    """What an ``expect`` entry may say to mean this rule: its name, kind, or finding kinds."""
    spec = entry.guard.spec
    known = {"pii": PII_KINDS, "secrets": SECRET_KINDS, "injection": tuple(_INJECTION_KINDS)}
    kinds: Sequence[str] = getattr(spec, "kinds", None) or known.get(spec.rule, ())
    return frozenset({entry.label, spec.rule, *kinds})


def _pct(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def evaluate_async(
    policy: Policy,
    samples: Sequence[Sample],
    stage: Stage,
    advance: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """``evaluate`` in a running event loop."""
    pipeline = pipeline_for([policy])
    tallies: dict[tuple[Stage, int], _Tally] = {}
    whole, actions, times = _Tally("(policy: any verdict but allow)", "any"), Counter[str](), []
    for s in samples:
        st = s.stage or stage
        entries = [e for e in pipeline.entries(st) if not e.guard.tool_call]
        started = time.perf_counter_ns()
        verdict = await pipeline.check(st, s.text)
        times.append((time.perf_counter_ns() - started) / 1000)
        actions[verdict.action] += 1
        whole.add(s.positive, verdict.action != "allow")
        for i, (entry, found) in enumerate(
            zip(entries, split_findings(entries, verdict), strict=True)
        ):
            t = tallies.setdefault((st, i), _Tally(entry.label, entry.guard.action, _covers(entry)))
            wanted = t.covers.intersection(s.expect)
            t.add(bool(wanted) if s.expect else s.positive, found is not None)
            kinds = wanted - {entry.label, entry.guard.spec.rule}
            t.counts["kinds_expected"] += len(kinds)
            t.counts["kinds_found"] += len(kinds & {f.kind for f in found or ()})
        advance()
    stages = {st for st, _ in tallies}
    rules = [
        {**t.report(), "stage": st} | ({"rule": f"{st}: {t.name}"} if len(stages) > 1 else {})
        for (st, _), t in sorted(tallies.items(), key=lambda kv: (STAGES.index(kv[0][0]), kv[0][1]))
    ]
    ordered = sorted(times)
    return {
        "policy": policy.ref,
        "stage": stage,
        "rows": len(samples),
        "positives": sum(s.positive for s in samples),
        "rules": rules,
        "policy_total": whole.report(),
        "verdicts": dict(actions),
        "check_us": {
            "p50": _pct(ordered, 50),
            "p99": _pct(ordered, 99),
            "mean": statistics.fmean(ordered) if ordered else None,
        },
    }


def evaluate(
    policy: Policy,
    samples: Sequence[Sample],
    stage: Stage,
    advance: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Per rule and for the policy: fired on positives and negatives, precision, kinds found,
    check time. A row with ``expect`` is a positive for the rules it names (by name, kind or
    a finding kind they report) and a negative for the others; a row without ``stage`` is
    checked at ``stage``. ``advance`` is called after each row (a progress bar's step).

    Runs its own event loop; use ``evaluate_async`` from async code."""
    return asyncio.run(evaluate_async(policy, samples, stage, advance))
