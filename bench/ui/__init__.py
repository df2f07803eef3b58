"""Dashboard benchmark: page render times with 100k runs and ~1M journal events (see README.md)."""
