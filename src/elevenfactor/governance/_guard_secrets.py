"""Secret detectors (factor 10): ``find_secrets`` finds credentials in text and returns
``Finding`` s (rule ``secret.<kind>``, positions, a detail that never repeats the value).

Specific rules, by known prefix and shape (a word boundary on both sides):

* ``openai_api_key``: ``sk-…``, ``sk-proj-…``, ``sk-svcacct-…``, ``sk-admin-…``; 20+ characters
  after the prefix with letters and digits (``sk-learn-tutorial`` is not a key);
* ``anthropic_api_key``: ``sk-ant-…`` (32+ characters);
* ``aws_access_key_id``: ``AKIA`` / ``ASIA`` + 16 upper-case letters or digits;
  ``aws_secret_access_key``: 40 characters of ``[A-Za-z0-9/+]`` within 300 characters of an
  access key id or right after ``aws_secret…`` / ``secret_access_key``;
* ``github_token``: ``ghp_ gho_ ghu_ ghs_ ghr_`` + 36+, ``github_pat_`` + 22+;
* ``gitlab_token``: ``glpat-`` + 20+; ``slack_token``: ``xox[abpors]-…`` with digits;
  ``slack_webhook``: ``https://hooks.slack.com/services/T…/B…/…``;
* ``stripe_key``: ``sk_live_ rk_live_ sk_test_ rk_test_`` (test-mode keys still read and
  write the account's test data); ``google_api_key``: ``AIza`` + 35;
* ``elevenfactor_api_key``: our own ``ef_<8 hex>_<urlsafe secret>`` (see ``_keys``);
* ``jwt``: three base64url parts whose header decodes to a JSON object with ``alg``;
* ``private_key``: a PEM ``-----BEGIN … PRIVATE KEY-----`` block up to its ``END`` line (or,
  if the END line is missing, to the end of the base64 body).

Context rules, reported only where no specific rule matched the same characters:

* ``auth_header``: the credential in ``Authorization:`` / ``Proxy-Authorization:`` /
  ``X-API-Key:`` / ``X-Auth-Token:`` (any scheme), 8+ characters; ``bearer_token``: the token
  after a bare ``Bearer`` (16+ characters mixing letter case or digits);
* ``url_password``: the password in ``scheme://user:password@host``;
* ``generic_secret``: see ``_guard_secrets_entropy``.

Placeholders are not secrets: ``<token>``, ``$TOKEN``, ``${TOKEN}``, ``YOUR_API_KEY``,
``xxxxxxxx``, ``********`` and the literal words *password*, *secret* in URLs.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import re
from collections.abc import Iterator

from elevenfactor.governance._guard_secrets_entropy import entropy_candidates
from elevenfactor.governance._guard_types import Finding

__all__ = ["SECRET_KINDS", "find_secrets"]


def _rx(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """Patterns over ASCII: a key glued to CJK text ("キーはsk-…です") still has boundaries."""
    return re.compile(pattern, flags | re.ASCII)


_B = r"(?<![\w-])"  # no word character or dash before
_E = r"(?![\w-])"  # ... or after
# The specific patterns start with their literal prefix, so ``re`` can skip ahead to it; the
# boundary before a match (``_B``) is checked in code (``_starts_clean``): a lookbehind first
# would make every pattern try every position of the text.
_SPECIFIC: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "anthropic_api_key",
        _rx(r"sk-ant-[A-Za-z0-9_-]{32,256}" + _E),
        "Anthropic API key",
    ),
    (
        "openai_api_key",
        _rx(r"sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,256}" + _E),
        "OpenAI API key",
    ),
    (
        "aws_access_key_id",
        _rx(r"(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        "AWS access key id",
    ),
    (
        "github_token",
        _rx(r"(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255})" + _E),
        "GitHub token",
    ),
    ("gitlab_token", _rx(r"glpat-[A-Za-z0-9_-]{20,256}" + _E), "GitLab access token"),
    ("slack_token", _rx(r"xox[abpors]-[A-Za-z0-9-]{10,256}" + _E), "Slack token"),
    (
        "slack_webhook",
        _rx(r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/\w{16,}"),
        "Slack incoming webhook URL",
    ),
    (
        "stripe_key",
        _rx(r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,247}" + _E),
        "Stripe API key",
    ),
    ("google_api_key", _rx(r"AIza[0-9A-Za-z_-]{35}" + _E), "Google API key"),
    (
        "elevenfactor_api_key",
        _rx(r"ef_[0-9a-f]{8}_[A-Za-z0-9_-]{32,64}" + _E),
        "elevenfactor API key",
    ),
    (
        "jwt",
        _rx(r"eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*" + _E),
        "JSON Web Token",
    ),
)
_NEEDS_DIGIT = frozenset({"openai_api_key", "anthropic_api_key", "slack_token", "stripe_key"})

_PEM_BEGIN = _rx(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = _rx(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_PEM_BODY = _rx(r"[A-Za-z0-9+/=\r\n]*")

_AWS_SECRET = _rx(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_KEY_ID = _rx(r"(?:AKIA|ASIA)[A-Z0-9]{16}")
_AWS_SECRET_WORD = _rx(r"aws.{0,20}secret|secret.?access.?key", re.I)

_HEADER = _rx(
    r"\b(?:proxy-)?authorization|\bx-api-key|\bx-auth-token|\bapi-key", re.I
)  # the value follows ``[:=]`` and an optional scheme word
_HEADER_VALUE = _rx(
    r"[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|bot|apikey|digest)\s+)?"
    r"([A-Za-z0-9._~+/=-]{8,4096})",
    re.I,
)
_BEARER = _rx(r"(?<![\w-])bearer\s+([A-Za-z0-9._~+/=-]{16,4096})", re.I)
_URL_PASSWORD = _rx(r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]{1,128}:([^\s:/@]{1,128})@", re.I)
_PLACEHOLDER = _rx(r"[A-Z0-9_]*[A-Z]_[A-Z0-9_]*|(.)\1{3,}|<.*>|\$.*|\{.*\}|\*+")
_PLACEHOLDER_WORDS = frozenset(
    "password pass passwd pwd pw secret mypassword yourpassword your_password your-password"  # noqa: SIM905 - word list
    " changeit token apikey".split()
)


def _finding(kind: str, start: int, end: int, detail: str, score: float = 1.0) -> Finding:
    return Finding(f"secret.{kind}", kind, start, end, score, detail)


def _jwt_header_ok(token: str) -> bool:
    header = token.split(".", 1)[0]
    try:
        value = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(value, dict) and isinstance(value.get("alg"), str)


_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_ALNUM_BEFORE = frozenset({"aws_access_key_id"})  # preceded by no letter or digit (a dash is fine)


def _starts_clean(text: str, start: int, kind: str) -> bool:
    """Nothing glued before ``start``: no ASCII word character or dash (``_B``), or for AWS
    key ids no ASCII letter or digit."""
    if start == 0:
        return True
    before = text[start - 1]
    if kind in _ALNUM_BEFORE:
        return before == "_" or before not in _WORD
    return before != "-" and before not in _WORD


def _matches(pattern: re.Pattern[str], text: str, kind: str) -> Iterator[re.Match[str]]:
    """``pattern.finditer`` with the boundary before each match checked: a match refused for
    its boundary is searched again from the next position (as the lookbehind would have)."""
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        if _starts_clean(text, m.start(), kind):
            yield m
            pos = m.end() if m.end() > m.start() else m.start() + 1
        else:
            pos = m.start() + 1


def _specific(text: str) -> Iterator[Finding]:
    for kind, pattern, detail in _SPECIFIC:
        for m in _matches(pattern, text, kind):
            value = m.group()
            if kind in _NEEDS_DIGIT and not any(ch.isdigit() for ch in value):
                continue
            if kind == "jwt" and not _jwt_header_ok(value):
                continue
            yield _finding(kind, m.start(), m.end(), detail)


def _private_keys(text: str) -> Iterator[Finding]:
    ends = [(m.start(), m.end()) for m in _PEM_END.finditer(text)]
    starts = [s for s, _ in ends]
    for m in _PEM_BEGIN.finditer(text):
        i = bisect.bisect_left(starts, m.end())
        if i < len(ends):
            end = ends[i][1]
        else:
            body = _PEM_BODY.match(text, m.end())
            end = body.end() if body is not None else m.end()
        yield _finding("private_key", m.start(), end, "PEM private key block")


def _aws_secrets(text: str) -> Iterator[Finding]:
    if "AKIA" not in text and "ASIA" not in text and "secret" not in text.lower():
        return  # neither a key id nor the words can be near: nothing would be reported
    for m in _AWS_SECRET.finditer(text):
        value = m.group()
        if not (any(c.isdigit() for c in value) or "/" in value or "+" in value):
            continue
        if not (any(c.islower() for c in value) and any(c.isupper() for c in value)):
            continue
        near_id = _AWS_KEY_ID.search(text, max(0, m.start() - 300), m.end() + 300)
        if near_id or _AWS_SECRET_WORD.search(text, max(0, m.start() - 60), m.start()):
            yield _finding("aws_secret_access_key", m.start(), m.end(), "AWS secret access key")


def _placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER.fullmatch(value)) or value.lower() in _PLACEHOLDER_WORDS


def _mixed(value: str) -> bool:
    lower = any(c.islower() for c in value)
    upper = any(c.isupper() for c in value)
    digit = any(c.isdigit() for c in value)
    return lower + upper + digit >= 2 and (digit or (lower and upper))


def _contextual(text: str) -> Iterator[Finding]:
    # Each scan runs only when the words it needs are in the text (cheap substring tests on
    # the lowercased text; necessary conditions, so nothing is missed): a scan with no literal
    # prefix costs tens of microseconds per 2 KB.
    low = text.lower()
    if "authorization" in low or "api-key" in low or "x-auth-token" in low:
        for m in _HEADER.finditer(text):
            v = _HEADER_VALUE.match(text, m.end())
            if v is not None and not _placeholder(v.group(1)):
                detail = "credential in an auth header"
                yield _finding("auth_header", v.start(1), v.end(1), detail)
    if "bearer" in low:
        for m in _BEARER.finditer(text):
            token = m.group(1)
            if _mixed(token) and not _placeholder(token):
                yield _finding("bearer_token", m.start(1), m.end(1), "bearer token", 0.9)
    if "://" in text:
        for m in _URL_PASSWORD.finditer(text):
            if not _placeholder(m.group(1)):
                yield _finding("url_password", m.start(1), m.end(1), "password in a URL", 0.9)
    for start, end, entropy in entropy_candidates(text, low):
        detail = f"high-entropy token near a secret keyword ({entropy:.1f} bits/char)"
        yield _finding("generic_secret", start, end, detail, 0.7)


SECRET_KINDS: tuple[str, ...] = (
    *(kind for kind, _, _ in _SPECIFIC),
    "private_key",
    "aws_secret_access_key",
    "auth_header",
    "bearer_token",
    "url_password",
    "generic_secret",
)
"""Every kind ``find_secrets`` reports."""


def _overlaps(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``[start, end)`` overlaps one of ``spans`` (sorted, pairwise disjoint)."""
    i = bisect.bisect_left(spans, (end,))
    return i > 0 and spans[i - 1][1] > start


def find_secrets(text: str) -> list[Finding]:
    """Credentials in ``text``: one ``Finding`` per match (rule ``secret.<kind>``, positions,
    a detail without the value), sorted by position. Context rules (``auth_header``,
    ``bearer_token``, ``url_password``, ``generic_secret``) and the AWS secret rule do not
    repeat characters a specific rule already reported; among them the first to claim a span
    keeps it."""
    found = [*_private_keys(text), *_specific(text)]
    spans: list[tuple[int, int]] = []
    for start, end in sorted((f.start, f.end) for f in found):
        if spans and start < spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    for f in (*_aws_secrets(text), *_contextual(text)):
        if not _overlaps(spans, f.start, f.end):
            found.append(f)
            bisect.insort(spans, (f.start, f.end))
    found.sort(key=lambda f: (f.start, -f.end, f.kind))
    return found
