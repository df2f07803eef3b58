"""m013_retrieval: retrieval indexes, their versions, documents and chunks (filled in by the work
that adds it).
"""

STATEMENTS: tuple[str, ...] = ()
