"""``python -m bench.embeddings``: the local all-MiniLM-L6-v2 embedder's throughput on short
sentences and ~200-token passages, beside its floor (the tokenizer alone) and, when a throwaway
venv with it exists, sentence-transformers on CPU torch."""
