"""Payloads as the run page shows them: decoded, redacted by policy, cut to a readable size.

The rule is the one ``runs export`` applies by default (``--redact auto``, ``runtime._bundle``):
when a guard policy applied to the run (its journal has ``guard`` steps), every payload shown
goes through the built-in personal-data and secret finders and what they find is masked as
``[REDACTED:<kind>]`` — so a policy that keeps originals in the journal (``keep_original``)
never shows them on a page. A payload erased by retention or a forget is shown as *erased*
(its hash still checks in the chain); one that is gone without an erasure is *missing* (the
audit section reports it).

Payloads are content-addressed, so the shown form of one is cached by its hash (a live page
refreshes without scanning the same text again).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from elevenfactor.governance._guard_pii import find_pii
from elevenfactor.governance._guard_redact import redact
from elevenfactor.governance._guard_secrets import find_secrets

__all__ = ["SHOWN_MAX", "Shown", "shown", "shown_state", "shown_value"]

SHOWN_MAX = 16 * 1024
"""Characters of a payload shown on the page; the rest is summarised ("N more characters")."""
_SCAN_MARGIN = 512  # scanned past the cut, so a value straddling it is still found and masked
_LONG_CHARS = 1200
_LONG_LINES = 24
_CACHE_SIZE = 1024

State = Literal["present", "redacted", "erased", "missing", "none"]


@dataclass(frozen=True, slots=True)
class Shown:
    """One payload ready for the page."""

    state: State
    text: str = ""
    """The payload (indented JSON, or text), masked when ``state`` is ``redacted``."""
    size: int = 0
    """Its size in bytes as stored."""
    cut: int = 0
    """Characters left out after ``SHOWN_MAX``."""

    @property
    def long(self) -> bool:
        """Shown collapsed (in a ``<details>``)."""
        return len(self.text) > _LONG_CHARS or self.text.count("\n") >= _LONG_LINES

    @property
    def label(self) -> str:
        """What the payload is, in a few words, for a ``<summary>``."""
        size = f"{self.size / 1024:.1f} kB" if self.size >= 1024 else f"{self.size} bytes"
        lines = self.text.count("\n") + 1
        return f"{size}, {lines} lines" + (" (redacted)" if self.state == "redacted" else "")


_NONE = Shown("none")
_ERASED = Shown("erased")
_MISSING = Shown("missing")

_cache: OrderedDict[tuple[str, bool], Shown] = OrderedDict()
_lock = threading.Lock()


def _mask(text: str) -> str | None:
    """``text`` with personal data and secrets masked, or None when none is found."""
    findings = [*find_pii(text), *find_secrets(text)]
    if not findings:
        return None
    return redact(text, findings, mode="mask").text


def _pretty(content: bytes) -> str:
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", "replace")
    return _pretty_value(value)


def _pretty_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def _make(text: str, size: int, redacting: bool) -> Shown:
    cut = max(0, len(text) - SHOWN_MAX)
    window = text[: SHOWN_MAX + _SCAN_MARGIN] if cut else text
    masked = _mask(window) if redacting else None
    state: State = "present" if masked is None else "redacted"
    body = window if masked is None else masked
    if cut:
        body = body[:SHOWN_MAX]
    return Shown(state, body, size, cut)


def shown(digest: str | None, content: bytes | None, redacting: bool, erased: bool) -> Shown:
    """The payload with hash ``digest`` (None: the step has none) whose stored bytes are
    ``content`` (None: not in the store — ``erased`` says whether an erasure accounts for it)."""
    if digest is None:
        return _NONE
    if content is None:
        return _ERASED if erased else _MISSING
    key = (digest, redacting)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    made = _make(_pretty(content), len(content), redacting)
    with _lock:
        _cache[key] = made
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return made


def shown_value(value: Any, redacting: bool) -> Shown:
    """A value the page derived (not a stored payload), shown under the same rule."""
    if value is None:
        return _NONE
    text = _pretty_value(value)
    return _make(text, len(text.encode()), redacting)


def shown_state(state: State) -> Shown:
    """A payload with nothing to show: ``none``, ``erased`` or ``missing``."""
    return {"none": _NONE, "erased": _ERASED, "missing": _MISSING}.get(state, _NONE)
