"""Factor 3, memory: sessions (a conversation and its state, in the store) and long-term memory
(facts and preferences with provenance, scoped to a user, an agent or a shared space)."""

from __future__ import annotations

__all__: list[str] = []
