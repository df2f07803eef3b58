"""m014_memory: sessions and long-term memory (filled in by the work that adds it)."""

STATEMENTS: tuple[str, ...] = ()
