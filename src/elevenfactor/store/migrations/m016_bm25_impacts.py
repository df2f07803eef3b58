"""m016_bm25_impacts: which BM25 layout each version of a retrieval index has.

- ``retrieval_versions.bm25_format``: 0 for a version whose BM25 data is only its postings
  ``(term, chunk, tf)``, scored in SQL over every posting of each query term (every version
  built before this migration); 1 for a version that also has impact-ordered posting lists
  (``bm25_chunks``, ``bm25_lists``: see ``elevenfactor.context._index_bm25``), written when
  a build finalises it. Queries read the lists of a version at 1 and score the postings of one
  at 0, so an index built before keeps answering the same; ``elevenfactor index build`` adds
  the lists to its active version (without re-embedding anything) and sets it to 1.
"""

STATEMENTS = ("ALTER TABLE retrieval_versions ADD COLUMN bm25_format INTEGER NOT NULL DEFAULT 0",)
