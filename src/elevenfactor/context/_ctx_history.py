"""Fitting the conversation history into its share of the window.

History is cut in *units*: a user message, an assistant answer, or an assistant's tool calls
together with their results (never separated). System messages found in the history are pinned.
When the history does not fit: tool results longer than ``tool_result_tokens`` are shortened
(oldest first), then the oldest units are replaced by one summary (when a summariser is given),
then the oldest units are dropped.

A summary covers a *span*: the first k units of the history. Its key is a digest chained over
those units' content, so it stays the same while the conversation grows; a summary given back
under the same key is reused instead of asking for a new one. A new summary extends the newest
known one (the summariser gets that summary plus the units after it), and covers enough units that
the rest fill at most ``keep_after_summary`` of the room: the next turns reuse it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from elevenfactor.context._ctx_cache import BoundedCache
from elevenfactor.context._ctx_truncate import truncate_middle
from elevenfactor.context._manifest import LeftOut, Reason, SummaryReport, Truncation
from elevenfactor.context._spec import HistorySection
from elevenfactor.context._tokens import TokenCounter
from elevenfactor.models._messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolMessage,
    UserMessage,
)

__all__ = [
    "SUMMARY_PREFIX",
    "HistoryFit",
    "SpanKeys",
    "Summariser",
    "Unit",
    "count_units",
    "fit_history",
    "unit_tokens",
    "units_of",
]

Summariser = Callable[[Sequence[Message]], Awaitable[str]]
"""Writes a summary of the messages it is given (a cheaper route, as a journaled step)."""

SUMMARY_PREFIX = "Summary of the earlier conversation:\n"
_ANCHOR = SystemMessage(content="-")
_DIGESTS: BoundedCache[tuple[str, ...], bytes] = BoundedCache(32_768)


@dataclass(slots=True)
class Unit:
    """Messages cut together, with their indexes in the history and their tokens."""

    indexes: list[int]
    messages: list[Message]
    tokens: int = 0
    pinned: bool = False
    cuts: list[Truncation] = field(default_factory=list)


@dataclass(slots=True)
class HistoryFit:
    """What the history contributes: its messages, tokens, and the manifest's details."""

    messages: list[Message]
    tokens: int
    wanted: int
    included: list[str] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)
    truncated: list[Truncation] = field(default_factory=list)
    summary: SummaryReport | None = None
    summaries: dict[str, str] = field(default_factory=dict)


def units_of(history: Sequence[Message]) -> list[Unit]:
    """The history cut into units; a tool result stays with the call before it (an orphan
    result with the turn before it)."""
    units: list[Unit] = []
    last: Unit | None = None  # the last unit, unless it is a pinned system message
    for i, m in enumerate(history):
        kind = type(m)
        if kind is ToolMessage and last is not None:
            last.indexes.append(i)
            last.messages.append(m)
            continue
        unit = Unit([i], [m], 0, kind is SystemMessage, [])
        units.append(unit)
        last = None if kind is SystemMessage else unit
    return units


def count_units(counter: TokenCounter, units: list[Unit]) -> list[Unit]:
    """``units`` with their tokens set."""
    base = counter.count_messages([_ANCHOR])
    count = counter.count_messages
    for u in units:
        u.tokens = count([_ANCHOR, *u.messages]) - base
    return units


def unit_tokens(counter: TokenCounter, messages: Sequence[Message]) -> int:
    """Tokens ``messages`` add to a request (framing included), after a system message."""
    return counter.count_messages([_ANCHOR, *messages]) - counter.count_messages([_ANCHOR])


def _digest(m: Message) -> bytes:
    key: tuple[str, ...]
    if isinstance(m, AssistantMessage):
        calls = (p for tc in m.tool_calls for p in (tc.id, tc.name, tc.arguments))
        key = ("assistant", m.content or "", *calls)
    elif isinstance(m, ToolMessage):
        key = ("tool", m.tool_call_id, m.content)
    elif isinstance(m, UserMessage):
        key = ("user", m.content, m.name or "")
    else:
        key = (m.role, m.content)
    found = _DIGESTS.data.get(key)
    return found if found is not None else _DIGESTS.get(key, partial(_hash_parts, key))


def _hash_parts(key: tuple[str, ...]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in key:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.digest()


class SpanKeys:
    """``keys[k]``: the key of the span of the first ``k`` units (``keys[0]`` is empty): a
    digest chained over the units' content, formatted ``span-<hex>`` only when asked."""

    def __init__(self, units: Sequence[Unit]) -> None:
        self.digests: list[bytes] = [b""]
        chain = b""
        for unit in units:
            h = hashlib.blake2b(chain, digest_size=16)
            for m in unit.messages:
                h.update(_digest(m))
            chain = h.digest()
            self.digests.append(chain)

    def __getitem__(self, k: int) -> str:
        return "span-" + self.digests[k].hex() if k else ""

    def find(self, summaries: Mapping[str, str]) -> dict[int, str]:
        """The spans with a summary in ``summaries``: their number of units, and the text."""
        wanted: dict[bytes, str] = {}
        for key, text in summaries.items():
            if key.startswith("span-"):
                try:
                    wanted[bytes.fromhex(key[5:])] = text
                except ValueError:
                    continue
        if not wanted:
            return {}
        return {k: wanted[d] for k, d in enumerate(self.digests) if k and d in wanted}


async def fit_history(
    history: Sequence[Message],
    limit: int,
    *,
    spec: HistorySection,
    counter: TokenCounter,
    tool_result_tokens: int,
    summarise: Summariser | None,
    summaries: Mapping[str, str],
    units: list[Unit] | None = None,
) -> HistoryFit:
    """The history within ``limit`` tokens (see the module documentation); ``units``: the
    history's units already counted (``count_units``)."""
    if units is None:
        units = count_units(counter, units_of(history))
    wanted = sum(u.tokens for u in units)
    fit = HistoryFit([], 0, wanted)
    pinned = [u for u in units if u.pinned]
    turns = [u for u in units if not u.pinned]
    fixed = sum(u.tokens for u in pinned)
    total = wanted
    if total > limit and spec.truncate_tool_results:
        total = fixed + _truncate(turns, total - fixed, limit - fixed, counter, tool_result_tokens)
    summary_msg: SystemMessage | None = None
    summary_tokens = 0
    start = 0
    if total > limit and summarise is not None and spec.summarise and turns:
        keys = SpanKeys(turns)
        tail = [0] * (len(turns) + 1)
        for k in range(len(turns) - 1, -1, -1):
            tail[k] = tail[k + 1] + turns[k].tokens
        start, summary_msg, summary_tokens = await _summary(
            turns,
            keys,
            tail,
            limit - fixed,
            spec,
            counter,
            summarise,
            summaries,
            fit,
            tool_result_tokens,
        )
        total = fixed + summary_tokens + tail[start]
        if start:
            fit.left_out.append(_span(turns[:start], "summarised"))
    kept = turns[start:]
    dropped = 0
    while total > limit and dropped < len(kept):
        total -= kept[dropped].tokens
        dropped += 1
    if dropped:
        fit.left_out.append(_span(kept[:dropped], "dropped_oldest"))
    kept = kept[dropped:]
    if total > limit and summary_msg is not None:  # not even the summary fits
        total -= summary_tokens
        summary_msg, fit.summary = None, None
        fit.left_out = [
            x.model_copy(update={"reason": "dropped_oldest"}) if x.reason == "summarised" else x
            for x in fit.left_out
        ]
    first_kept = kept[0].indexes[0] if kept else len(history)
    out = sorted([*pinned, *kept], key=lambda u: u.indexes[0]) if pinned else kept
    run_start = -1
    for n, u in enumerate(out):
        if summary_msg is not None and u.indexes[0] >= first_kept:
            fit.messages.append(summary_msg)
            summary_msg = None
        fit.messages.extend(u.messages)
        if u.cuts:
            fit.truncated.extend(u.cuts)
        if run_start < 0:
            run_start = u.indexes[0]
        if n + 1 == len(out) or out[n + 1].indexes[0] != u.indexes[-1] + 1:
            fit.included.append(_label(run_start, u.indexes[-1]))
            run_start = -1
    if summary_msg is not None:
        fit.messages.append(summary_msg)
    fit.tokens = total
    return fit


def _label(first: int, last: int) -> str:
    return f"history[{first}]" if first == last else f"history[{first}-{last}]"


def _span(units: Sequence[Unit], reason: Reason) -> LeftOut:
    """One entry for contiguous units left out for the same reason."""
    tokens = sum(u.tokens for u in units)
    label = _label(units[0].indexes[0], units[-1].indexes[-1])
    return LeftOut(id=label, reason=reason, tokens=tokens)


def _shortened(u: Unit, counter: TokenCounter, target: int) -> Unit:
    """``u`` with its tool results longer than ``target`` shortened (``u`` itself if none)."""
    messages: list[Message] | None = None
    cuts: list[Truncation] = []
    for j, m in enumerate(u.messages):
        if not isinstance(m, ToolMessage):
            continue
        before = counter.count(m.content)
        if before <= target:
            continue
        text, after = truncate_middle(counter, m.content, target)
        if messages is None:
            messages = list(u.messages)
        messages[j] = ToolMessage.model_construct(
            role="tool", content=text, tool_call_id=m.tool_call_id
        )
        cuts.append(Truncation(id=f"history[{u.indexes[j]}]", from_tokens=before, to_tokens=after))
    if messages is None:
        return u
    return Unit(u.indexes, messages, unit_tokens(counter, messages), u.pinned, cuts)


def _truncate(turns: list[Unit], used: int, room: int, counter: TokenCounter, target: int) -> int:
    """Shorten tool results oldest first until the turns fit ``room`` (``turns`` is updated;
    returns their tokens). When even shortening them all cannot do, older turns will be
    summarised or dropped whatever their size: only the newest, which may stay, are shortened
    (the same outcome, without shortening what is dropped)."""
    acc = 0
    short: list[Unit] = []
    for j in range(len(turns) - 1, -1, -1):
        short.append(_shortened(turns[j], counter, target))
        acc += short[-1].tokens
        if acc > room:
            turns[j:] = reversed(short)
            return sum(u.tokens for u in turns)
    for i, u in enumerate(turns):
        turn = short[len(turns) - 1 - i]
        if turn is u:
            continue
        turns[i] = turn
        used += turn.tokens - u.tokens
        if used <= room:
            break
    return used


async def _summary(
    turns: list[Unit],
    keys: SpanKeys,
    tail: list[int],
    room: int,
    spec: HistorySection,
    counter: TokenCounter,
    summarise: Summariser,
    summaries: Mapping[str, str],
    fit: HistoryFit,
    tool_result_tokens: int,
) -> tuple[int, SystemMessage | None, int]:
    """Reuse the longest known summary that makes the history fit, else write a new one.
    Returns the number of turns summarised, the summary message and its tokens."""
    n = len(turns)
    found = keys.find(summaries)
    known = max(found, default=0)
    for k in sorted(found, reverse=True):
        text = found[k]
        msg = SystemMessage(content=SUMMARY_PREFIX + text)
        tokens = unit_tokens(counter, [msg])
        if tokens + tail[k] <= room:
            fit.summaries[keys[k]] = text
            fit.summary = _report(keys[k], turns, k, tokens, reused=True)
            return k, msg, tokens
    target = spec.keep_after_summary * max(0, room - spec.summary_tokens)
    k = next((k for k in range(1, n + 1) if tail[k] <= target), n)
    k = max(k, known + 1) if known < n else n
    span = [m for u in turns[known:k] for m in _shortened(u, counter, tool_result_tokens).messages]
    if known:
        prior = SystemMessage(content=SUMMARY_PREFIX + found[known])
        ask: list[Message] = [prior, *span]
    else:
        ask = span
    text = (await summarise(ask)).strip()
    text, _ = truncate_middle(counter, text, spec.summary_tokens)
    msg = SystemMessage(content=SUMMARY_PREFIX + text)
    tokens = unit_tokens(counter, [msg])
    fit.summaries[keys[k]] = text
    fit.summary = _report(keys[k], turns, k, tokens, reused=False)
    return k, msg, tokens


def _report(key: str, turns: list[Unit], k: int, tokens: int, *, reused: bool) -> SummaryReport:
    return SummaryReport(
        span=key,
        first=turns[0].indexes[0],
        end=turns[k - 1].indexes[-1] + 1,
        tokens=tokens,
        reused=reused,
    )
