"""``python -m bench.context``: token counting (the calibrated estimate's error on real text
against real tokenizers) and context assembly latency (a 200-turn session against a bare floor)."""
