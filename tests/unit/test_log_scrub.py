"""The JSON log lines go through the guard redactors: secrets and personal data never reach
stdout, on the fast path (``log_event``) and through ``logging`` (a formatter, exceptions)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from elevenfactor.governance._scrub import scrub_fields, scrub_text
from elevenfactor.observe import configure_logging, log_event

EMAIL = "alice.smith@example.com"
KEY = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" + "Q7r"
CARD = "4111 1111 1111 1111"


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("info", stream)
    try:
        yield stream
    finally:
        configure_logging("info", io.StringIO(), scrub=False)
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def _parsed(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_fast_path_lines_are_scrubbed(lines: io.StringIO) -> None:
    log = logging.getLogger("elevenfactor.test")
    log_event(log, "tool_failed", error=f"mail to {EMAIL} failed", detail=[{"key": KEY}])
    (line,) = _parsed(lines)
    text = lines.getvalue()
    assert EMAIL not in text and KEY not in text
    assert line["error"] == "mail to [REDACTED:email] failed"
    assert line["detail"] == [{"key": "[REDACTED:openai_api_key]"}]


def test_formatter_and_exceptions_are_scrubbed(lines: io.StringIO) -> None:
    log = logging.getLogger("elevenfactor.test")
    log.addFilter(lambda record: True)  # a filter: the line goes through the formatter
    try:
        try:
            raise ValueError(f"card {CARD} declined")
        except ValueError:
            log.exception("payment for %s failed", EMAIL)
    finally:
        log.filters.clear()
    (line,) = _parsed(lines)
    assert CARD not in lines.getvalue() and EMAIL not in lines.getvalue()
    assert line["msg"] == "payment for [REDACTED:email] failed"
    assert "[REDACTED:payment_card]" in str(line["exc"])


def test_clean_lines_and_ip_addresses_are_left_alone(lines: io.StringIO) -> None:
    fields = {"host": "127.0.0.1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "n": 3}
    log_event(logging.getLogger("elevenfactor.test"), "serving", **fields)
    (line,) = _parsed(lines)
    assert {k: line[k] for k in fields} == fields


def test_scrub_off_writes_values_as_they_are() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = list(root.handlers)
    configure_logging("info", stream, scrub=False)
    try:
        log_event(logging.getLogger("elevenfactor.test"), "x", error=EMAIL)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
    assert EMAIL in stream.getvalue()


def test_scrub_fields_copies_only_what_changed() -> None:
    clean = {"a": ["b", {"c": "d" * 20}], "n": 1}
    assert scrub_fields(clean) is clean
    dirty = {"a": ["ok", {"c": EMAIL}], "keep": {"x": "y" * 10}}
    out = scrub_fields(dirty)
    assert out["a"][1]["c"] == "[REDACTED:email]" and out["keep"] is dirty["keep"]
    assert dirty["a"][1]["c"] == EMAIL  # the caller's object is untouched
    assert scrub_text("short") == "short"


def test_a_field_named_like_a_record_attribute_does_not_fail(lines: io.StringIO) -> None:
    log_event(logging.getLogger("elevenfactor.test"), "lease_lost", message=f"to {EMAIL}")
    (line,) = _parsed(lines)
    assert line["message_"] == "to [REDACTED:email]"


def test_trusted_fields_are_not_scanned_and_the_rest_still_is() -> None:
    """Ids and configured names are written as they are; a client's text next to them is
    still masked (the route a client named, a tag)."""
    line = {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "price_version": "default-2026-11",
        "guard": {"input": "allow", "policy": "default@1a2b3c4d5e6f"},
        "route": "ann@example.com",
        "tags": ["call me on +44 20 7946 0958"],
    }
    out = scrub_fields(line)
    for key in ("trace_id", "span_id", "price_version", "guard"):
        assert out[key] == line[key]
    assert "ann@example.com" not in str(out["route"])
    assert "7946" not in str(out["tags"])
    clean = {k: line[k] for k in ("trace_id", "span_id", "price_version", "guard")}
    assert scrub_fields(clean) is clean


def test_a_string_found_clean_is_not_scanned_again_and_a_dirty_one_always_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from elevenfactor.governance import _scrub
    from elevenfactor.governance._guard_pii import find_pii as real

    scanned: list[str] = []

    def counting(text: str, kinds: object) -> object:
        scanned.append(text)
        return real(text, kinds)  # type: ignore[arg-type]

    monkeypatch.setattr(_scrub, "find_pii", counting)
    monkeypatch.setattr(_scrub, "_clean", {})
    line = {"msg": "model_call", "model": "gpt-4o-mini", "route": "support-bot", "n": 1}
    assert scrub_fields(line) is line
    assert scanned == ["model_call\ngpt-4o-mini\nsupport-bot"]
    assert scrub_fields(dict(line)) == line
    assert len(scanned) == 1  # known strings: no detector ran
    for _ in range(2):  # a finding is never remembered as clean
        out = scrub_fields({**line, "error": f"mail to {EMAIL} failed"})
        assert out["error"] == "mail to [REDACTED:email] failed"
    assert EMAIL not in str(_scrub._clean)


def test_the_memory_of_clean_strings_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from elevenfactor.governance import _scrub

    monkeypatch.setattr(_scrub, "_clean", {})
    for i in range(_scrub._CLEAN_MAX + 50):
        scrub_fields({"session_id": f"session-{i:06d}"})
    assert 0 < len(_scrub._clean) <= _scrub._CLEAN_MAX
    long = "word " * (_scrub._CLEAN_LEN // 5 + 1)
    scrub_fields({"detail": long})
    assert long not in _scrub._clean


def test_fast_path_lines_leave_private_fields_out(lines: io.StringIO) -> None:
    log = logging.getLogger("elevenfactor.test")
    log_event(log, "done", _internal="x", kept=1, _other=2)
    log.warning("plain warning")
    first, second = _parsed(lines)
    assert first["level"] == "info" and first["msg"] == "done" and first["kept"] == 1
    assert not [k for k in first if k.startswith("_")]
    assert second["level"] == "warning" and second["msg"] == "plain warning"
