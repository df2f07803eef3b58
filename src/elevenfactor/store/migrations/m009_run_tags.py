"""m009_run_tags: free tags on runs (``runs.tags``, a JSON list), chosen at submission and
recorded in the run's ledger entry; every model call the run makes carries them, so cost
reports can group a run's spend by its tags."""

STATEMENTS = ("ALTER TABLE runs ADD COLUMN tags TEXT",)
