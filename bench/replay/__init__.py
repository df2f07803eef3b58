"""``python -m bench.replay``: deterministic replay speed and what-if replay wall time."""
