"""Context assembly: one token budget shared by the parts of a model request.

``assemble`` takes the parts of a request (instructions, tools, long-term memory, retrieved
passages, history, the new input), the agent's ``ContextSpec``, a ``TokenCounter`` and the
model's window, and returns the messages to send with a ``Manifest`` of what went in and what was
left out. The budget is the window minus the reserved output. Instructions, tools and the input
are sent whole (the input's tool results may be shortened); the flexible sections are each
guaranteed their minimum, then served by priority up to their maximum. When the minimums cannot
all fit, ``ContextOverflow`` names the sections and their numbers.

The assembled messages are counted again at the end; if the parts' counts summed lower than the
whole (token merges across a joint), the plan is redone with the difference held back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from elevenfactor.context._ctx_history import (
    Summariser,
    count_units,
    fit_history,
    unit_tokens,
    units_of,
)
from elevenfactor.context._ctx_items import Item, ItemsFit, eligible, fill_items, render_items
from elevenfactor.context._ctx_truncate import truncate_middle
from elevenfactor.context._manifest import Manifest, SectionReport, Truncation
from elevenfactor.context._spec import ContextSpec, ItemsSection
from elevenfactor.context._tokens import TokenCounter
from elevenfactor.errors import ContextError, ContextOverflow
from elevenfactor.models._messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)

__all__ = ["Assembled", "Item", "Summariser", "assemble"]

_ANCHOR = SystemMessage(content="-")
_MESSAGES = (SystemMessage, UserMessage, AssistantMessage, ToolMessage)
_ATTEMPTS = 3


@dataclass(slots=True)
class Assembled:
    """The messages to send, the tools, the manifest, and the summaries in use (keyed by span:
    give them back to the next assembly of the same conversation to reuse them)."""

    messages: list[Message]
    tools: list[ToolDefinition]
    manifest: Manifest
    summaries: dict[str, str] = field(default_factory=dict)


async def assemble(
    spec: ContextSpec,
    counter: TokenCounter,
    *,
    window: int,
    reserved_output: int,
    instructions: str = "",
    tools: Sequence[ToolDefinition] = (),
    memory: Sequence[Item] = (),
    passages: Sequence[Item] = (),
    history: Sequence[Message] = (),
    input: Sequence[Message] = (),
    summarise: Summariser | None = None,
    summaries: Mapping[str, str] | None = None,
) -> Assembled:
    """Fit the parts into ``window - reserved_output`` tokens (see the module documentation).

    ``input`` is the new user message and the current turn's tool calls and results; ``history``
    the conversation before it. ``summarise`` writes a summary of the messages it is given (used
    when ``spec.history.summarise``); ``summaries`` are summaries returned by earlier assemblies
    (``Assembled.summaries``), reused for the same span.
    """
    if window <= 0 or reserved_output < 0:
        raise ContextError(
            f"invalid window {window} or reserved output {reserved_output}",
            hint="the window must be positive and the reserved output not negative",
        )
    for name, seq in (("history", history), ("input", input)):
        for i, m in enumerate(seq):
            if not isinstance(m, _MESSAGES):
                raise ContextError(
                    f"{name}[{i}] is a {type(m).__name__}, not a message",
                    hint="pass elevenfactor.models messages (UserMessage, AssistantMessage, ...)",
                )
    budget = window - reserved_output
    parts = _Parts(spec, counter, instructions, list(tools), memory, passages, history, list(input))
    held_back = 0
    for _ in range(_ATTEMPTS):
        messages, sections, found = await parts.plan(
            window, reserved_output, budget - held_back, summarise, summaries or {}
        )
        total = counter.count_messages(messages, parts.tools)
        if total <= budget:
            notes = [f"{held_back} tokens held back for joints"] if held_back else []
            manifest = Manifest(
                counter=counter.name,
                window=window,
                reserved_output=reserved_output,
                budget=budget,
                overhead=parts.overhead,
                total=total,
                sections=sections,
                notes=notes,
            )
            return Assembled(messages, parts.tools, manifest, found)
        held_back += total - budget
    raise _overflow(
        f"the assembled context counts {total} tokens, over the budget of {budget}",
        "lower the sections' minimums or the reserved output",
        budget=budget,
        total=total,
    )


def _overflow(message: str, hint: str, **details: Any) -> ContextOverflow:
    """A ``ContextOverflow`` carrying machine-readable ``details``."""
    err = ContextOverflow(message, hint=hint)
    err.details = details
    return err


class _Parts:
    def __init__(
        self,
        spec: ContextSpec,
        counter: TokenCounter,
        instructions: str,
        tools: list[ToolDefinition],
        memory: Sequence[Item],
        passages: Sequence[Item],
        history: Sequence[Message],
        input_: list[Message],
    ) -> None:
        self.spec, self.counter = spec, counter
        self.instructions, self.tools = instructions, tools
        self.memory, self.passages = memory, passages
        self.history, self.input = history, input_
        self.overhead = counter.count_messages([])
        self.instr_tokens = (
            counter.count_messages([SystemMessage(content=instructions)]) - self.overhead
            if instructions
            else 0
        )
        self.tool_tokens = (
            counter.count_messages([_ANCHOR], tools) - counter.count_messages([_ANCHOR])
            if tools
            else 0
        )

    async def plan(
        self,
        window: int,
        reserved: int,
        budget: int,
        summarise: Summariser | None,
        summaries: Mapping[str, str],
    ) -> tuple[list[Message], list[SectionReport], dict[str, str]]:
        spec, counter = self.spec, self.counter
        in_wanted = unit_tokens(counter, self.input)
        in_floor = in_wanted
        if spec.input.truncate_tool_results:
            in_floor = _shorten(self.input, 0, counter, spec.tool_result_tokens)[1]
        mem = eligible(self.memory, spec.memory)
        psg = eligible(self.passages, spec.passages)
        mem_wanted = render_items(mem.ranked, spec.memory, counter, "memory")[1]
        psg_wanted = render_items(psg.ranked, spec.passages, counter, "passages")[1]
        units = count_units(counter, units_of(self.history))
        hist_wanted = sum(u.tokens for u in units)
        pinned = sum(u.tokens for u in units if u.pinned)
        floors = {
            "passages": min(spec.passages.min_tokens, psg_wanted),
            "memory": min(spec.memory.min_tokens, mem_wanted),
            "history": max(pinned, min(spec.history.min_tokens, hist_wanted)),
        }
        needs = {
            "template": self.overhead,
            "instructions": self.instr_tokens,
            "tools": self.tool_tokens,
            "input": in_floor,
            **floors,
        }
        self._check(needs, window, reserved, budget)
        available = budget - sum(needs.values())
        in_limit = min(in_wanted, in_floor + available)
        if spec.input.max_tokens is not None:
            in_limit = min(in_limit, spec.input.max_tokens)
        in_msgs, in_used, in_cut = _shorten(self.input, in_limit, counter, spec.tool_result_tokens)
        available -= in_used - in_floor
        fills: dict[str, ItemsFit] = {}
        hist = None
        order: list[tuple[str, ItemsSection | None]] = sorted(
            [("passages", spec.passages), ("memory", spec.memory), ("history", None)],
            key=lambda p: -(p[1].priority if p[1] is not None else spec.history.priority),
        )
        for name, section in order:
            cap = section.max_tokens if section is not None else spec.history.max_tokens
            limit = floors[name] + available
            if cap is not None:
                limit = min(limit, max(cap, floors[name]))
            if section is None:
                hist = await fit_history(
                    self.history,
                    limit,
                    spec=spec.history,
                    counter=counter,
                    tool_result_tokens=spec.tool_result_tokens,
                    summarise=summarise,
                    summaries=summaries,
                    units=units,
                )
                used = hist.tokens
            else:
                fills[name] = fill_items(
                    mem if name == "memory" else psg, section, limit, counter, name
                )
                used = fills[name].tokens
            available -= used - floors[name]
        assert hist is not None
        system = "\n\n".join(
            p for p in (self.instructions, fills["memory"].text, fills["passages"].text) if p
        )
        messages: list[Message] = [SystemMessage(content=system)] if system else []
        messages += hist.messages + in_msgs
        reports = [
            self._whole(
                "instructions", self.instr_tokens, ["instructions"] * bool(self.instructions)
            ),
            self._whole("tools", self.tool_tokens, [t.name for t in self.tools]),
            SectionReport(
                name="input",
                priority=None,
                min_tokens=in_floor,
                max_tokens=spec.input.max_tokens,
                wanted=in_wanted,
                tokens=in_used,
                included=[f"input[{i}]" for i in range(len(in_msgs))],
                truncated=in_cut,
            ),
            fills["passages"].report("passages", spec.passages, floors["passages"], psg_wanted),
            fills["memory"].report("memory", spec.memory, floors["memory"], mem_wanted),
            SectionReport(
                name="history",
                priority=spec.history.priority,
                min_tokens=floors["history"],
                max_tokens=spec.history.max_tokens,
                wanted=hist.wanted,
                tokens=hist.tokens,
                included=hist.included,
                left_out=hist.left_out,
                truncated=hist.truncated,
                summary=hist.summary,
            ),
        ]
        return messages, reports, hist.summaries

    def _whole(
        self, name: Literal["instructions", "tools"], tokens: int, included: list[str]
    ) -> SectionReport:
        section = self.spec.instructions if name == "instructions" else self.spec.tools
        return SectionReport(
            name=name,
            priority=None,
            min_tokens=tokens,
            max_tokens=section.max_tokens,
            wanted=tokens,
            tokens=tokens,
            included=included,
        )

    def _check(self, needs: dict[str, int], window: int, reserved: int, budget: int) -> None:
        spec = self.spec
        caps = {
            "instructions": spec.instructions.max_tokens,
            "tools": spec.tools.max_tokens,
            "input": spec.input.max_tokens,
        }
        over = {k: (needs[k], cap) for k, cap in caps.items() if cap is not None and needs[k] > cap}
        if over:
            what = ", ".join(f"{k} need {n} tokens (max_tokens {c})" for k, (n, c) in over.items())
            raise _overflow(
                f"sections over their maximum: {what}",
                "raise the section's max_tokens in the agent's context:, or shorten it",
                sections={k: {"tokens": n, "max_tokens": c} for k, (n, c) in over.items()},
            )
        need = sum(needs.values())
        if need <= budget:
            return
        what = ", ".join(f"{k} {v}" for k, v in needs.items() if v)
        raise _overflow(
            f"the context's minimums need {need} tokens ({what}); the budget is {budget} "
            f"(window {window} - reserved output {reserved}; counted with {self.counter.name})",
            "shorten the instructions, tools or input, lower the sections' min_tokens or "
            "reserve_output, or use a model with a larger context window",
            needed=needs,
            total=need,
            budget=budget,
            window=window,
            reserved_output=reserved,
            counter=self.counter.name,
        )


def _shorten(
    messages: list[Message], limit: int, counter: TokenCounter, target: int
) -> tuple[list[Message], int, list[Truncation]]:
    """``messages`` with tool results shortened, oldest first, until they take ``limit`` tokens
    (or all of them are at ``target``)."""
    total = unit_tokens(counter, messages)
    out = list(messages)
    cut: list[Truncation] = []
    for i, m in enumerate(messages):
        if total <= limit:
            break
        if not isinstance(m, ToolMessage):
            continue
        before = counter.count(m.content)
        if before <= target:
            continue
        text, after = truncate_middle(counter, m.content, target)
        out[i] = ToolMessage(content=text, tool_call_id=m.tool_call_id)
        cut.append(Truncation(id=f"input[{i}]", from_tokens=before, to_tokens=after))
        total = unit_tokens(counter, out)
    return out, total, cut
