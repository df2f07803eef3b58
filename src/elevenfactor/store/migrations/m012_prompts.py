"""m012_prompts: prompt versions ever used (`prompt_versions`) and the prompt of each model call.

- ``prompt_versions``: one row per prompt id and content hash (the full SHA-256 of the file,
  line endings normalised) the first time a process used it: the short version shown to people,
  the file it was read from (relative to the project) and its whole text, so a run made with
  an old version can be explained, re-rendered and diffed after the file changed. Rows are
  inserted once and never updated (``ON CONFLICT DO NOTHING``).
- ``model_calls.prompt``: the prompt a call used, as ``id@version`` (NULL for calls made
  without one; such records hash as before, see ``elevenfactor.observe._calls.record_hash``).
"""

STATEMENTS = (
    """CREATE TABLE prompt_versions (
        prompt_id TEXT NOT NULL,
        hash TEXT NOT NULL,
        version TEXT NOT NULL,
        path TEXT NOT NULL,
        content TEXT NOT NULL,
        first_used_at {real} NOT NULL,
        PRIMARY KEY (prompt_id, hash)
    )""",
    "ALTER TABLE model_calls ADD COLUMN prompt TEXT",
)
