"""``python -m bench.embeddings``: the local all-MiniLM-L6-v2 embedder's throughput on short
sentences and ~200-token passages with each runtime (numpy, onnxruntime float32 and int8) side by
side, beside its floor (the tokenizer alone), the machine's per-core ceilings, each runtime's
accuracy and, when a throwaway venv with it exists, sentence-transformers on CPU torch.
``python -m bench.embeddings.ingest``: ``elevenfactor index build`` with each runtime."""
