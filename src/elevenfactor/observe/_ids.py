"""Random identifiers for the request path, without a system call each.

``uuid.uuid4()`` reads ``os.urandom`` (a system call) and builds a ``UUID`` object: a few
microseconds per id, twice per request (trace id, call record id). Trace and record ids need to
be unique, not secret, so they come from ``random.getrandbits`` (seeded from the OS, reseeded in
forked children by the ``random`` module itself), formatted as a version-4 UUID in hex, as
``uuid.uuid4().hex`` is. Nothing that must be unguessable (keys, tokens) uses these.
"""

from __future__ import annotations

import random

__all__ = ["new_id"]

_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_SET = (0x4000 << 64) | (0x8000 << 48)
_bits = random.getrandbits


def new_id() -> str:
    """32 lowercase hex digits shaped like ``uuid.uuid4().hex``."""
    return f"{(_bits(128) & _CLEAR) | _SET:032x}"
