"""The streaming output guard: a secret, a PII value or a denied phrase split across chunks at
any position is caught before any of it is sent; redaction of a stream equals redaction of
the whole answer; blocking stops the stream with nothing held back emitted; whole-text rules
run at the end; the work per chunk stays bounded by the window. Each property holds under a
fixed hold-back (``window`` 64), the defaults, and a tight adaptive hold-back (``min_hold`` 16:
little more than the word in progress is held)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from elevenfactor.governance import _guard_builtin
from elevenfactor.governance._guard_pipeline import GuardPipeline
from elevenfactor.governance._guard_redact import PlaceholderMap, StreamRestorer
from elevenfactor.governance._guard_stream import StreamGuard, StreamStep
from elevenfactor.governance._guard_types import Verdict
from tests.support.guards import make_policy

KEY = "sk-proj-Zx9Qw3Er5Ty7Ui1Op3As5Df7Gh9JkLm2Nb4Vc6"
EMAIL = "jane.doe@example.com"
FILLER = "The quick brown fox jumps over the lazy dog. "
CONFIGS: dict[str, dict[str, Any]] = {
    "window64": {"window": 64, "batch": 8},
    "default": {},
    "tight": {"min_hold": 16, "batch": 4},
}
each_config = pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))


def pipeline(*output: dict[str, Any], judge: Any = None) -> GuardPipeline:
    policy = make_policy("out", {"stages": {"output": list(output)}})
    return GuardPipeline.build([policy], judge=judge)


async def stream(
    guard: StreamGuard, chunks: list[str]
) -> tuple[str, list[Verdict], list[StreamStep]]:
    """Feed ``chunks`` like a gateway would: stop at a block or escalate verdict."""
    emitted, verdicts, steps = "", [], []
    for chunk in chunks:
        step = guard.feed(chunk)
        steps.append(step)
        emitted += step.emit
        if step.verdict is not None:
            verdicts.append(step.verdict)
            if step.verdict.action in ("block", "escalate"):
                return emitted, verdicts, steps
    step = await guard.finish()
    steps.append(step)
    emitted += step.emit
    if step.verdict is not None:
        verdicts.append(step.verdict)
    return emitted, verdicts, steps


def splits(text: str) -> list[list[str]]:
    """``text`` cut in two at every position, and in chunks of 1, 3 and 7 characters."""
    cuts = [[text[:i], text[i:]] for i in range(len(text) + 1)]
    return cuts + [[text[i : i + n] for i in range(0, len(text), n)] for n in (1, 3, 7)]


def guard_for(p: GuardPipeline, cfg: dict[str, Any], **kw: Any) -> StreamGuard:
    return StreamGuard(p, **cfg, **kw)


@each_config
async def test_a_secret_split_anywhere_blocks_before_any_of_it_is_sent(cfg: dict[str, Any]) -> None:
    p = pipeline({"rule": "secrets", "action": "block"})
    text = FILLER * 3 + f"your key is {KEY} keep it safe. " + FILLER * 3
    for chunks in splits(text):
        emitted, verdicts, _ = await stream(guard_for(p, cfg), chunks)
        assert [v.action for v in verdicts] == ["block"], chunks[0][-10:]
        assert text.startswith(emitted)
        assert len(emitted) <= text.index(KEY)
        (finding,) = verdicts[0].findings
        assert finding.start == text.index(KEY)  # a prefix long enough to be a key may stop it
        assert KEY not in json.dumps([f.to_dict() for f in verdicts[0].findings])


@each_config
async def test_redacting_a_stream_equals_redacting_the_whole_answer(cfg: dict[str, Any]) -> None:
    p = pipeline({"rule": "secrets", "action": "redact"}, {"rule": "pii", "action": "redact"})
    text = FILLER * 2 + f"key {KEY} and mail {EMAIL}. " + FILLER * 2 + f"again {EMAIL}."
    whole = await p.check("output", text, placeholders=PlaceholderMap())
    for chunks in splits(text):
        mapping = PlaceholderMap()
        emitted, verdicts, _ = await stream(guard_for(p, cfg, placeholders=mapping), chunks)
        assert emitted == whole.content
        assert len(mapping) == 0  # rules at output always mask: nothing to restore
        assert emitted.count("[REDACTED:email]") == 2
        assert {v.action for v in verdicts} == {"redact"}
        assert KEY[:10] not in emitted and EMAIL not in emitted


@each_config
@pytest.mark.parametrize("phrase", ["internal use only", "int\u200bernal use \u043enly"])
async def test_a_denied_phrase_split_anywhere_is_caught(phrase: str, cfg: dict[str, Any]) -> None:
    p = pipeline({"rule": "phrases", "deny": ["internal use only"], "action": "block"})
    text = FILLER * 2 + f"This memo is {phrase}. " + FILLER * 2
    for chunks in splits(text):
        emitted, verdicts, _ = await stream(guard_for(p, cfg), chunks)
        assert [v.action for v in verdicts] == ["block"]
        assert len(emitted) <= text.index(phrase)


@each_config
async def test_after_a_block_nothing_more_is_emitted(cfg: dict[str, Any]) -> None:
    p = pipeline({"rule": "secrets", "action": "escalate"})
    guard = guard_for(p, cfg)
    step = guard.feed(FILLER + KEY + FILLER * 2)
    assert step.emit == "" and step.verdict is not None and step.verdict.action == "escalate"
    assert guard.stopped is step.verdict
    assert guard.feed(FILLER * 5).emit == ""
    assert (await guard.finish()).emit == ""


@each_config
async def test_monitor_findings_are_reported_once_at_their_position(cfg: dict[str, Any]) -> None:
    p = pipeline({"rule": "pii", "action": "monitor"})
    text = FILLER * 2 + EMAIL + " " + FILLER * 4
    chunks = [text[i : i + 5] for i in range(0, 400, 5)]
    emitted, verdicts, _ = await stream(guard_for(p, cfg), chunks)
    assert emitted == text  # monitor changes nothing
    findings = [f for v in verdicts for f in v.findings]
    assert [(f.kind, f.start) for f in findings] == [("email", text.index(EMAIL))]


async def test_length_counts_the_whole_answer() -> None:
    p = pipeline({"rule": "length", "max_chars": 100})
    guard = StreamGuard(p)  # a word in progress is held back whole (up to 256 characters)
    assert guard.feed("x" * 60) == StreamStep("")
    step = guard.feed("x" * 60)
    assert step.emit == "" and step.verdict is not None
    assert (step.verdict.action, step.verdict.rule) == ("block", "length")


async def test_json_schema_runs_at_the_end_on_the_whole_text() -> None:
    p = pipeline({"rule": "json_schema", "schema": {"type": "object", "required": ["answer"]}})
    good = '```json\n{"answer": "' + "x" * 300 + '"}\n```'
    emitted, verdicts, _ = await stream(StreamGuard(p), [good[i : i + 9] for i in range(0, 400, 9)])
    assert (emitted, verdicts) == (good, [])
    bad = '{"reply": "' + "y" * 300 + '"}'
    guard = StreamGuard(p)
    sent = "".join(guard.feed(bad[i : i + 9]).emit for i in range(0, len(bad), 9))
    final = await guard.finish()
    assert final.verdict is not None and final.verdict.action == "block"
    assert final.emit == ""  # nothing held back is emitted
    assert len(sent) <= len(bad) - 256


async def test_relevance_runs_at_the_end() -> None:
    asked: list[str] = []

    async def judge(route: str, messages: list[dict[str, str]]) -> str:
        asked.append(messages[1]["content"])
        return '{"score": 0.1, "reason": "off topic"}'

    p = pipeline({"rule": "relevance", "route": "j", "action": "escalate"}, judge=judge)
    guard = StreamGuard(p, ctx={"question": "refunds?"})
    assert guard.feed("It will rain ").emit == ""
    assert guard.feed("tomorrow.").emit == ""
    final = await guard.finish()
    assert final.verdict is not None and final.verdict.action == "escalate"
    assert "It will rain tomorrow." in asked[0] and "refunds?" in asked[0]


@each_config
async def test_chained_with_stream_restorer_the_user_sees_their_own_values(
    cfg: dict[str, Any],
) -> None:
    p = GuardPipeline.build(
        [
            make_policy(
                "bot",
                {
                    "stages": {
                        "input": [{"rule": "pii", "action": "redact"}],
                        "output": [{"rule": "pii", "action": "redact", "mode": "mask"}],
                    }
                },
            )
        ]
    )
    mapping = PlaceholderMap()
    asked = await p.check("input", f"I am {EMAIL}, please confirm.", placeholders=mapping)
    assert asked.content == "I am [EMAIL_1], please confirm."
    answer = f"Confirmed [EMAIL_1]. {FILLER * 2}Your agent is bob@corp.example.org. {FILLER}"
    expected = answer.replace("[EMAIL_1]", EMAIL).replace(
        "bob@corp.example.org", "[REDACTED:email]"
    )
    for chunks in splits(answer):
        guard, restorer = guard_for(p, cfg, placeholders=mapping), StreamRestorer(mapping)
        shown = ""
        for chunk in chunks:
            shown += restorer.feed(guard.feed(chunk).emit)
        shown += restorer.feed((await guard.finish()).emit) + restorer.flush()
        assert shown == expected


async def test_work_per_chunk_is_bounded_by_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    scanned: list[int] = []
    real = _guard_builtin.find_pii  # type: ignore[attr-defined]  # patched where it is used

    def counting(text: str, kinds: Any = None) -> Any:
        scanned.append(len(text))
        return real(text, kinds)

    monkeypatch.setattr(_guard_builtin, "find_pii", counting)
    p = pipeline({"rule": "pii", "action": "redact"})
    text = (FILLER + EMAIL + " ") * 200  # about 13 000 characters
    guard = StreamGuard(p)
    out = "".join(guard.feed(text[i : i + 10]).emit for i in range(0, len(text), 10))
    out += (await guard.finish()).emit
    assert EMAIL not in out and out.count("[REDACTED:email]") == 200
    # context (128, widened to a word start) + hold (64) + batch (32) + chunk + a value held whole
    assert max(scanned) <= 128 + len(EMAIL) + 64 + 32 + 10 + len(EMAIL)
    assert len(scanned) < len(text) / 20  # scans are batched, not one per chunk


@each_config
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    layout=st.lists(st.sampled_from([FILLER, f"{KEY} ", f"{EMAIL} ", "x. "]), max_size=10),
)
@settings(max_examples=60, deadline=None)
@example(cuts=[0, 0, 400], layout=[KEY])
async def test_stream_redaction_never_leaks_whatever_the_chunking(
    cfg: dict[str, Any], cuts: list[int], layout: list[str]
) -> None:
    p = pipeline({"rule": "secrets", "action": "redact"}, {"rule": "pii", "action": "redact"})
    text = FILLER + "".join(layout)
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    emitted, _, _ = await stream(guard_for(p, cfg), chunks)
    whole = await p.check("output", text, placeholders=PlaceholderMap())
    assert emitted == (whole.content if whole.action == "redact" else text)
    assert KEY not in emitted and EMAIL not in emitted


@pytest.mark.parametrize("bad", [{"window": 0}, {"batch": 0}, {"min_hold": 0}, {"context": -1}])
def test_sizes_must_be_positive(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        StreamGuard(pipeline({"rule": "pii"}), **bad)
