"""The texts the benchmark embeds: deterministic, varied, English, of two sizes.

Short sentences are about 10-16 tokens (what a semantic cache or a memory lookup embeds);
passages about 200 tokens (what retrieval ingests: a chunk). Both are built from a seeded
generator, so every run and every peer embeds the same texts.
"""

from __future__ import annotations

import random

__all__ = ["passages", "sentences"]

_SUBJECTS = [
    "the gateway",
    "a worker",
    "the budget ledger",
    "an approval",
    "the retrieval index",
    "our agent",
    "the journal",
    "a tool call",
    "the cache",
    "the scheduler",
    "a reviewer",
    "the database",
    "this request",
    "the model",
    "a failover chain",
    "the audit trail",
]
_VERBS = [
    "records",
    "retries",
    "refuses",
    "reserves",
    "streams",
    "resumes",
    "verifies",
    "routes",
    "summarises",
    "embeds",
    "rejects",
    "approves",
    "indexes",
    "throttles",
    "replays",
    "charges",
]
_OBJECTS = [
    "every step before it runs",
    "the answer after a crash",
    "calls that exceed the budget",
    "the cheapest deployment first",
    "documents about billing",
    "a refund over one hundred euros",
    "the hash of the previous event",
    "tokens per minute for each key",
    "the user's question",
    "three chunks from the handbook",
    "a long conversation",
    "the result of the tool",
]
_TAILS = [
    "",
    " today",
    " within two seconds",
    " on PostgreSQL",
    " without a second charge",
    " for the finance team",
    " when Redis is down",
    " in the staging cluster",
]


def sentences(n: int, seed: int = 7) -> list[str]:
    """``n`` short sentences."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} "
        f"{rng.choice(_OBJECTS)}{rng.choice(_TAILS)}."
        for _ in range(n)
    ]


def passages(n: int, seed: int = 11, sentences_each: int = 13) -> list[str]:
    """``n`` passages of about 200 tokens (``sentences_each`` sentences each)."""
    pool = sentences(n * sentences_each, seed)
    return [" ".join(pool[i * sentences_each : (i + 1) * sentences_each]) for i in range(n)]
