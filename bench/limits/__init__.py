"""``python -m bench.limits``: the cost of auth, budget and rate-limit checks per gateway
request, and budget overshoot under contention (issue 8). See README.md."""
