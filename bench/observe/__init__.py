"""``python -m bench.observe``: what tracing, metrics and logs add to a gateway call."""
