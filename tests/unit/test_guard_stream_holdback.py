"""Adaptive hold-back of the streaming guard: a guarded answer starts flowing after a few words,
not after 256 characters, and still nothing a rule catches goes out. The word in progress is
held whole; values with spaces (phone numbers, grouped IBANs, multi-word phrases) are covered
by ``min_hold``; the words a rule reads before a value (``Authorization: Bearer``,
``api_key =``) are seen in the context of text already sent."""

from __future__ import annotations

import base64
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elevenfactor.governance._guard_redact import PlaceholderMap
from elevenfactor.governance._guard_stream import StreamGuard
from tests.unit.test_guard_stream import FILLER, KEY, pipeline, splits, stream

PROSE = (
    "To configure the service, open the settings page and choose the region closest to your "
    "users. The deployment takes a few minutes; while it runs, the dashboard shows each step. "
)
PHONE = "+44 20 7946 0958"
IBAN = "GB82 WEST 1234 5698 7654 32"
CARD = "4111 1111 1111 1111"
TOKEN = "Zx9Qw3Er5Ty7Ui1Op3As5Df7Gh9JkLm2Nb4Vc6Qq8Ww0Ee2Rr4Tt6Yy8Uu1Ii"  # 60 characters
GENERIC = "Q7f9Xk2LmP4rT8vW1zY6bN3cH5jD0sGa"  # a secret only after a keyword
LONG_PHRASE = "the figures in this memo must not leave the finance team under any circumstances"
TIGHT = {"min_hold": 16, "batch": 4}  # only the word in progress and 16 characters held


def first_emit(guard: StreamGuard, text: str, size: int) -> int | None:
    """Characters of input fed before the first character came out."""
    fed = 0
    for i in range(0, len(text), size):
        fed += len(text[i : i + size])
        if guard.feed(text[i : i + size]).emit:
            return fed
    return None


@pytest.mark.parametrize(
    "rules",
    [
        [{"rule": "secrets", "action": "redact"}],  # the shipped default policy's output rules
        [
            {"rule": "pii", "action": "block"},
            {"rule": "secrets", "action": "block"},
            {"rule": "phrases", "deny": ["internal use only"], "action": "block"},
        ],
    ],
    ids=["default", "strict"],
)
async def test_a_prose_answer_starts_flowing_after_a_few_words(rules: list[Any]) -> None:
    text = (PROSE * 12)[:2048]
    first = first_emit(StreamGuard(pipeline(*rules)), text, 4)
    assert first is not None and first <= 72  # was 288 with a fixed 256-character hold-back
    emitted, verdicts, _ = await stream(StreamGuard(pipeline(*rules)), [text])
    assert (emitted, verdicts) == (text, [])


async def test_the_word_in_progress_is_held_whole() -> None:
    p = pipeline({"rule": "secrets", "action": "block"})
    word = "Z" * 150  # longer than min_hold: none of it goes out before it is complete
    text = FILLER * 3 + word + " and then " + FILLER * 2
    guard, sent, fed = StreamGuard(p), "", ""
    for ch in text:
        fed += ch
        sent += guard.feed(ch).emit
        if "Z" in sent:
            assert word + " " in fed
    sent += (await guard.finish()).emit
    assert sent == text


@pytest.mark.parametrize("value", [PHONE, IBAN, CARD])
async def test_a_value_with_spaces_split_anywhere_is_caught(value: str) -> None:
    text = FILLER * 2 + f"call me at {value} today. " + FILLER * 2
    block = pipeline({"rule": "pii", "action": "block"})
    redact = pipeline({"rule": "pii", "action": "redact"})
    whole = await redact.check("output", text, placeholders=PlaceholderMap())
    assert whole.action == "redact"
    for chunks in splits(text):
        emitted, verdicts, _ = await stream(StreamGuard(block), chunks)
        assert [v.action for v in verdicts] == ["block"]
        assert len(emitted) <= text.index(value)
        assert verdicts[0].findings[0].start == text.index(value)
        emitted, _, _ = await stream(StreamGuard(redact), chunks)
        assert emitted == whole.content


@pytest.mark.parametrize("cfg", [{}, TIGHT], ids=["default", "tight"])
@pytest.mark.parametrize(
    "secret", [f"Authorization: Bearer {TOKEN}", f"api_key = {GENERIC}"], ids=["header", "keyword"]
)
async def test_a_keyword_sent_before_its_value_still_marks_it(
    secret: str, cfg: dict[str, Any]
) -> None:
    value = secret.split()[-1]
    text = FILLER * 2 + f"use {secret} for this. " + FILLER * 2
    block = pipeline({"rule": "secrets", "action": "block"})
    redact = pipeline({"rule": "secrets", "action": "redact"})
    whole = await redact.check("output", text, placeholders=PlaceholderMap())
    assert whole.action == "redact" and value not in (whole.content or "")
    for chunks in splits(text):
        emitted, verdicts, _ = await stream(StreamGuard(block, **cfg), chunks)
        assert [v.action for v in verdicts] == ["block"]
        assert len(emitted) <= text.index(value) and verdicts[0].findings[0].start >= len(emitted)
        emitted, _, _ = await stream(StreamGuard(redact, **cfg), chunks)
        assert emitted == whole.content
    if cfg:  # one character a chunk: the keyword went out before its value was caught
        emitted, _, _ = await stream(StreamGuard(block, **cfg), list(text))
        assert len(emitted) > text.index(secret)


async def test_a_long_denied_phrase_split_anywhere_is_caught() -> None:
    p = pipeline({"rule": "phrases", "deny": [LONG_PHRASE], "action": "block"})
    assert StreamGuard(p, min_hold=16).hold == 2 * len(LONG_PHRASE) + 16
    text = FILLER * 2 + f"Note: {LONG_PHRASE.replace(' ', '  ')}. " + FILLER * 2
    for chunks in splits(text):
        emitted, verdicts, _ = await stream(StreamGuard(p, min_hold=16), chunks)
        assert [v.action for v in verdicts] == ["block"]
        assert len(emitted) <= text.index("Note: ") + len("Note: ")


def test_the_least_hold_follows_the_stage_rules() -> None:
    assert StreamGuard(pipeline({"rule": "secrets"})).hold == 64
    assert StreamGuard(pipeline({"rule": "injection", "action": "monitor"})).hold == 128
    topics = pipeline({"rule": "topics", "deny": {"w": ["x" * 70]}})
    assert StreamGuard(topics).hold == 156
    patterns = pipeline({"rule": "phrases", "patterns": [r"project\s+\w+"]})
    assert StreamGuard(patterns).hold == 256  # a regular expression's reach is unknown
    assert StreamGuard(pipeline({"rule": "phrases", "deny": ["y" * 200]})).hold == 256


@pytest.mark.parametrize("action", ["block", "redact"])
async def test_a_value_already_half_sent_is_still_stopped_or_masked(action: str) -> None:
    # min_hold 4 is too short for a card in groups: its first groups go out before it is
    # complete. The rest is then masked (or the stream stops), never sent as written.
    p = pipeline({"rule": "pii", "action": action})
    text = FILLER * 2 + f"pay with {CARD} please. " + FILLER
    emitted, verdicts, _ = await stream(StreamGuard(p, min_hold=4, batch=1), list(text))
    (finding,) = [f for v in verdicts for f in v.findings]
    start = text.index(CARD)
    assert start < finding.start < finding.end == start + len(CARD)
    assert CARD not in emitted and emitted.startswith(text[: finding.start])
    if action == "redact":
        assert emitted[finding.start :].startswith("[REDACTED:payment_card] please.")


async def test_a_word_cut_by_the_release_point_is_read_whole_in_the_next_scan() -> None:
    # "x" glued before a key makes the word no key; a scan starting inside the word (at "sk-")
    # would stop the stream. The context starts at the start of the word.
    p = pipeline({"rule": "secrets", "action": "block"})
    for tail in (30, 40):
        text = FILLER * 3 + "x" + KEY + "Ab3" * tail + " is one long word. " + FILLER * 3
        for chunks in splits(text):
            emitted, verdicts, _ = await stream(StreamGuard(p), chunks)
            assert (emitted, verdicts) == (text, [])


@pytest.mark.parametrize("size", [1, 4, 7, 64, 1000])
async def test_a_private_key_longer_than_the_hold_limit_never_goes_out(size: int) -> None:
    # Held back more than four windows, the key is released rewritten before it ends; its
    # continuation is still recognised from the key's start and rewritten as it arrives.
    body = base64.b64encode(bytes(range(256)) * 5).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    key = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END RSA PRIVATE KEY-----"
    text = FILLER * 2 + key + "\n" + FILLER * 2
    p = pipeline({"rule": "secrets", "action": "redact"})
    emitted, _, _ = await stream(
        StreamGuard(p), [text[i : i + size] for i in range(0, len(text), size)]
    )
    assert emitted.startswith(FILLER * 2 + "[REDACTED:private_key]")
    assert emitted.endswith("\n" + FILLER * 2)
    assert not [line for line in lines if line[:32] in emitted]


@settings(max_examples=80, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=16),
    layout=st.lists(
        st.sampled_from(
            [
                FILLER,
                f"call {PHONE} now. ",
                f"IBAN {IBAN}. ",
                f"Authorization: Bearer {TOKEN} ",
                f"api_key = {GENERIC} ",
                f"{KEY} ",
                "x. ",
            ]
        ),
        max_size=10,
    ),
)
async def test_default_hold_back_redaction_equals_the_whole_answer(
    cuts: list[int], layout: list[str]
) -> None:
    p = pipeline({"rule": "secrets", "action": "redact"}, {"rule": "pii", "action": "redact"})
    text = FILLER + "".join(layout)
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    emitted, _, _ = await stream(StreamGuard(p), chunks)
    whole = await p.check("output", text, placeholders=PlaceholderMap())
    assert emitted == (whole.content if whole.action == "redact" else text)
    for value in (PHONE, IBAN, TOKEN, GENERIC, KEY):
        assert value not in emitted
