"""Redaction: the provider sees placeholders, the user gets the real values back — in whole
answers and in streams split anywhere — and the mapping never leaks through repr or pickling."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elevenfactor.governance._guard_pii import find_pii
from elevenfactor.governance._guard_redact import (
    PlaceholderMap,
    Redaction,
    StreamRestorer,
    label_for,
    merge_findings,
    redact,
    restore,
)
from elevenfactor.governance._guard_secrets import find_secrets
from elevenfactor.governance._guard_types import Finding

KEY = "sk-proj-Zx9Qw3Er5Ty7Ui1Op3As5Df7Gh9JkLm2Nb4Vc6"
TEXT = (
    "Hi, I'm jane@example.com (also jane@example.com), card 4111 1111 1111 1111, "
    f"backup bob@example.org and key {KEY}."
)


def scan(text: str) -> list[Finding]:
    return [*find_pii(text), *find_secrets(text)]


def test_placeholders_are_stable_and_numbered_per_label() -> None:
    r = redact(TEXT, scan(TEXT))
    assert r.text == (
        "Hi, I'm [EMAIL_1] (also [EMAIL_1]), card [CARD_1], backup [EMAIL_2] and key [SECRET_1]."
    )
    assert r.mode == "placeholder"
    assert [f.kind for f in r.findings] == [
        "email",
        "email",
        "payment_card",
        "email",
        "openai_api_key",
    ]
    assert r.mapping.placeholders == ("[EMAIL_1]", "[CARD_1]", "[EMAIL_2]", "[SECRET_1]")


def test_round_trip_restores_the_model_answer() -> None:
    r = redact(TEXT, scan(TEXT))
    answer = "I wrote to [EMAIL_1] and [EMAIL_2]; [CARD_1] is on file. [EMAIL_9] is unknown."
    assert restore(answer, r) == (
        "I wrote to jane@example.com and bob@example.org; 4111 1111 1111 1111 is on file. "
        "[EMAIL_9] is unknown."
    )
    assert r.restore(r.text) == TEXT
    assert restore(r.text, r.mapping) == TEXT


def test_restore_is_one_pass() -> None:
    # A value that itself looks like an issued placeholder is not expanded again.
    first = redact("jane@example.com", find_pii("jane@example.com"))
    second = redact("[EMAIL_1]", [Finding("pii.email", "email", 0, 9)], mapping=first.mapping)
    assert second.text == "[EMAIL_2]"
    assert restore("[EMAIL_2] / [EMAIL_1]", second) == "[EMAIL_1] / jane@example.com"


def test_placeholders_already_in_the_text_are_not_reused() -> None:
    text = "literal [EMAIL_1] and jane@example.com"
    r = redact(text, find_pii(text))
    assert r.text == "literal [EMAIL_1] and [EMAIL_2]"
    assert restore("[EMAIL_2]", r) == "jane@example.com"


def test_a_mapping_carries_across_messages() -> None:
    first = redact("from jane@example.com", find_pii("from jane@example.com"))
    second_text = "to bob@example.org cc jane@example.com"
    second = redact(second_text, find_pii(second_text), mapping=first.mapping)
    assert second.text == "to [EMAIL_2] cc [EMAIL_1]"
    assert second.mapping is first.mapping
    assert restore("[EMAIL_1], [EMAIL_2]", second) == "jane@example.com, bob@example.org"


def test_mask_mode_keeps_nothing() -> None:
    r = redact(TEXT, scan(TEXT), mode="mask")
    assert r.text == (
        "Hi, I'm [REDACTED:email] (also [REDACTED:email]), card [REDACTED:payment_card], "
        "backup [REDACTED:email] and key [REDACTED:openai_api_key]."
    )
    assert len(r.mapping) == 0
    assert restore("[EMAIL_1]", r) == "[EMAIL_1]"
    with pytest.raises(ValueError, match="unknown redaction mode"):
        redact(TEXT, [], mode="hash")  # type: ignore[arg-type]


def test_overlapping_findings_merge_to_the_union_most_severe_wins() -> None:
    text = "0123456789abcdefghij"
    merged = merge_findings(
        [
            Finding("pii.phone", "phone", 2, 10, 0.8, "phone"),
            Finding("secret.jwt", "jwt", 8, 14, 1.0, "JSON Web Token"),
            Finding("pii.email", "email", 16, 18),
            Finding("pii.ipv4", "ipv4", 15, 19, 0.9),
            Finding("guard.classifier", "toxicity", -1, -1),  # whole-content: not positioned
        ]
    )
    assert [(f.kind, f.start, f.end) for f in merged] == [("jwt", 2, 14), ("email", 15, 19)]
    assert merged[0].detail == "JSON Web Token (merged 2 findings)"
    assert merged[0].score == 1.0
    r = redact(text, merged)
    assert r.text == "01[SECRET_1]e[EMAIL_1]j"
    assert restore(r.text, r) == text
    # On equal severity the longer finding names the merged span.
    longer = merge_findings(
        [Finding("pii.email", "email", 0, 4), Finding("pii.phone", "phone", 1, 9)]
    )
    assert [(f.kind, f.start, f.end) for f in longer] == [("phone", 0, 9)]


def test_adjacent_findings_do_not_merge() -> None:
    merged = merge_findings([Finding("pii.a", "a", 0, 3), Finding("pii.b", "b", 3, 5)])
    assert [(f.start, f.end) for f in merged] == [(0, 3), (3, 5)]


def test_findings_past_the_text_are_refused() -> None:
    with pytest.raises(ValueError, match="past the text"):
        redact("short", [Finding("pii.email", "email", 2, 50)])


def test_labels() -> None:
    assert label_for(Finding("pii.iban", "iban")) == "IBAN"
    assert label_for(Finding("pii.ipv6", "ipv6")) == "IP"
    assert label_for(Finding("secret.jwt", "jwt")) == "SECRET"
    assert label_for(Finding("pii.passport", "passport-no")) == "PASSPORTNO"
    assert label_for(Finding("pii.x", "é")) == "PII"
    assert label_for(Finding("pii.x", "2fa_code")) == "PII2FACODE"
    r = redact("code 123456", [Finding("pii.x", "2fa", 5, 11)])
    assert r.text == "code [PII2FA_1]" and restore(r.text, r) == "code 123456"


def test_the_mapping_never_shows_or_serialises_values() -> None:
    r = redact(TEXT, scan(TEXT))
    for shown in (repr(r), str(r), repr(r.mapping), str(r.mapping), f"{r.mapping}"):
        assert "jane@example.com" not in shown and "4111" not in shown and KEY not in shown
    assert "[EMAIL_1]" in repr(r.mapping)
    for attempt in (
        lambda: pickle.dumps(r.mapping),
        lambda: pickle.dumps(r),
        lambda: copy.copy(r.mapping),
        lambda: copy.deepcopy(r),
        lambda: dataclasses.asdict(r),
        lambda: json.dumps(r.mapping),
        lambda: orjson.dumps(r),
    ):
        with pytest.raises(TypeError):
            attempt()
    assert "[EMAIL_1]" in r.mapping and r.mapping.value_of("[EMAIL_1]") == "jane@example.com"
    assert r.mapping.value_of("[EMAIL_7]") is None


def test_unicode_and_empty_inputs() -> None:
    text = "Écrivez à josé@exämple.de — 電話+81 3-1234-5678。"
    r = redact(text, find_pii(text))
    assert r.text == "Écrivez à [EMAIL_1] — 電話[PHONE_1]。"
    assert restore(r.text, r) == text
    empty = redact("", [])
    assert empty.text == "" and empty.findings == ()
    assert StreamRestorer(empty).feed("abc [X_1]") == "abc [X_1]"


# --- streaming -------------------------------------------------------------------------------


def _stream(redaction: Redaction | PlaceholderMap, chunks: list[str]) -> str:
    restorer = StreamRestorer(redaction)
    return "".join(restorer.feed(c) for c in chunks) + restorer.flush()


REDACTION = redact(TEXT, scan(TEXT))
ANSWER = "Sure: [EMAIL_1]/[CARD_1][EMAIL_2] and [SECRET_1]. [EMAIL_3] [EMAIL_ [CARD_1"


def test_every_split_point_of_every_placeholder() -> None:
    expected = restore(ANSWER, REDACTION)
    for i in range(len(ANSWER) + 1):
        assert _stream(REDACTION, [ANSWER[:i], ANSWER[i:]]) == expected
        for j in range(i, min(len(ANSWER), i + 12) + 1):
            assert _stream(REDACTION, [ANSWER[:i], ANSWER[i:j], ANSWER[j:]]) == expected


def test_one_character_at_a_time_and_bounded_hold_back() -> None:
    restorer = StreamRestorer(REDACTION)
    longest = max(len(p) for p in REDACTION.mapping.placeholders)
    out = []
    for ch in ANSWER:
        out.append(restorer.feed(ch))
        assert len(restorer._held) < longest  # the look-behind buffer stays bounded
    out.append(restorer.flush())
    assert "".join(out) == restore(ANSWER, REDACTION)


def test_text_without_placeholder_starts_is_passed_on_at_once() -> None:
    restorer = StreamRestorer(REDACTION)
    assert restorer.feed("plain text, ") == "plain text, "
    assert restorer.feed("see [") == "see "
    assert restorer.feed("1] and [EM") == "[1] and "
    assert restorer.feed("AIL_1] done") == "jane@example.com done"
    assert restorer.flush() == ""


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.one_of(
            st.sampled_from([*REDACTION.mapping.placeholders, "[EMAIL_", "[", "]", "[CARD_12]"]),
            st.text(alphabet="ab[]_1EMAIL ", max_size=6),
        ),
        max_size=12,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_stream_restore_equals_whole_restore(parts: list[str], cuts: list[int]) -> None:
    answer = "".join(parts)
    points = sorted({min(c, len(answer)) for c in cuts})
    chunks = [answer[a:b] for a, b in zip([0, *points], [*points, len(answer)], strict=True)]
    assert _stream(REDACTION, chunks) == restore(answer, REDACTION)


FRAGMENTS = [
    "jane@example.com",
    "4111 1111 1111 1111",
    "+44 20 7946 0958",
    "GB82 WEST 1234 5698 7654 32",
    "10.0.0.1",
    KEY,
    "[EMAIL_1]",
    "[CARD_",
    " ",
    "é",
    "電話",
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=15))
def test_redact_then_restore_is_the_identity(parts: list[str]) -> None:
    text = "".join(parts)
    r = redact(text, scan(text))
    assert restore(r.text, r) == text
    assert _stream(r, [r.text[i : i + 3] for i in range(0, len(r.text), 3)]) == text
    assert all(0 <= f.start < f.end <= len(text) for f in r.findings)
    assert all(a.end <= b.start for a, b in zip(r.findings, r.findings[1:], strict=False))
