"""The benchmark workload: a step function returning a ~200-byte payload, and the byte count a
journaled step writes (the size the floor's bare INSERT carries).

Kept free of elevenfactor imports so the DBOS peer process (another venv) can use it too.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any

__all__ = ["PAYLOAD_BYTES", "STEP_ROW_BYTES", "floor_row", "payload"]

PAYLOAD_BYTES = 200
# What one journaled step writes besides its payload: a blob row (hash 71 + size + time) and a
# journal row (run id 32, n, step id, kind, name, status, output hash 71, fence, time, prev hash
# 64, hash 64): about 330 bytes of keys, hashes and numbers.
STEP_ROW_BYTES = 330


@lru_cache(maxsize=64)
def _pad(tag_len: int, i_len: int) -> int:
    # {"data":"...","i":<i>,"tag":"<tag>"} with sorted keys, no spaces
    return max(PAYLOAD_BYTES - len('{"data":"","i":,"tag":""}') - tag_len - i_len, 0)


def payload(tag: str, i: int) -> dict[str, Any]:
    """A distinct ~200-byte JSON object per (tag, i): no two steps share a blob. Cheap: one
    SHA-256 of a few bytes, so the step's own work stays near zero."""
    short = tag[:12]
    pad = _pad(len(short), len(str(i)))
    digest = hashlib.sha256(f"{tag}:{i}".encode()).hexdigest()
    return {"data": (digest * (pad // 64 + 1))[:pad], "i": i, "tag": short}


def floor_row(tag: str, i: int) -> bytes:
    """The floor's payload: the step's encoded output plus as many bytes as its rows add."""
    body = json.dumps(payload(tag, i), separators=(",", ":"), sort_keys=True).encode()
    filler = hashlib.sha256(body).hexdigest().encode()
    return body + (filler * (STEP_ROW_BYTES // len(filler) + 1))[:STEP_ROW_BYTES]
