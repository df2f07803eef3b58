"""The streaming output guard (factor 10): the pipeline's rules over an answer that arrives in
chunks, with a bounded look-behind.

``StreamGuard.feed(chunk)`` returns a ``StreamStep``: ``emit``, the text safe to send now, and
``verdict``, set when a rule fired. The last ``window`` characters (default 256) are held back,
so a secret, a PII value or a denied phrase split across chunks is still seen whole before any
of it is sent: content rules run over the held text plus the new chunk, never the whole answer
again (O(chunk + window) per chunk; a scan waits until ``batch`` characters beyond the window
are held, so tiny chunks do not each cost a scan). A value is caught when it is at most
``window`` characters long.

- ``block`` / ``escalate``: the step carries the verdict and emits nothing; the caller stops
  the stream with an error event. Nothing held back is ever emitted afterwards.
- ``redact``: the released text is rewritten first (placeholder or mask, as in ``check``);
  the release point moves back before a finding that straddles it, so no value is split
  between a rewritten and a raw part nor reported twice (unless that would hold back more
  than four windows: then the whole value is rewritten and released).
- ``monitor``: recorded in the step's verdict, the text flows on.

``length`` counts the whole answer so far. ``json_schema`` and ``relevance`` run at
``finish()`` on the whole text, which is kept only when such rules exist. Finding positions in
verdicts are offsets in the whole answer.

With a caller's ``PlaceholderMap``, the emitted text is still the model's text (placeholders
included, plus any the guard issued); the caller restores it for the user with
``StreamRestorer`` over the emitted chunks.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from elevenfactor.governance._guard_content import TextViews, find_length_over
from elevenfactor.governance._guard_pipeline import (
    GuardEntry,
    GuardPipeline,
    Outcome,
    decide,
    run_entries,
)
from elevenfactor.governance._guard_redact import PlaceholderMap
from elevenfactor.governance._guard_types import Finding, Stage, Verdict

__all__ = ["StreamGuard", "StreamStep"]

_STOP = ("escalate", "block")
_HOLD_LIMIT = 4  # windows


@dataclass(frozen=True, slots=True)
class StreamStep:
    """What the caller does after a chunk: send ``emit``; when ``verdict`` is set, record it,
    and stop the stream if its action is ``block`` or ``escalate``."""

    emit: str
    verdict: Verdict | None = None


class StreamGuard:
    """Guards one streamed answer at ``stage`` (see the module docstring)."""

    def __init__(
        self,
        pipeline: GuardPipeline,
        *,
        stage: Stage = "output",
        ctx: Mapping[str, Any] | None = None,
        placeholders: PlaceholderMap | None = None,
        window: int = 256,
        batch: int = 32,
    ) -> None:
        if window < 1 or batch < 1:
            raise ValueError("window and batch must be at least 1")
        entries = [e for e in pipeline.entries(stage) if not e.guard.tool_call]
        self._scanned = tuple(e for e in entries if not e.guard.deferred and not _is_length(e))
        self._lengths = tuple(e for e in entries if _is_length(e))
        self._deferred = tuple(e for e in entries if e.guard.deferred)
        self._ctx = dict(ctx or {})
        self._placeholders = PlaceholderMap() if placeholders is None else placeholders
        self._window, self._batch = window, batch
        self._whole: list[str] | None = [] if self._deferred else None
        self._held = ""
        self._offset = 0  # position of _held[0] in the whole answer
        self._total = 0
        self._seen: set[tuple[int, str, str, str]] = set()
        self._length_fired: set[int] = set()
        self._stopped: Verdict | None = None
        self._finished = False

    @property
    def stopped(self) -> Verdict | None:
        """The ``block`` or ``escalate`` verdict that stopped the stream, if any."""
        return self._stopped

    def feed(self, text: str) -> StreamStep:
        """The text safe to send after ``text`` arrived, and a verdict when a rule fired."""
        if self._stopped is not None or self._finished:
            return StreamStep("", self._stopped)
        started = time.perf_counter_ns()
        self._total += len(text)
        self._held += text
        if self._whole is not None:
            self._whole.append(text)
        extra = self._length_pairs()
        if len(self._held) >= self._window + self._batch:
            return self._step(final=False, extra=extra, started=started)
        if not extra:
            return StreamStep("")
        verdict = decide([e for e, _ in extra], [o for _, o in extra], "", None, started)
        if verdict.action in _STOP:
            self._stopped = verdict
        return StreamStep("", verdict)

    async def finish(self) -> StreamStep:
        """The rest of the text at the end of the stream, after the held text was scanned and
        the whole-text rules (``json_schema``, ``relevance``) ran."""
        if self._stopped is not None or self._finished:
            return StreamStep("", self._stopped)
        started = time.perf_counter_ns()
        extra = self._length_pairs()
        if self._deferred:
            views = TextViews("".join(self._whole or ()))
            ctx = self._ctx
            outcomes = await run_entries(self._deferred, lambda g: g.start(views, ctx))
            extra += list(zip(self._deferred, outcomes, strict=True))
        self._finished = True
        return self._step(final=True, extra=extra, started=started)

    def _length_pairs(self) -> list[tuple[GuardEntry, Outcome]]:
        pairs: list[tuple[GuardEntry, Outcome]] = []
        for i, entry in enumerate(self._lengths):
            found = find_length_over(self._total, entry.guard.spec.max_chars)
            if found and i not in self._length_fired:
                self._length_fired.add(i)
                pairs.append((entry, found))
        return pairs

    def _scan(self, views: TextViews) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for entry in self._scanned:
            try:
                result = entry.guard.start(views, self._ctx)
            except Exception as exc:
                outcomes.append(exc)
                continue
            if isinstance(result, list):
                outcomes.append(result)
            else:  # no built-in content rule is asynchronous outside ``deferred``
                if inspect.iscoroutine(result):
                    result.close()
                outcomes.append(TypeError(f"rule {entry.label!r} cannot run on a stream"))
        return outcomes

    def _step(
        self, *, final: bool, extra: list[tuple[GuardEntry, Outcome]], started: int
    ) -> StreamStep:
        buf = self._held
        pairs = [*zip(self._scanned, self._scan(TextViews(buf)), strict=True), *extra]
        if any(_effective(e, o) in _STOP for e, o in pairs):
            verdict = decide([e for e, _ in pairs], [o for _, o in pairs], buf, None, started)
            self._stopped = self._shifted(verdict)
            self._held = ""
            return StreamStep("", self._stopped)
        cut = len(buf) if final else self._cut(buf, pairs)
        entries: list[GuardEntry] = []
        report: list[Outcome] = []
        for n, (entry, outcome) in enumerate(pairs):
            entries.append(entry)
            report.append(outcome if n >= len(self._scanned) else self._fresh(n, outcome, cut))
        release = buf[:cut]
        verdict = decide(entries, report, release, self._placeholders, started)
        self._held, self._offset = buf[cut:], self._offset + cut
        emit = verdict.content if verdict.action == "redact" and verdict.content else release
        if not verdict.extra.get("fired"):
            return StreamStep(emit)
        return StreamStep(emit, self._shifted(verdict, offset=self._offset - cut))

    def _cut(self, buf: str, pairs: Sequence[tuple[GuardEntry, Outcome]]) -> int:
        """Where to release up to: ``window`` characters before the end, moved back before a
        finding that straddles it (so a value is redacted and reported whole, once), or
        forward past it if holding back would grow too long."""
        spans = sorted((f.start, f.end) for _, o in pairs if isinstance(o, list) for f in o)
        spans = [(start, end) for start, end in spans if start >= 0]
        nominal = len(buf) - self._window
        cut = nominal
        for start, end in reversed(spans):
            if start < cut < end:
                cut = start
        if len(buf) - cut <= _HOLD_LIMIT * self._window:
            return cut
        cut = nominal
        for start, end in spans:
            if start < cut < end:
                cut = end
        return cut

    def _fresh(self, n: int, outcome: Outcome, cut: int) -> Outcome:
        """The part of a scan's outcome not reported before: positioned findings released
        now, and whole-content findings and errors seen for the first time."""
        if isinstance(outcome, Exception):
            key = (n, "error", type(outcome).__name__, "")
            if key in self._seen:
                return []
            self._seen.add(key)
            return outcome
        fresh: list[Finding] = []
        for f in outcome:
            if f.start >= 0:
                if f.start < cut:
                    fresh.append(f)
                continue
            key = (n, f.rule, f.kind, f.detail)
            if key not in self._seen:
                self._seen.add(key)
                fresh.append(f)
        return fresh

    def _shifted(self, verdict: Verdict, offset: int | None = None) -> Verdict:
        base = self._offset if offset is None else offset
        findings = tuple(
            replace(f, start=f.start + base, end=f.end + base) if f.start >= 0 else f
            for f in verdict.findings
        )
        return replace(verdict, findings=findings)


def _is_length(entry: GuardEntry) -> bool:
    return bool(getattr(entry.guard.spec, "rule", "") == "length")


def _effective(entry: GuardEntry, outcome: Outcome) -> str:
    if isinstance(outcome, Exception):
        return "block" if entry.policy.spec.on_error == "block" else "monitor"
    return entry.guard.action if outcome else "allow"
