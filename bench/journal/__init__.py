"""``python -m bench.journal``: the cost of one journaled step, against the bare commit and DBOS."""
