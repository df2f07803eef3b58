"""m006_cost: what each call record is attributed to and what it was charged at; price versions.

- ``model_calls`` gains ``agent``, ``session_id``, ``tags`` (a JSON list), ``tokens_cached``
  (input tokens read from the provider's prompt cache), ``price_version`` (a row of ``prices``)
  and ``saved`` (the prompt-cache discount, or the whole cost of a response-cache hit). The
  columns have no default: rows written before stay NULL there, so their record hash (over the
  columns they had) still verifies.
- ``prices``: one row per price version, written once, never updated, so an old record keeps
  the price it was charged at.
- An index for the cost report of an organisation over a time range.
"""

STATEMENTS = (
    "ALTER TABLE model_calls ADD COLUMN agent TEXT",
    "ALTER TABLE model_calls ADD COLUMN session_id TEXT",
    "ALTER TABLE model_calls ADD COLUMN tags TEXT",
    "ALTER TABLE model_calls ADD COLUMN tokens_cached {bigint}",
    "ALTER TABLE model_calls ADD COLUMN price_version TEXT",
    "ALTER TABLE model_calls ADD COLUMN saved {real}",
    "CREATE INDEX model_calls_org_created ON model_calls (org_id, created_at)",
    """CREATE TABLE prices (
        version TEXT PRIMARY KEY,
        deployment TEXT NOT NULL,
        model TEXT NOT NULL,
        price TEXT NOT NULL,
        first_seen {real} NOT NULL
    )""",
)
