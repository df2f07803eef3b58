"""Context assembly: one budget, priorities and minimums, the overflow strategies, the manifest."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from pydantic import BaseModel, ValidationError
from rich.console import Console

from elevenfactor.context._assemble import Assembled, Item, assemble
from elevenfactor.context._ctx_history import SUMMARY_PREFIX
from elevenfactor.context._manifest import manifest_table
from elevenfactor.context._spec import ContextSpec
from elevenfactor.errors import ContextOverflow
from elevenfactor.models import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)


class FakeWordCounter:
    """A deterministic fake counter for tests: a token per whitespace-separated word, 3 per
    message, 2 per request, 5 plus its words per tool."""

    name = "fake:words"

    def count(self, text: str) -> int:
        return len(text.split())

    def count_messages(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition] = ()
    ) -> int:
        total = 2
        for m in messages:
            total += 3 + self.count(m.content or "")
            if isinstance(m, AssistantMessage):
                total += sum(2 + self.count(tc.arguments) for tc in m.tool_calls)
        return total + sum(5 + self.count(f"{t.name} {t.description}") for t in tools)


C = FakeWordCounter()


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def turns(n: int, size: int = 10) -> list[Message]:
    """``n`` turns: a question and an answer of ``size`` words each."""
    out: list[Message] = []
    for i in range(n):
        out.append(UserMessage(content=words(size, f"q{i}_")))
        out.append(AssistantMessage(content=words(size, f"a{i}_")))
    return out


def tool_turn(i: int, result_words: int, results: int = 1) -> list[Message]:
    calls = [ToolCall(id=f"c{i}_{k}", name="lookup", arguments="{}") for k in range(results)]
    return [
        UserMessage(content=f"question {i}"),
        AssistantMessage(tool_calls=calls),
        *[
            ToolMessage(tool_call_id=c.id, content=words(result_words, f"r{i}_{k}_"))
            for k, c in enumerate(calls)
        ],
        AssistantMessage(content=f"answer {i}"),
    ]


SPEC = ContextSpec()
NO_MIN = ContextSpec(history={"min_tokens": 0})  # small windows: no room guaranteed to history


async def run(
    spec: ContextSpec = SPEC, window: int = 10_000, reserved: int = 100, **parts: object
) -> Assembled:
    return await assemble(spec, C, window=window, reserved_output=reserved, **parts)  # type: ignore[arg-type]


def expand(ids: Sequence[str]) -> set[int]:
    """The history indexes named by ids like ``history[3]`` and ``history[3-7]``."""
    out: set[int] = set()
    for item in ids:
        first, _, last = item.removeprefix("history[").removesuffix("]").partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return out


def assert_pairs_kept(messages: Sequence[Message]) -> None:
    """Every tool result follows the call it answers; every call has its results."""
    open_calls: set[str] = set()
    for m in messages:
        if isinstance(m, ToolMessage):
            assert m.tool_call_id in open_calls, f"result {m.tool_call_id} without its call"
            open_calls.discard(m.tool_call_id)
        else:
            assert not open_calls, f"calls {open_calls} without their results"
            if isinstance(m, AssistantMessage):
                open_calls = {tc.id for tc in m.tool_calls}
    assert not open_calls


async def test_everything_fits_and_the_manifest_says_so() -> None:
    tool = ToolDefinition(name="lookup", description="Look up a balance")
    history = turns(3)
    new = [UserMessage(content="and now?")]
    out = await run(
        instructions="You answer billing questions.",
        tools=[tool],
        memory=[Item("m1", "prefers EUR", 0.9)],
        passages=[Item("p1", "refunds take 3 days", 0.8), Item("p2", "fees are 1 EUR", 0.5)],
        history=history,
        input=new,
    )
    m = out.manifest
    assert isinstance(out.messages[0], SystemMessage)
    system = out.messages[0].content
    assert system.startswith("You answer billing questions.")
    assert "What you remember:\n- prefers EUR" in system
    assert "Retrieved passages:\n[p1] refunds take 3 days\n[p2] fees are 1 EUR" in system
    assert out.messages[1:] == [*history, *new]
    assert out.tools == [tool]
    assert m.total == C.count_messages(out.messages, [tool]) <= m.budget
    assert (m.window, m.reserved_output, m.budget, m.counter) == (10_000, 100, 9_900, C.name)
    assert m.section("history").included == ["history[0-5]"]  # contiguous messages, one range
    assert m.section("passages").included == ["p1", "p2"]
    assert m.section("memory").included == ["m1"]
    assert m.section("tools").included == ["lookup"]
    assert m.section("input").included == ["input[0]"]
    assert all(not s.left_out for s in m.sections)
    assert sum(s.tokens for s in m.sections) + m.overhead == m.total  # the parts add up


async def test_manifest_is_json_and_renders_as_a_table() -> None:
    out = await run(
        spec=NO_MIN, window=120, reserved=10, history=turns(10), input=[UserMessage(content="x")]
    )
    data = json.loads(json.dumps(out.manifest.model_dump(mode="json")))
    assert data["budget"] == 110
    history = next(s for s in data["sections"] if s["name"] == "history")
    kept = (110 - 2 - 4) // 13  # whole messages of 13 tokens, after the priming and the input
    assert history["left_out"] == [
        {
            "id": f"history[0-{19 - kept}]",
            "reason": "dropped_oldest",
            "tokens": 13 * (20 - kept),
            "score": None,
        }
    ]
    assert history["included"] == [f"history[{20 - kept}-19]"]
    console = Console(width=200, record=True)
    console.print(manifest_table(out.manifest))
    text = console.export_text()
    for name in ("instructions", "tools", "input", "passages", "memory", "history"):
        assert name in text
    assert "dropped_oldest" in text and f"of 110 tokens ({C.name})" in text


async def test_overflow_drops_the_oldest_turns_and_keeps_system_messages() -> None:
    history: list[Message] = [SystemMessage(content="the user is on the pro plan"), *turns(20)]
    out = await run(
        spec=NO_MIN, window=150, reserved=20, history=history, input=[UserMessage(content="hi")]
    )
    m = out.manifest
    assert m.total <= 130
    assert out.messages[0] == history[0]  # kept although it is the oldest
    kept = out.messages[1:-1]
    assert kept == history[len(history) - len(kept) :]  # the newest turns, in order
    (left,) = m.section("history").left_out
    assert left.reason == "dropped_oldest"
    assert left.id == f"history[1-{len(history) - len(kept) - 1}]"
    assert m.section("history").included == ["history[0]", f"history[{41 - len(kept)}-40]"]


async def test_a_tool_call_is_never_separated_from_its_results() -> None:
    history = [*turns(2), *tool_turn(2, 5, results=3), *turns(2)]
    for window in range(40, 160, 3):
        out = await run(
            window=window,
            reserved=0,
            history=history,
            spec=ContextSpec(history={"truncate_tool_results": False, "min_tokens": 0}),
        )
        assert_pairs_kept(out.messages)
        kept = expand(out.manifest.section("history").included)
        left = expand([x.id for x in out.manifest.section("history").left_out])
        assert kept | left == set(range(len(history))) and not kept & left
        assert {5, 6, 7, 8} <= kept or {5, 6, 7, 8} <= left  # the call and its 3 results


async def test_long_tool_results_are_shortened_before_turns_are_dropped() -> None:
    spec = ContextSpec(tool_result_tokens=40, history={"min_tokens": 0})
    history = [*tool_turn(0, 400), *tool_turn(1, 400), *turns(2)]
    out = await run(spec=spec, window=600, reserved=0, history=history)
    m = out.manifest.section("history")
    assert not m.left_out  # shortening was enough
    assert [(t.id, t.from_tokens) for t in m.truncated] == [("history[2]", 400)]
    assert m.truncated[0].to_tokens <= 40
    short = out.messages[2]
    assert isinstance(short, ToolMessage) and short.tool_call_id == "c0_0"
    assert short.content.startswith("r0_0_0 r0_0_1") and short.content.endswith("r0_0_399")
    assert "tokens cut ...]" in short.content
    assert out.messages[6] == history[6]  # the newer result was not touched: it fitted
    assert_pairs_kept(out.messages)


async def test_the_inputs_tool_results_are_shortened_when_the_input_is_too_big() -> None:
    spec = ContextSpec(tool_result_tokens=50)
    new = tool_turn(0, 1000)[:3]
    out = await run(spec=spec, window=300, reserved=50, input=new)
    m = out.manifest.section("input")
    assert [(t.id, t.from_tokens) for t in m.truncated] == [("input[2]", 1000)]
    assert out.manifest.total <= 250
    assert_pairs_kept(out.messages)


class FakeSummariser:
    """A deterministic fake summariser: records what it was asked to summarise."""

    def __init__(self) -> None:
        self.calls: list[list[Message]] = []

    async def __call__(self, messages: Sequence[Message]) -> str:
        self.calls.append(list(messages))
        return f"summary number {len(self.calls)} of {len(messages)} messages"


async def test_old_turns_are_summarised_once_and_the_summary_is_reused() -> None:
    spec = ContextSpec(history={"summarise": True, "summary_tokens": 20, "min_tokens": 0})
    summarise = FakeSummariser()
    history = turns(20)  # 20 x 2 messages of 13 tokens
    first = await run(spec=spec, window=260, reserved=0, history=history, summarise=summarise)
    assert len(summarise.calls) == 1
    summarised = summarise.calls[0]
    report = first.manifest.section("history").summary
    assert report is not None and not report.reused
    assert summarised == history[: report.end]  # one well-defined span: the oldest turns
    assert report.first == 0 and report.span in first.summaries
    assert first.messages[0] == SystemMessage(
        content=SUMMARY_PREFIX + f"summary number 1 of {report.end} messages"
    )
    assert first.messages[1:] == history[report.end :]
    reasons = {x.reason for x in first.manifest.section("history").left_out}
    assert reasons == {"summarised"}
    assert first.manifest.total <= 260

    # the next turn: the same span, its summary given back, no new summary
    longer = [*history, *turns(1)]
    second = await run(
        spec=spec,
        window=260,
        reserved=0,
        history=longer,
        summarise=summarise,
        summaries=first.summaries,
    )
    assert len(summarise.calls) == 1
    again = second.manifest.section("history").summary
    assert again is not None and again.reused and again.span == report.span

    # much later: a new summary that extends the known one instead of rereading everything
    much = [*history, *turns(15, size=10)]
    third = await run(
        spec=spec,
        window=260,
        reserved=0,
        history=much,
        summarise=summarise,
        summaries=second.summaries,
    )
    assert len(summarise.calls) == 2
    asked = summarise.calls[1]
    assert asked[0] == SystemMessage(
        content=SUMMARY_PREFIX + f"summary number 1 of {report.end} messages"
    )
    assert asked[1] == much[report.end]
    new_report = third.manifest.section("history").summary
    assert new_report is not None and new_report.end > report.end and not new_report.reused


async def test_without_a_summariser_old_turns_are_dropped() -> None:
    spec = ContextSpec(history={"summarise": True, "min_tokens": 0})
    out = await run(spec=spec, window=100, reserved=0, history=turns(10))
    assert out.manifest.section("history").summary is None
    assert {x.reason for x in out.manifest.section("history").left_out} == {"dropped_oldest"}


async def test_low_scoring_passages_go_first_and_min_score_filters() -> None:
    spec = ContextSpec(passages={"min_score": 0.2, "max_tokens": 30})
    passages = [
        Item("low", words(10), 0.3),
        Item("best", words(10), 0.9),
        Item("junk", words(10), 0.1),
        Item("mid", words(10), 0.6),
        Item("unscored", words(10)),
    ]
    out = await run(spec=spec, passages=passages)
    p = out.manifest.section("passages")
    assert p.included == ["best", "mid"]  # header + 2 x 11 tokens fit in 30
    reasons = {x.id: x.reason for x in p.left_out}
    assert reasons == {
        "junk": "below_min_score",
        "low": "dropped_low_score",
        "unscored": "over_budget",
    }
    assert p.tokens <= 30
    system = out.messages[0].content or ""
    assert system.index("[best]") < system.index("[mid]")


async def test_priorities_decide_who_gets_the_room_beyond_minimums() -> None:
    passages = [Item(f"p{i}", words(20), 1 - i / 10) for i in range(5)]
    history = turns(10)
    parts = {"passages": passages, "history": history, "window": 300, "reserved": 0}
    rag_first = ContextSpec(passages={"priority": 70}, history={"priority": 60, "min_tokens": 30})
    out = await run(spec=rag_first, **parts)  # type: ignore[arg-type]
    assert len(out.manifest.section("passages").included) == 5
    assert out.manifest.section("history").tokens >= 26  # its minimum (two whole messages)
    history_first = ContextSpec(
        passages={"priority": 10}, history={"priority": 60, "min_tokens": 0}
    )
    out = await run(spec=history_first, **parts)  # type: ignore[arg-type]
    assert out.manifest.section("history").included == ["history[0-19]"]
    assert len(out.manifest.section("passages").included) < 5


async def test_minimums_are_reserved_and_maximums_cap() -> None:
    passages = [Item(f"p{i}", words(20), 1 - i / 10) for i in range(5)]
    spec = ContextSpec(
        passages={"priority": 90, "max_tokens": 50}, history={"priority": 10, "min_tokens": 80}
    )
    out = await run(spec=spec, window=200, reserved=0, passages=passages, history=turns(10))
    p, h = out.manifest.section("passages"), out.manifest.section("history")
    assert p.tokens <= 50 and len(p.included) == 2
    assert h.min_tokens == 80 and h.tokens >= 80 - 12  # whole messages of 13 tokens
    assert out.manifest.total <= 200


async def test_overflow_error_names_the_sections_and_numbers() -> None:
    spec = ContextSpec(history={"min_tokens": 50})
    with pytest.raises(ContextOverflow) as caught:
        await run(
            spec=spec,
            window=100,
            reserved=30,
            instructions=words(20),
            history=turns(5),
            input=[UserMessage(content=words(20))],
        )
    err = caught.value
    assert err.code == "context_overflow"
    assert "budget is 70 (window 100 - reserved output 30" in err.message
    assert "instructions 23" in err.message and "input 23" in err.message
    assert "history 50" in err.message
    assert err.details["needed"]["history"] == 50
    assert err.details["budget"] == 70
    assert err.to_dict()["code"] == "context_overflow"


async def test_whole_sections_over_their_maximum_are_refused() -> None:
    spec = ContextSpec(instructions={"max_tokens": 10})
    with pytest.raises(ContextOverflow, match=r"instructions need 23 tokens \(max_tokens 10\)"):
        await run(spec=spec, instructions=words(20))


async def test_a_reserved_output_as_large_as_the_window_is_an_overflow() -> None:
    with pytest.raises(ContextOverflow, match="budget is 0"):
        await run(window=100, reserved=100, input=[UserMessage(content="hi")])


def test_context_spec_is_strict_and_documented() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ContextSpec.model_validate({"histroy": {}})
    with pytest.raises(ValidationError, match="min_tokens \\(10\\) is larger than max_tokens"):
        ContextSpec.model_validate({"memory": {"min_tokens": 10, "max_tokens": 5}})
    spec = ContextSpec.model_validate({"history": {"summarise": True}})
    assert spec.history.priority == 60 and spec.history.summarise

    def undocumented(model: type[BaseModel], path: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(f"{path}{name}")
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                missing += undocumented(ann, f"{path}{name}.")
        return missing

    assert undocumented(ContextSpec, "") == []


async def test_bad_input_is_refused_with_a_clear_error() -> None:
    from elevenfactor.errors import ContextError

    with pytest.raises(ContextError, match=r"history\[1\] is a dict, not a message"):
        await run(history=[UserMessage(content="hi"), {"role": "user", "content": "x"}])
    with pytest.raises(ContextError, match="invalid window 0"):
        await run(window=0, reserved=0)
