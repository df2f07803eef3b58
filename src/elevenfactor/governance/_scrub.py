"""The log scrubber: the guard redactors applied to every JSON log line (factor 10, XI).

Log lines carry ids and figures, but also error messages that can quote user content (an
upstream's complaint about a message, a tool's error text). Every string value of a line goes
through the secret detectors and the personal-data detectors before it is written; what they
find is masked as ``[REDACTED:<kind>]``. IP addresses are left alone (operators need the
addresses servers bind and clients come from; the call records hold no client address). Keys,
numbers and booleans are not scanned; short strings that cannot hold a finding are skipped
without running a detector; nor are the top-level fields in ``TRUSTED_KEYS`` (ids and names
the process generates or reads from its configuration).

Most strings of a log line come back line after line — the message, the event, the logger's
name, the model and route names, a status. A string the detectors found nothing in is
remembered (up to ``_CLEAN_MAX`` strings of at most ``_CLEAN_LEN`` characters, then the memory
starts over), so a line made of known strings costs a few dictionary lookups instead of a scan:
the detectors are deterministic, the verdict on a string cannot change.
"""

from __future__ import annotations

from typing import Any

from elevenfactor.governance._guard_pii import PII_KINDS, find_pii
from elevenfactor.governance._guard_redact import redact
from elevenfactor.governance._guard_secrets import find_secrets

__all__ = ["LOG_PII_KINDS", "TRUSTED_KEYS", "scrub_fields", "scrub_text"]

LOG_PII_KINDS: tuple[str, ...] = tuple(k for k in PII_KINDS if k not in ("ipv4", "ipv6"))
"""The personal-data kinds masked in logs: all but IP addresses."""

_MIN = 6  # shorter than any e-mail, card, key or phone number the detectors accept
_CLEAN_MAX = 4096  # strings remembered as clean
_CLEAN_LEN = 256  # longest string remembered
_clean: dict[str, None] = {}  # strings the detectors found nothing in

TRUSTED_KEYS = frozenset(
    {
        "trace_id",  # 32 hex digits: ours, or a validated incoming traceparent's
        "span_id",  # 16 hex digits, ours
        "price_version",  # a price table version we computed
        "provider",  # configured names
        "deployment",
        "failover_path",
        "prompt",  # prompt refs: a configured id and a content hash
        "release_id",  # a manifest hash
        "guard",  # verdict summaries: stages, actions, policy refs and rule names, no text
    }
)
"""Top-level fields of a log line whose values the process generates or takes from the
project's configuration: never scanned (ids full of digits would make every digit-based
detector run on every line). Everything else — messages, routes and models as clients or
upstreams name them, tags, session ids, errors — is scanned."""


def scrub_text(text: str) -> str:
    """``text`` with secrets and personal data masked (unchanged when nothing is found)."""
    if len(text) < _MIN:
        return text
    found = [*find_secrets(text), *find_pii(text, LOG_PII_KINDS)]
    if not found:
        return text
    return redact(text, found, mode="mask").text


def scrub_fields(value: Any) -> Any:
    """``value`` (a log line's fields: dicts, lists and scalars) with every string scrubbed;
    containers are copied only where something changed. The detectors run once over all the
    line's strings together; only a line where they find something is scrubbed string by
    string."""
    strings: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in TRUSTED_KEYS:
                continue
            kind = type(item)
            if kind is str:
                if len(item) >= _MIN and item not in _clean:
                    strings.append(item)
            elif item is not None and kind is not int and kind is not float and kind is not bool:
                _collect(item, strings)
    else:
        _collect(value, strings)
    if not strings:
        return value
    joined = "\n".join(strings)
    if not find_secrets(joined) and not find_pii(joined, LOG_PII_KINDS):
        _remember(strings)
        return value
    if isinstance(value, dict):
        out = {k: v if k in TRUSTED_KEYS else _scrub_each(v) for k, v in value.items()}
        return value if all(out[k] is value[k] for k in value) else out
    return _scrub_each(value)


def _remember(strings: list[str]) -> None:
    """Remember ``strings`` (found clean) for the next lines."""
    if len(_clean) + len(strings) > _CLEAN_MAX:
        _clean.clear()
    for text in strings:
        if len(text) <= _CLEAN_LEN:
            _clean[text] = None


def _collect(value: Any, into: list[str]) -> None:
    if isinstance(value, str):
        if len(value) >= _MIN and value not in _clean:
            into.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, into)
    elif isinstance(value, list | tuple):
        for v in value:
            _collect(v, into)


def _scrub_each(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        out = {k: _scrub_each(v) for k, v in value.items()}
        return value if all(out[k] is value[k] for k in value) else out
    if isinstance(value, list | tuple):
        items = [_scrub_each(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value
