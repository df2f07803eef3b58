"""The inputs every measurement shares: two 2 KB texts, the policies, the labelled corpora."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from elevenfactor.governance._policy_book import shipped_default
from elevenfactor.governance._policy_load import parse_policy
from elevenfactor.governance._policy_model import Policy

__all__ = [
    "CORPUS",
    "INPUT_CHARS",
    "PII_SECRETS",
    "REPO",
    "STRICT_POLICY",
    "chunks",
    "inputs",
    "policies",
    "read_jsonl",
]

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "data" / "guard" / "injection"
PII_SECRETS = REPO / "tests" / "data" / "guard" / "pii_secrets.jsonl"
INPUT_CHARS = 2048

STRICT_POLICY = """\
description: bench strict - PII redacted, secrets masked, injection blocked (rules + classifier)
stages:
  input:
    - {rule: pii, action: redact}
    - {rule: secrets, action: redact}
    - {rule: injection, action: block, classifier: true}
    - rule: phrases
      deny: [internal use only, confidential - do not share, wire the money today]
      patterns: ['(?i)\\bproject\\s+(?:atlas|orion)\\b']
    - {rule: length, max_chars: 16000}
  retrieved:
    - {rule: injection, action: escalate}
  tool_result:
    - {rule: injection, action: escalate}
  output:
    - {rule: pii, action: redact}
    - {rule: secrets, action: redact}
    - {rule: phrases, deny: [internal use only]}
    - {rule: length, max_chars: 16000}
"""
"""The "strict" policy: every rule-based content rule at input and output."""

_FILLER = (
    "Thanks for getting back to me so quickly. I went through the invoice you sent last week "
    "and compared it with the order history in our account. Two of the line items look like "
    "duplicates, and the shipping charge seems higher than the rate we agreed on in March. "
    "Could you check whether the discount for annual billing was applied, and let me know if "
    "we need to update the purchase order number on our side before the next cycle starts? "
)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _fill(parts: list[str]) -> str:
    """``parts`` joined by blank lines, then repeated, cut to ``INPUT_CHARS`` at a space."""
    text = "\n\n".join(parts)
    while len(text) < INPUT_CHARS:
        text = f"{text}\n\n{text}"
    cut = text.rfind(" ", 0, INPUT_CHARS)
    return text[:cut].ljust(INPUT_CHARS, ".")


@cache
def inputs() -> dict[str, str]:
    """Two 2 KB user messages: ``clean`` (a support e-mail, nothing to find) and
    ``findings`` (the same prose with an e-mail, a phone number, a card and an API key)."""
    dirty = [r["text"] for r in read_jsonl(PII_SECRETS) if r["expect"]]
    picks = [dirty[0], dirty[4], dirty[8], next(t for t in dirty if "sk-" in t)]
    mixed = [_FILLER[:300], picks[0], _FILLER[300:], picks[1], picks[2], _FILLER, picks[3]]
    return {"clean": _fill([_FILLER]), "findings": _fill(mixed)}


@cache
def policies() -> dict[str, Policy]:
    """The shipped ``default`` and the bench's ``strict``."""
    strict = parse_policy(STRICT_POLICY.encode(), file="bench/guards strict", policy_id="strict")
    return {"default": shipped_default(), "strict": strict}


def chunks(text: str, n: int) -> list[str]:
    """``text`` cut into ``n`` pieces of about the same size (as a model streams it)."""
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]
