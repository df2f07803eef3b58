"""m026_retention: content erased by retention or by forgetting a user, with its hashes kept
(``governance._retention_erase``).

- ``erasures``: one row per payload erased — ``subject`` (a run, approval or call record id) and
  ``location`` (``input``, ``result``, ``event:N``, ``request``, ``decision``, ``response``)
  name the reference, ``hash`` is the payload's hash (still in its row, so chains and records
  verify), ``ledger_seq`` the ledger entry of the purge or the forget that erased it (its body
  holds a Merkle root over the rows it erased, so a row added or removed by hand is caught by
  ``audit verify``), ``erased_at`` when. The primary key makes a reference erased once.
- Indexes that find, for a blob about to be deleted, whether a row that is kept still
  references it (blobs are content-addressed and shared between rows): the run input and
  result, step outputs kept in the blob table (partial: only rows without an inline output, so
  the journal's usual appends do not grow it), approval requests and call record payloads.
"""

STATEMENTS = (
    """CREATE TABLE erasures (
        subject TEXT NOT NULL,
        location TEXT NOT NULL,
        hash TEXT NOT NULL,
        ledger_seq {bigint} NOT NULL,
        erased_at {real} NOT NULL,
        PRIMARY KEY (subject, location)
    )""",
    "CREATE INDEX erasures_ledger ON erasures (ledger_seq)",
    "CREATE INDEX runs_input_hash ON runs (input_hash)",
    "CREATE INDEX runs_result_hash ON runs (result_hash) WHERE result_hash IS NOT NULL",
    "CREATE INDEX journal_output_blob ON journal (output_hash)"
    " WHERE output IS NULL AND output_hash IS NOT NULL",
    "CREATE INDEX approvals_request_hash ON approvals (request_hash)",
    "CREATE INDEX model_calls_request_hash ON model_calls (request_hash)"
    " WHERE request_hash IS NOT NULL",
    "CREATE INDEX model_calls_response_hash ON model_calls (response_hash)"
    " WHERE response_hash IS NOT NULL",
)
