"""m017_embedding_calls: what kind of call a ``model_calls`` row records.

- ``model_calls.kind``: NULL for a chat completion or an agent's model call (every row written
  before this migration), ``embedding`` for a ``POST /v1/embeddings`` request. Cost reports
  group and filter by it (``kind``: ``chat`` or ``embedding``). A row whose ``kind`` is NULL
  hashes as before (see ``elevenfactor.observe._calls.record_hash``), so old rows still verify.
"""

STATEMENTS = ("ALTER TABLE model_calls ADD COLUMN kind TEXT",)
