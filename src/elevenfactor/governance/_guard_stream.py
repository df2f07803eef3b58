"""The streaming output guard (factor 10): the pipeline's rules over an answer that arrives in
chunks, holding back only what a rule could still need.

``StreamGuard.feed(chunk)`` returns a ``StreamStep``: ``emit``, the text safe to send now, and
``verdict``, set when a rule fired. Content rules run over the **held** text (not sent yet)
plus a **context**: the last ``context`` characters already sent (default 128; at least
``min_hold`` and 64, the furthest a rule reads before a value; widened back to the start of
the word it begins in), so a rule that reads the words before a value (an ``Authorization:``
header before its token, a secret keyword within 40 characters, "call me at" before a number)
still sees them. Findings entirely inside the context were handled when that text was held:
they are dropped. One that starts there and reaches into the held text cannot happen when the
hold covered the value; it is handled as starting at the held text (rewritten from there, or
the stream stops).

**Hold-back.** A scan releases all but the last ``hold`` characters: the longer of
``min_hold`` (default 64) and the trailing run of non-whitespace characters (the word in
progress), at most ``window`` (256). Keys, tokens, e-mail addresses and URLs with passwords
are single words: holding the word in progress whole is enough. Values with spaces (phone
numbers, grouped IBANs and cards, national ids) are at most about 45 characters: ``min_hold``
covers them. It is raised for the stage's rules: to twice the longest denied phrase or topic
keyword plus 16 (look-alike, invisible and doubled characters lengthen a phrase), to 128 with
an ``injection`` rule, to ``window`` with a ``patterns`` regex (its reach is unknown). A scan
runs once ``hold + batch`` characters are held (the first one as soon as one character can
go), so text starts to flow after about ``min_hold`` characters instead of ``window +
batch``; each scan reads the context and the held text: O(chunk + window + context) per
chunk. Held text is never released without a scan: a value may still be arriving.

A value is caught when it is at most ``window`` characters long and what a rule reads around
it fits in the context before it and the hold after it. Out of reach: a value written with
more whitespace inside than ``min_hold`` allows, a topic whose ``min_hits`` keywords lie
further apart than context and hold, an AWS secret key recognised only by a key id more than
``context`` characters before it (or ``hold`` after it); a word longer than ``window`` may be
cut.

- ``block`` / ``escalate``: the step carries the verdict and emits nothing; the caller stops
  the stream with an error event. Nothing held back is ever emitted afterwards.
- ``redact``: the released text is rewritten first (placeholder or mask, as in ``check``);
  the release point moves back before a finding that straddles it, so no value is split
  between a rewritten and a raw part nor reported twice, unless that would hold back more
  than four windows: then the value is rewritten and released as far as it has arrived, and
  its start is read before the next scans' context, so its continuation (the rest of a long
  private key) is recognised and rewritten too.
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
_PHRASE_MARGIN = 16
_INJECTION_HOLD = 128
_LOOKBEHIND = 64  # the furthest a rule reads before a value: 60 for the AWS secret keyword


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
        min_hold: int = 64,
        context: int = 128,
    ) -> None:
        if min(window, batch, min_hold) < 1 or context < 0:
            raise ValueError("window, batch and min_hold must be at least 1, context at least 0")
        entries = [e for e in pipeline.entries(stage) if not e.guard.tool_call]
        self._scanned = tuple(e for e in entries if not e.guard.deferred and not _is_length(e))
        self._lengths = tuple(e for e in entries if _is_length(e))
        self._deferred = tuple(e for e in entries if e.guard.deferred)
        self._ctx = dict(ctx or {})
        self._placeholders = PlaceholderMap() if placeholders is None else placeholders
        self._window, self._batch = window, batch
        self._min_hold = min(window, _least_hold(self._scanned, min_hold, window))
        self._context = max(context, self._min_hold, _LOOKBEHIND)
        self._whole: list[str] | None = [] if self._deferred else None
        self._held = ""
        self._scanned_once = False
        self._offset = 0  # position of _held[0] in the whole answer
        self._tail = ""  # the last characters released, as written: the context comes from it
        self._open = ""  # the start of a value released before it ended (see _still_open)
        self._total = 0
        self._seen: set[tuple[int, str, str, str]] = set()
        self._length_fired: set[int] = set()
        self._stopped: Verdict | None = None
        self._finished = False

    @property
    def stopped(self) -> Verdict | None:
        """The ``block`` or ``escalate`` verdict that stopped the stream, if any."""
        return self._stopped

    @property
    def hold(self) -> int:
        """How many characters the next scan keeps back: the longer of ``min_hold`` (raised
        for the stage's rules) and the word in progress, at most ``window``."""
        buf = self._held
        if not buf or buf[-1].isspace():
            return self._min_hold
        parts = buf.rsplit(None, 1)
        if len(parts) == 1 and not buf[0].isspace() and self._tail[-1:].strip():
            return self._window  # a word longer than a window was cut: hold it all
        return min(self._window, max(self._min_hold, len(parts[-1])))

    def feed(self, text: str) -> StreamStep:
        """The text safe to send after ``text`` arrived, and a verdict when a rule fired."""
        if self._stopped is not None or self._finished:
            return StreamStep("", self._stopped)
        started = time.perf_counter_ns()
        self._total += len(text)
        self._held += text
        if self._whole is not None:
            self._whole.append(text)
        extra = self._length_pairs() if self._lengths else []
        # scan when hold + batch characters are held; the first time, as soon as one can go
        least = len(self._held) - (self._batch if self._scanned_once else 1)
        if least >= self._min_hold and least >= self.hold:
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

    def _context_text(self) -> str:
        """The last ``context`` released characters, widened back to the start of the word
        the first of them belongs to (as far as the kept tail allows), so no rule sees a
        word cut at its start."""
        tail = self._tail
        start = len(tail) - self._context
        if start <= 0 or tail[start - 1].isspace():
            return self._open + tail[max(start, 0) :]
        head = tail[:start]
        parts = head.rsplit(None, 1)
        if len(parts) == 2 or head[0].isspace():
            return self._open + tail[start - len(parts[-1]) :]
        return self._open + tail

    def _scan(self, views: TextViews, skip: int) -> list[Outcome]:
        """Each scanned rule's outcome over ``views``, in held-text positions (``skip``: the
        length of the context before the held text)."""
        outcomes: list[Outcome] = []
        for entry in self._scanned:
            try:
                result = entry.guard.start(views, self._ctx)
            except Exception as exc:
                outcomes.append(exc)
                continue
            if isinstance(result, list):
                outcomes.append(_in_held(result, skip) if skip else result)
            else:  # no built-in content rule is asynchronous outside ``deferred``
                if inspect.iscoroutine(result):
                    result.close()
                outcomes.append(TypeError(f"rule {entry.label!r} cannot run on a stream"))
        return outcomes

    def _step(
        self, *, final: bool, extra: list[tuple[GuardEntry, Outcome]], started: int
    ) -> StreamStep:
        buf, self._scanned_once = self._held, True
        before = self._context_text() if self._scanned else ""
        outcomes = self._scan(TextViews(before + buf), len(before))
        pairs = [*zip(self._scanned, outcomes, strict=True), *extra]
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
        self._tail = (self._tail + release)[-(self._context + self._window) :]
        self._open = self._still_open(buf, pairs, cut, final)
        emit = verdict.content if verdict.action == "redact" and verdict.content else release
        if not verdict.extra.get("fired"):
            return StreamStep(emit)
        return StreamStep(emit, self._shifted(verdict, offset=self._offset - cut))

    def _cut(self, buf: str, pairs: Sequence[tuple[GuardEntry, Outcome]]) -> int:
        """Where to release up to: ``hold`` characters before the end, moved back before a
        finding that straddles it (so a value is redacted and reported whole, once), or
        forward past it if holding back would grow too long."""
        spans = sorted((f.start, f.end) for _, o in pairs if isinstance(o, list) for f in o)
        spans = [(start, end) for start, end in spans if start >= 0]
        nominal = max(0, len(buf) - self.hold)
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

    def _still_open(
        self, buf: str, pairs: Sequence[tuple[GuardEntry, Outcome]], cut: int, final: bool
    ) -> str:
        """The start of a value released up to the end of the text so far (held back more
        than four windows: a long private key), which may go on: the next scans read it
        before their context, so its continuation is still recognised and rewritten."""
        if cut == 0 and not final:
            return self._open  # nothing released: the value, if any, is still held
        if final or cut < len(buf):
            return ""
        found = [f for _, o in pairs if isinstance(o, list) for f in o]
        starts = [f.start for f in found if f.start >= 0 and f.end == len(buf)]
        if not starts:
            return ""
        start = min(starts)
        return self._open if start == 0 and self._open else buf[start : start + _LOOKBEHIND]

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


def _in_held(found: list[Finding], skip: int) -> list[Finding]:
    """Findings over context + held text, in held-text positions: those within the context
    dropped (released and handled before), one reaching in from it cut at the held text."""
    out: list[Finding] = []
    for f in found:
        if f.start < 0:
            out.append(f)
        elif f.end > skip:
            out.append(replace(f, start=max(0, f.start - skip), end=f.end - skip))
    return out


def _least_hold(entries: Sequence[GuardEntry], base: int, window: int) -> int:
    """``min_hold`` for the stage's rules (see the module docstring)."""
    hold = base
    for entry in entries:
        spec = entry.guard.spec
        rule = getattr(spec, "rule", "")
        words: list[str] = []
        if rule == "phrases":
            if spec.patterns:
                return window
            words = list(spec.deny)
        elif rule == "topics":
            words = [word for keywords in spec.deny.values() for word in keywords]
        elif rule == "injection":
            hold = max(hold, _INJECTION_HOLD)
        if words:
            hold = max(hold, 2 * max(map(len, words)) + _PHRASE_MARGIN)
    return hold


def _is_length(entry: GuardEntry) -> bool:
    return bool(getattr(entry.guard.spec, "rule", "") == "length")


def _effective(entry: GuardEntry, outcome: Outcome) -> str:
    if isinstance(outcome, Exception):
        return "block" if entry.policy.spec.on_error == "block" else "monitor"
    return entry.guard.action if outcome else "allow"
