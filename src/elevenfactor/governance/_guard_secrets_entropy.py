"""The generic secret rule (factor 10): a long random-looking token right after a secret-ish
keyword (``api_key = "…"``, ``token: …``, ``password=…``).

A token (20-1024 characters of ``[A-Za-z0-9+/_-]``, optional ``=`` padding) is a
``generic_secret`` when all of these hold:

* one of *key*, *api_key*, *token*, *secret*, *password*, *passwd*, *pwd*, *credential* is in
  the 40 characters before it;
* it mixes letters and digits, its Shannon entropy is at least ``MIN_ENTROPY`` bits per
  character, and it is not shaped like a name: every ``-_./+``-separated part switches
  between letters and digits at most once, or it splits into camel-case words of two letters
  or more. ``session_token_expiry_v2``, ``claude-3-5-sonnet-20241022``, ``MAX_TOKENS_2048``,
  ``/usr/local/lib/python3``, ``getUserAccessToken2FA`` and ``ThisIsMyPassword1`` are
  identifiers, model names, paths and passphrases, not machine-generated secrets;
* it is not a UUID: UUIDs are identifiers that are shown, logged and shared by design;
* it is not public-key material: *public key* is not a keyword, and the base64 after
  ``ssh-rsa`` / ``ssh-ed25519`` / ``ecdsa-sha2-…`` is skipped;
* it does not decode from base64 to prose (``SGVsbG8gd29ybGQ…`` is encoded text);
* if it is pure hex (a SHA-1/SHA-256 digest, a git commit, a hex-encoded key), the keyword is
  in assignment form right before it (``secret = "9f86d0…"``, ``token: 9f86d0…``). A hash in a
  commit message (``fix token refresh (a94a8fe…)``) is not reported.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter
from collections.abc import Iterator

__all__ = ["MIN_ENTROPY", "entropy_candidates", "shannon_entropy"]

MIN_ENTROPY = 3.4
"""Bits per character; random base62 strings of 20+ characters score about 4, hex about 3.7,
identifiers with a digit or two 3.0-4.0 (which is why the name-shape check exists)."""

_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{20,1024}={0,2}(?![A-Za-z0-9+/_=-])")
_KEYWORD = re.compile(
    r"api[_-]?key|secret|token|passw(?:or)?d|pwd|credential|(?<![a-z])(?<!public[ _-])key(?![a-z])",
    re.I,
)
_SSH_PUBLIC = re.compile(r"(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp\d+)\s+$")
_ASSIGNMENT = re.compile(r"[\w\-\"'\]]{0,24}\s*(?:[:=]|=>)\s*[\"'`]?\s*")
_HEX = re.compile(r"[0-9a-fA-F]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CAMEL_PART = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_SEPARATOR = re.compile(r"[-_./+]")
_SWITCH = re.compile(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")


def shannon_entropy(value: str) -> float:
    """Shannon entropy of ``value``'s characters, in bits per character."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def _decodes_to_prose(token: str) -> bool:
    padded = token + "=" * (-len(token) % 4)
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            text = decode(padded).decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        letters = sum(ch.isalpha() or ch.isspace() for ch in text)
        if text.isprintable() and text.count(" ") >= 2 and letters >= 0.8 * len(text):
            return True
    return False


def _random_looking(token: str) -> bool:
    core = token.rstrip("=")
    has_digit = any(ch.isdigit() for ch in core)
    has_alpha = any(ch.isalpha() for ch in core)
    if not (has_digit and has_alpha) or _UUID.fullmatch(core):
        return False
    if shannon_entropy(core) < MIN_ENTROPY:
        return False
    if _identifier_like(core):
        return False
    return not _decodes_to_prose(token)


def _identifier_like(core: str) -> bool:
    """Whether ``core`` is shaped like a name rather than drawn at random: every
    ``-_./+``-separated segment switches between letters and digits at most once
    (``claude-3-5-sonnet-20241022``, ``x86_64-linux-gnu``, ``/usr/lib/python3``,
    ``MAX_TOKENS_2048``), or it splits into camel-case words of two letters or more
    (``getUserAccessToken2FA``). Random tokens switch class and case every few characters."""
    if all(len(_SWITCH.findall(seg)) <= 1 for seg in _SEPARATOR.split(core)):
        return True
    return all(len(part) >= 2 or part.isdigit() for part in _CAMEL_PART.findall(core))


_KEYWORD_WORDS = ("key", "secret", "token", "passw", "pwd", "credential")
"""A substring of every ``_KEYWORD`` match, lowercased: without one, nothing is reported."""


def entropy_candidates(text: str, low: str | None = None) -> Iterator[tuple[int, int, float]]:
    """``(start, end, entropy)`` of each token the generic rule reports (see module docstring).
    ``low`` is ``text.lower()`` when the caller has it."""
    low = text.lower() if low is None else low
    if not any(word in low for word in _KEYWORD_WORDS):
        return
    for m in _TOKEN.finditer(text):
        start = m.start()
        keywords = list(_KEYWORD.finditer(text, max(0, start - 40), start))
        if not keywords or not _random_looking(m.group()):
            continue
        keyword = keywords[-1]
        if _SSH_PUBLIC.search(text, max(0, start - 24), start):
            continue  # the body of an OpenSSH public key
        if _HEX.fullmatch(m.group()) and not _ASSIGNMENT.fullmatch(text, keyword.end(), start):
            continue
        yield start, m.end(), shannon_entropy(m.group())
